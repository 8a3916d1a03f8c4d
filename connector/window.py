"""Where a live pass reads from, and how far its watermark may move. Pure: no I/O.

The read starts at the watermark less the lookback (the floor). The cap keeps the watermark
from passing a point after which rows may still appear: the pass's own start (a later
transaction may commit rows at earlier times) and, on PostgreSQL, the start of the oldest
open transaction (it may commit rows stamped with its start time, any time later). For an
integer cursor the same points are found among checkpoints of the highest visible value,
taken at known times, since a transaction takes its ids after it starts.

Time arithmetic for naive local-time cursors lives here, with the zone as a parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any, NamedTuple

from connector.cursor import TIME_KINDS, CursorKind, Lookback, comparable, step_back
from connector.localtime import read_floor
from connector.values import Position


class Checkpoint(NamedTuple):
    """The highest integer cursor visible at a moment (unix time)."""

    at: float
    cursor: Any


@dataclass(frozen=True)
class Window:
    """A live pass's read range: from `floor` on (None: from the start); the watermark may
    not pass `cap` (None: no cap). `held_back_by` is the start of an open transaction that
    pulled the floor down below the lookback."""

    floor: Any
    cap: Any
    held_back_by: datetime | None = None
    # The highest integer cursor now is below the watermark: the table was truncated or
    # recreated (ids start again), or its newest rows deleted. The pass reads from the start
    # and the watermark starts again; the ledger keeps events from being sent twice.
    restarted: bool = False


def live_window(kind: CursorKind, high: Position | None, lookback: Lookback, *,
                now: datetime, oldest: datetime | None, zone: tzinfo,
                visible: Any = None, checkpoints: Sequence[Checkpoint] = ()) -> Window:
    """The window of a live pass that starts at `now`, with the oldest open transaction
    begun at `oldest` (None: none seen) and, for an integer cursor, the highest value
    `visible` now and the `checkpoints` taken so far, oldest first."""
    if kind in TIME_KINDS:
        cap = time_cap(kind, now, oldest, zone)
    elif high is not None and (visible is None or visible < comparable(kind, high.cursor)):
        # Checkpoints from before are of the old ids: only those still possible count.
        points = [p for p in checkpoints if visible is not None and p.cursor <= visible]
        return Window(None, integer_cap(visible, oldest, points, None), restarted=True)
    else:
        cap = integer_cap(visible, oldest, checkpoints, high)
    floor = None if high is None else step_back(high.cursor, lookback)
    if kind == "timestamp" and high is not None and isinstance(lookback, timedelta):
        # Naive wall times go back in autumn: reach below the repeated hour.
        floor = read_floor(high.cursor, lookback, zone, now)
    if floor is not None and cap is not None and cap < floor:
        return Window(cap, cap, oldest)
    return Window(floor, cap)


def time_cap(kind: CursorKind, now: datetime, oldest: datetime | None, zone: tzinfo) -> Any:
    """The pass start or the oldest open transaction's start, whichever is earlier, in the
    form of the cursor column (naive local time in `zone`, aware, or a date)."""
    moment = min(now, oldest) if oldest is not None else now
    return comparable(kind, in_cursor_form(kind, moment, zone))


def integer_cap(visible: Any, oldest: datetime | None, checkpoints: Sequence[Checkpoint],
                high: Position | None) -> Any:
    """The highest value seen before the oldest open transaction began; with none open,
    the highest `visible` now. With no checkpoint old enough, the watermark stays where
    it is."""
    if oldest is None:
        return visible
    before = [point.cursor for point in checkpoints if point.at < oldest.timestamp()]
    if before:
        return before[-1]
    return high.cursor if high is not None else None


def in_cursor_form(kind: CursorKind, moment: datetime, zone: tzinfo) -> Any:
    """An aware moment as a cursor column of `kind` compares with it."""
    if kind == "timestamp" and moment.tzinfo is not None:
        return moment.astimezone(zone).replace(tzinfo=None)
    if kind == "timestamptz" and moment.tzinfo is None:
        return moment.replace(tzinfo=zone)
    if kind == "date":
        return moment.date()
    return moment
