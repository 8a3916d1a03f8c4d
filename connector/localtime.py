"""Naive local times (a `timestamp without time zone` column) and daylight saving time.

Twice a year the wall clock of a zone with daylight saving time is not a clock: in spring an
hour is skipped (02:30 never happens), in autumn an hour is repeated (02:30 happens twice,
first in summer time, then in standard time). Two rules follow, both pure:

- What instant a naive value stands for (`to_utc`): where the local time is ambiguous or
  missing, the smaller of the two UTC offsets is used — standard time —, which is what
  PostgreSQL does when it reads such a value as a `timestamptz`. So a repeated 02:30 is the
  second one, and a missing 02:30 is read as 03:30 summer time.
- How far a read must reach back (`repeated_time`): after the clocks go back, new rows carry
  wall times up to an hour *below* rows written before the change. A watermark kept in wall
  time must therefore step back by the repeated time of every fall-back it may have crossed,
  or those rows are never read.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

_DAY = timedelta(days=1)
_HOUR = timedelta(hours=1)


def _offsets(naive: datetime, zone: tzinfo) -> tuple[timedelta, timedelta]:
    first = naive.replace(tzinfo=zone, fold=0).utcoffset() or timedelta(0)
    second = naive.replace(tzinfo=zone, fold=1).utcoffset() or timedelta(0)
    return first, second


def to_utc(naive: datetime, zone: tzinfo) -> datetime:
    """The UTC instant of a naive wall time in `zone`; the smaller offset where two apply."""
    first, second = _offsets(naive, zone)
    return (naive - min(first, second)).replace(tzinfo=UTC)


def earliest_utc(naive: datetime, zone: tzinfo) -> datetime:
    """The earliest instant a naive wall time may stand for (the larger offset)."""
    first, second = _offsets(naive, zone)
    return (naive - max(first, second)).replace(tzinfo=UTC)


def is_ambiguous(naive: datetime, zone: tzinfo) -> bool:
    """Whether this wall time happened twice, or never, in `zone`."""
    first, second = _offsets(naive, zone)
    return first != second


def _offset_at(moment: datetime, zone: tzinfo) -> timedelta:
    return moment.astimezone(zone).utcoffset() or timedelta(0)


def repeated_time(zone: tzinfo, start: datetime, end: datetime) -> timedelta:
    """The wall time repeated by fall-back changes between two instants (aware datetimes).

    Zero for a zone without daylight saving time, or when no change lies in between. The
    search steps a day at a time: no zone changes its offset twice in one day, so comparing
    the offsets at both ends of each step finds every change.
    """
    if end <= start:
        return timedelta(0)
    total = timedelta(0)
    here, offset = start, _offset_at(start, zone)
    while here < end:
        step_end = min(here + _DAY, end)
        next_offset = _offset_at(step_end, zone)
        if next_offset < offset:
            total += offset - next_offset
        here, offset = step_end, next_offset
    return total


def read_floor(watermark: datetime, lookback: timedelta, zone: tzinfo, now: datetime
               ) -> datetime:
    """Where a read of naive wall times starts: the watermark less the lookback, and less
    the time repeated by any fall-back between that point and now, so that rows written
    after the clocks went back (with lower wall times) are still read."""
    floor = watermark - lookback
    # From an hour before the earliest instant the floor may denote: a change at its very
    # edge still counts.
    since = earliest_utc(floor, zone) - _HOUR
    return floor - repeated_time(zone, since, now)
