"""Values that cross module lines: a read position, and the text forms of times.

Cursor and id values keep their full precision and type (microseconds, time zone, big
integers, decimals) on their way into the state file and back.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from typing import Any, Literal

from connector import localtime

# A digest of a row's values: bytes when the connector computes it, an integer when the
# database does (`Source._digest`); either is only ever compared for equality.
Digest = bytes | int

# The words that cross module lines and reach the state file; nothing else is valid.
PassKind = Literal["live", "backfill", "retry", "release", "reconcile"]
Outcome = Literal["running", "ok", "failed", "stopped"]
HeldState = Literal["dead", "waiting"]


@dataclass
class Counts:
    """What one pass did, row by row; the state file keeps a run's counts whole."""

    read: int = 0
    sent: int = 0
    skipped: int = 0
    linked: int = 0
    events: int = 0
    released: int = 0
    waiting: int = 0
    dead: int = 0
    repeated: int = 0
    resolved: int = 0
    deleted: int = 0  # contacts whose rows disappeared (noticed by a complete read)

    def __getitem__(self, name: str) -> int:
        """`counts["sent"]`: for callers that pick counts by name (tables, metrics)."""
        if name not in _COUNT_NAMES:
            raise KeyError(name)
        value: int = getattr(self, name)
        return value

    def add(self, other: Counts) -> None:
        for name in _COUNT_NAMES:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Counts:
        """Counts stored by this or an older connector (unknown names are ignored)."""
        return cls(**{name: int(data.get(name, 0)) for name in _COUNT_NAMES})


_COUNT_NAMES = tuple(item.name for item in fields(Counts))


@dataclass(frozen=True)
class Position:
    """A point in a stream's `(cursor, id)` order. `id` is None for a cursor-only floor."""

    cursor: Any
    id: Any = None

    def to_json(self) -> str:
        return json.dumps({"cursor": encode(self.cursor), "id": encode(self.id)})

    @classmethod
    def from_json(cls, text: str) -> Position:
        data = json.loads(text)
        return cls(decode(data["cursor"]), decode(data["id"]))


def encode(value: Any) -> list[Any] | None:
    """A typed JSON form of a cursor or id value, exact to the last digit."""
    if value is None:
        return None
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", str(value)]
    if isinstance(value, datetime):
        return ["datetime", value.isoformat()]
    if isinstance(value, date):
        return ["date", value.isoformat()]
    if isinstance(value, Decimal):
        return ["decimal", str(value)]
    if isinstance(value, float):
        return ["float", repr(value)]
    if isinstance(value, uuid.UUID):
        return ["uuid", str(value)]
    if isinstance(value, str):
        return ["str", value]
    raise TypeError(f"cannot keep a {type(value).__name__} as a position")


_DECODERS: dict[str, Any] = {
    "bool": bool, "int": int, "datetime": datetime.fromisoformat, "date": date.fromisoformat,
    "decimal": Decimal, "float": float, "uuid": uuid.UUID, "str": str,
}


def decode(item: list[Any] | None) -> Any:
    if item is None:
        return None
    kind, text = item
    return _DECODERS[kind](text)


def to_utc(value: datetime, zone: tzinfo) -> datetime:
    """An aware UTC time; a naive value is read in `zone` (the configured time zone)."""
    if value.tzinfo is None:
        return localtime.to_utc(value, zone)
    return value.astimezone(UTC)


def iso_z(value: datetime, zone: tzinfo) -> str:
    """`2026-11-26T18:04:05Z`, or with microseconds when the value has them."""
    utc = to_utc(value, zone)
    # Not strftime: it does not pad years before 1000 to four digits.
    text = (f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
            f"T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def now_utc() -> datetime:
    return datetime.now(UTC)


def short(value: Any, limit: int = 80) -> str:
    """A value as it may appear in a message: one line, bounded."""
    text = str(value).replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[: limit - 1] + "…"
