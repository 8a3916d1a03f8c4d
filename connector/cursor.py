"""Cursor rules in one place: kinds of cursor, positions, stepping back, order, lookback.

A stream's rows are read in `(cursor, id)` order. A time cursor steps back by a duration,
an integer cursor by a count of values; `resolve_lookback` says which one a stream has, and
is the only place that checks it (a pass and `connector check` both ask it).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from connector.errors import SourceError
from connector.values import Position, to_utc

# "none": `cursor: none`, the stream has no cursor column (its id stands in for the order).
CursorKind = Literal["timestamp", "timestamptz", "date", "integer", "number", "none"]
TIME_KINDS: frozenset[str] = frozenset({"timestamp", "timestamptz", "date"})
COUNT_KINDS: frozenset[str] = frozenset({"integer", "number"})

Lookback = timedelta | int

__all__ = ["COUNT_KINDS", "TIME_KINDS", "CursorKind", "Lookback", "Position", "after",
           "comparable", "cursor_json", "cursor_value", "default_lookback", "lookback_fits",
           "range_key", "resolve_lookback", "step_back"]


def default_lookback(kind: CursorKind) -> Lookback:
    return 1000 if kind in COUNT_KINDS else timedelta(minutes=10)


def lookback_fits(kind: CursorKind, lookback: Lookback) -> bool:
    """A time cursor takes a duration; an integer cursor a count of values."""
    return isinstance(lookback, timedelta) == (kind not in COUNT_KINDS)


def resolve_lookback(place: str, cursor: str, kind: CursorKind,
                     lookback: Lookback | None) -> Lookback:
    """The stream's lookback (or the default for its kind of cursor); a lookback that does
    not fit the cursor is a `SourceError` naming the place and the fix."""
    value = lookback if lookback is not None else default_lookback(kind)
    if not lookback_fits(kind, value):
        raise SourceError(
            f"{place}.lookback: the cursor {cursor!r} is {kind}; give "
            + ("a number of values (lookback: 1000)" if isinstance(value, timedelta)
               else "a duration (lookback: 10m)"))
    return value


def step_back(cursor: Any, lookback: Lookback) -> Any:
    """The cursor `lookback` before `cursor`: a duration for times, a count for integers."""
    if isinstance(cursor, datetime | date):
        if isinstance(lookback, int):
            lookback = timedelta(seconds=lookback)
        if isinstance(cursor, datetime):
            return cursor - lookback
        return cursor - timedelta(days=-(-lookback // timedelta(days=1)))
    if isinstance(cursor, int | Decimal | float) and not isinstance(cursor, bool):
        rows = lookback if isinstance(lookback, int) else 0
        return cursor - rows
    return cursor


def comparable(kind: CursorKind, value: Any) -> Any:
    """A cursor value as the keyset compares it (integers from Decimal, dates as dates)."""
    if kind == "integer" and isinstance(value, Decimal):
        return int(value)
    if kind == "date" and isinstance(value, datetime):
        return value.date()
    return value


def after(position: Position, other: Position) -> bool:
    """Whether `position` is past `other` in `(cursor, id)` order (ids only break ties)."""
    if position.cursor != other.cursor:
        return bool(_ordered(position.cursor) > _ordered(other.cursor))
    if position.id is None or other.id is None:
        return position.id is not None
    try:
        return bool(position.id > other.id)
    except TypeError:
        return str(position.id) > str(other.id)


def _ordered(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return to_utc(value, value.tzinfo)
    return value


def cursor_json(cursor: Any) -> str | None:
    """A cursor value as the state file keeps it (None when it cannot be kept)."""
    if cursor is None:
        return None
    try:
        return Position(cursor).to_json()
    except TypeError:
        return None


def cursor_value(text: str | None) -> Any:
    return Position.from_json(text).cursor if text else None


def range_key(since: Any, until: Any, resend: bool) -> str:
    """How a backfill's range is known in the state file, to resume it."""
    return f"{_text(since)}..{_text(until)}" + (" resend" if resend else "")


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)
