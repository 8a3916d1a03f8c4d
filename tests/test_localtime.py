"""Naive wall times around daylight saving changes (pure; no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from connector.localtime import is_ambiguous, read_floor, repeated_time, to_utc

STOCKHOLM = ZoneInfo("Europe/Stockholm")
NEW_YORK = ZoneInfo("America/New_York")
SYDNEY = ZoneInfo("Australia/Sydney")


@pytest.mark.parametrize(("zone", "wall", "utc"), [
    # Autumn 2026 in Stockholm: 03:00 CEST -> 02:00 CET on 25 October; 02:30 happens twice.
    (STOCKHOLM, datetime(2026, 10, 25, 2, 30), datetime(2026, 10, 25, 1, 30, tzinfo=UTC)),
    (STOCKHOLM, datetime(2026, 10, 25, 1, 59), datetime(2026, 10, 24, 23, 59, tzinfo=UTC)),
    (STOCKHOLM, datetime(2026, 10, 25, 3, 0), datetime(2026, 10, 25, 2, 0, tzinfo=UTC)),
    # Spring 2026: 02:00 CET -> 03:00 CEST on 29 March; 02:30 never happens.
    (STOCKHOLM, datetime(2026, 3, 29, 2, 30), datetime(2026, 3, 29, 1, 30, tzinfo=UTC)),
    # PostgreSQL's own examples (its docs, "Handling of Invalid or Ambiguous Timestamps").
    (NEW_YORK, datetime(2018, 11, 4, 1, 30), datetime(2018, 11, 4, 6, 30, tzinfo=UTC)),
    (NEW_YORK, datetime(2018, 3, 11, 2, 30), datetime(2018, 3, 11, 7, 30, tzinfo=UTC)),
    # The southern hemisphere: Sydney goes back on 5 April 2026, 03:00 AEDT -> 02:00 AEST.
    (SYDNEY, datetime(2026, 4, 5, 2, 30), datetime(2026, 4, 4, 16, 30, tzinfo=UTC)),
])
def test_an_ambiguous_or_missing_wall_time_is_read_as_postgresql_reads_it(zone, wall, utc):
    assert to_utc(wall, zone) == utc


def test_ambiguous_and_missing_times_are_told_apart_from_plain_ones():
    assert is_ambiguous(datetime(2026, 10, 25, 2, 30), STOCKHOLM)
    assert is_ambiguous(datetime(2026, 3, 29, 2, 30), STOCKHOLM)
    assert not is_ambiguous(datetime(2026, 10, 25, 3, 30), STOCKHOLM)
    assert not is_ambiguous(datetime(2026, 10, 25, 2, 30), ZoneInfo("UTC"))


def test_repeated_time_counts_each_fall_back_once():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert repeated_time(STOCKHOLM, start, datetime(2026, 6, 1, tzinfo=UTC)) == timedelta(0)
    assert repeated_time(STOCKHOLM, start, datetime(2027, 1, 1, tzinfo=UTC)) == timedelta(hours=1)
    assert repeated_time(STOCKHOLM, start, datetime(2028, 1, 1, tzinfo=UTC)) == timedelta(hours=2)
    assert repeated_time(ZoneInfo("UTC"), start, datetime(2028, 1, 1, tzinfo=UTC)) == timedelta(0)
    # Lord Howe Island goes back by half an hour.
    lord_howe = ZoneInfo("Australia/Lord_Howe")
    assert repeated_time(lord_howe, start, datetime(2026, 12, 31, tzinfo=UTC)) \
        == timedelta(minutes=30)


def test_repeated_time_sees_a_change_minutes_away():
    change = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)  # 03:00 CEST -> 02:00 CET
    minute = timedelta(minutes=1)
    assert repeated_time(STOCKHOLM, change - minute, change + minute) == timedelta(hours=1)
    assert repeated_time(STOCKHOLM, change + minute, change + 2 * minute) == timedelta(0)


def test_the_read_floor_reaches_below_the_repeated_hour():
    """The case that lost 587 of 956 orders: the watermark at 02:59:59 summer time, then the
    clocks go back and rows arrive at 02:00-02:59 standard time."""
    watermark = datetime(2026, 10, 25, 2, 59, 59)
    lookback = timedelta(minutes=10)
    after_change = datetime(2026, 10, 25, 1, 20, tzinfo=UTC)  # 02:20 CET, the second time
    floor = read_floor(watermark, lookback, STOCKHOLM, after_change)
    assert floor == datetime(2026, 10, 25, 1, 49, 59)
    # Every wall time written since the change (02:00 CET on) is at or above the floor.
    assert floor <= datetime(2026, 10, 25, 2, 0)


def test_the_read_floor_is_plain_away_from_a_change():
    watermark = datetime(2026, 11, 20, 12, 0)
    now = datetime(2026, 11, 20, 11, 5, tzinfo=UTC)
    assert read_floor(watermark, timedelta(minutes=10), STOCKHOLM, now) \
        == datetime(2026, 11, 20, 11, 50)
    # A spring change repeats nothing: the floor is the plain one.
    spring = datetime(2026, 3, 29, 3, 5)
    assert read_floor(spring, timedelta(minutes=10), STOCKHOLM,
                      datetime(2026, 3, 29, 1, 10, tzinfo=UTC)) == datetime(2026, 3, 29, 2, 55)
