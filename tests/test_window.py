"""The read window of a live pass, and the cursor rules under it (connector.window,
connector.cursor): pure functions, no server."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from connector.cursor import after, resolve_lookback, step_back
from connector.errors import SourceError
from connector.values import Position
from connector.window import Checkpoint, Window, live_window

STOCKHOLM = ZoneInfo("Europe/Stockholm")
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def test_no_watermark_reads_from_the_start_up_to_the_pass_start() -> None:
    window = live_window("timestamptz", None, 10 * MINUTE, now=NOW, oldest=None, zone=UTC)
    assert window == Window(None, NOW)


def test_the_read_starts_one_lookback_before_the_watermark() -> None:
    high = Position(NOW - 60 * MINUTE, 7)
    window = live_window("timestamptz", high, 10 * MINUTE, now=NOW, oldest=None, zone=UTC)
    assert window == Window(NOW - 70 * MINUTE, NOW)


def test_a_naive_cursor_is_capped_at_the_pass_start_in_local_time() -> None:
    high = Position(datetime(2026, 11, 27, 12, 0), 1)  # naive, Stockholm time (UTC+1)
    window = live_window("timestamp", high, 10 * MINUTE, now=NOW, oldest=None,
                         zone=STOCKHOLM)
    assert window.cap == datetime(2026, 11, 27, 13, 0)
    assert window.cap.tzinfo is None
    assert window.floor == datetime(2026, 11, 27, 11, 50)


def test_a_date_cursor_is_capped_at_today_and_steps_back_whole_days() -> None:
    high = Position(date(2026, 11, 20), 1)
    window = live_window("date", high, 90 * MINUTE, now=NOW, oldest=None, zone=UTC)
    assert window == Window(date(2026, 11, 19), date(2026, 11, 27))


def test_an_open_transaction_caps_the_watermark_at_its_start() -> None:
    oldest = NOW - 5 * MINUTE
    high = Position(NOW - 60 * MINUTE, 7)
    window = live_window("timestamptz", high, 10 * MINUTE, now=NOW, oldest=oldest, zone=UTC)
    assert window == Window(NOW - 70 * MINUTE, oldest)


def test_a_transaction_older_than_the_lookback_pulls_the_read_back() -> None:
    oldest = NOW - 3 * 60 * MINUTE
    high = Position(NOW - 60 * MINUTE, 7)
    window = live_window("timestamptz", high, 10 * MINUTE, now=NOW, oldest=oldest, zone=UTC)
    assert window == Window(oldest, oldest, held_back_by=oldest)


def test_an_integer_cursor_without_open_transactions_may_move_to_the_highest_visible() -> None:
    window = live_window("integer", Position(500, 500), 100, now=NOW, oldest=None, zone=UTC,
                         visible=900, checkpoints=[Checkpoint(NOW.timestamp() - 60, 400)])
    assert window == Window(400, 900)


def test_an_integer_cursor_is_capped_at_the_last_value_seen_before_the_open_transaction(
        ) -> None:
    oldest = NOW - 10 * MINUTE
    points = [Checkpoint((NOW - 30 * MINUTE).timestamp(), 300),
              Checkpoint((NOW - 20 * MINUTE).timestamp(), 450),
              Checkpoint((NOW - 5 * MINUTE).timestamp(), 800),
              Checkpoint(NOW.timestamp(), 900)]
    window = live_window("integer", Position(440, 440), 10, now=NOW, oldest=oldest, zone=UTC,
                         visible=900, checkpoints=points)
    assert window == Window(430, 450)


def test_an_integer_cap_below_the_floor_pulls_the_read_back() -> None:
    oldest = NOW - 10 * MINUTE
    points = [Checkpoint((NOW - 30 * MINUTE).timestamp(), 300),
              Checkpoint(NOW.timestamp(), 900)]
    window = live_window("integer", Position(800, 800), 10, now=NOW, oldest=oldest, zone=UTC,
                         visible=900, checkpoints=points)
    assert window == Window(300, 300, held_back_by=oldest)


def test_an_integer_cursor_with_no_checkpoint_before_the_transaction_stays_put() -> None:
    oldest = NOW - 10 * MINUTE
    points = [Checkpoint(NOW.timestamp(), 900)]
    stays = live_window("integer", Position(800, 800), 10, now=NOW, oldest=oldest, zone=UTC,
                        visible=900, checkpoints=points)
    assert stays == Window(790, 800)
    first = live_window("integer", None, 10, now=NOW, oldest=oldest, zone=UTC, visible=900,
                        checkpoints=points)
    assert first == Window(None, None)


# ---------------------------------------------------------------------------
# cursor rules


def test_step_back_by_duration_count_and_whole_days() -> None:
    assert step_back(NOW, 10 * MINUTE) == NOW - 10 * MINUTE
    assert step_back(1000, 250) == 750
    assert step_back(date(2026, 3, 10), timedelta(hours=1)) == date(2026, 3, 9)
    assert step_back(date(2026, 3, 10), timedelta(days=2)) == date(2026, 3, 8)
    assert step_back("text", 5) == "text"


def test_positions_order_by_cursor_then_id() -> None:
    assert after(Position(2, 1), Position(1, 9))
    assert not after(Position(1, 9), Position(2, 1))
    assert after(Position(1, 5), Position(1, 4))
    assert not after(Position(1, 4), Position(1, 4))
    assert after(Position(1, 4), Position(1, None))  # a bare cursor is before its rows
    assert not after(Position(1, None), Position(1, 4))
    # Aware times in different zones compare as instants.
    stockholm_noon = datetime(2026, 11, 27, 12, 0, tzinfo=STOCKHOLM)  # 11:00 UTC
    assert after(Position(NOW, 1), Position(stockholm_noon, 1))


def test_resolve_lookback_gives_the_default_or_names_the_place_and_the_fix() -> None:
    assert resolve_lookback("contacts.c", "updated_at", "timestamptz", None) == 10 * MINUTE
    assert resolve_lookback("contacts.c", "seq", "integer", None) == 1000
    assert resolve_lookback("contacts.c", "seq", "integer", 5) == 5
    with pytest.raises(SourceError) as caught:
        resolve_lookback("events.orders", "seq", "integer", 10 * MINUTE)
    assert str(caught.value) == ("events.orders.lookback: the cursor 'seq' is integer; give a "
                                 "number of values (lookback: 1000)")
    with pytest.raises(SourceError) as caught:
        resolve_lookback("contacts.c", "updated_at", "timestamp", 100)
    assert str(caught.value).endswith("give a duration (lookback: 10m)")
