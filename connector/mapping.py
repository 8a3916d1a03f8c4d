"""Rows to Wiraya payloads: contacts, campaign links, and events.

A mapper is built once per stream from its config and the order of the columns it reads;
`map(row)` returns the payload, or a `Rejected` with a reason a person can act on (the row
then becomes a dead letter and the pass goes on). Mapping is a pure function of the row,
the config and the library versions, which is what lets an unchanged row skip it entirely
(see `input_digest`).
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from functools import partial
from typing import Any

from connector import config
from connector.phone import canonical_digits, library_version
from connector.values import iso_z

MAPPING_VERSION = "1"  # bump when a change here alters what a row maps to
MAX_TEXT = 10_000  # characters in one value unless a field sets max_length
MAX_KEY = 255  # characters in a contact or row id
_WIDEST_KEY = 10 ** (MAX_KEY - 1)
_EARLIEST_BIRTH = date(1900, 1, 1)


class Rejected(Exception):
    """A row that cannot become a payload, and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Link:
    contact_id: str
    campaign: str
    iteration: str | None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.contact_id, self.campaign, self.iteration or "")

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"campaign": self.campaign}
        if self.iteration is not None:
            body["iteration"] = self.iteration
        return body


@dataclass(frozen=True)
class Flag:
    """The state of a column-defined event (an opt-out flag) for one contact."""

    event: str
    active: bool
    at: str | None  # when it became true, UTC ISO 8601


@dataclass(frozen=True)
class MappedContact:
    contact_id: str
    payload: dict[str, Any]
    links: tuple[Link, ...]
    flags: tuple[Flag, ...]


@dataclass(frozen=True)
class MappedEvent:
    row_key: str
    contact_id: str
    body: dict[str, Any]

    @property
    def identity(self) -> bytes:
        """What this event is, whatever its row's id: its contact and when it happened. A
        row that reuses a sent row's id with another contact or time is another event."""
        return event_identity(self.contact_id, str(self.body.get("at", "")))


def event_identity(contact_id: str, at: str) -> bytes:
    return hashlib.blake2b(f"{contact_id}\x1f{at}".encode(errors="surrogatepass"),
                           digest_size=12).digest()


# ---------------------------------------------------------------------------
# Ids


def as_key(value: Any, what: str = "id") -> str:
    """A source id as the text Wiraya and the state file know it by."""
    if type(value) is int and -_WIDEST_KEY < value < _WIDEST_KEY:
        return str(value)  # the common case first: it is on every row's path
    if value is None:
        raise Rejected(f"{what} is NULL")
    if isinstance(value, bool):
        raise Rejected(f"{what} is a boolean ({value}); use a column that identifies the row")
    if isinstance(value, int | float | Decimal):
        return _numeric_key(value, what)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raise Rejected(f"{what} is binary data; use a text or integer column")
    if not isinstance(value, str):
        raise Rejected(f"{what} has an unsupported type ({type(value).__name__})")
    text = value.strip()
    if not text:
        raise Rejected(f"{what} is empty")
    if len(text) > MAX_KEY:
        raise Rejected(f"{what} is {len(text)} characters long; at most {MAX_KEY} are kept")
    if _has_bad_text(text):
        raise Rejected(f"{what} holds control characters or text that is not valid UTF-8")
    return text


def _numeric_key(value: int | float | Decimal, what: str) -> str:
    if not _finite(value):
        raise Rejected(f"{what} is not a finite number")
    try:
        whole = int(value)
        if value != whole:
            raise Rejected(f"{what} is not a whole number")
        text = str(whole)
    except (ArithmeticError, ValueError):  # beyond what Python turns into text
        raise Rejected(f"{what} is a number too large to be an id") from None
    if len(text) > MAX_KEY:
        raise Rejected(f"{what} is a number too large to be an id")
    return text


def _finite(value: int | float | Decimal) -> bool:
    if isinstance(value, Decimal):
        return value.is_finite()
    return isinstance(value, int) or math.isfinite(value)


# In ids every control character is refused (a tab or a newline in an id is a mistake); in
# text values only those that no text has a use for.
_KEY_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _has_bad_text(text: str) -> bool:
    if _KEY_CONTROL.search(text):
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# ---------------------------------------------------------------------------
# Values


def phone_digits(value: Any, region: str | None) -> str:
    """A phone number as international digits without `+` (E.164 without the plus)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise Rejected(f"is not a phone number (a {type(value).__name__})")
    text = value.strip()
    if text.startswith("00"):  # international prefix written as 00: same as +
        text = "+" + text[2:]
    digits = canonical_digits(text)  # the same answer, ~20x cheaper, for `+` and digits
    if digits is not None:
        return digits
    import phonenumbers  # here, not at the top: see phone.py

    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        where = f" for region {region}" if region else " (no region set: numbers must start " \
                                                        "with + and a country code, or set region:)"
        raise Rejected(f"is not a phone number{where}") from None
    if not phonenumbers.is_valid_number(number):
        raise Rejected("is not a valid phone number" + (f" in region {region}" if region else ""))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


def as_date(value: Any, zone: tzinfo, field: str) -> str:
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text) if len(text) > 10 else date.fromisoformat(text)
        except ValueError:
            raise Rejected("is not a date (YYYY-MM-DD)") from None
    if isinstance(value, datetime):
        try:
            # An aware time is the day it was in the configured zone; a naive one is as read.
            day = value.astimezone(zone).date() if value.tzinfo else value.date()
        except (OverflowError, ValueError):
            raise Rejected("is a date out of range") from None
    elif isinstance(value, date):
        day = value
    else:
        raise Rejected(f"is not a date ({type(value).__name__})")
    if field == "birthDate":
        today = datetime.now(UTC).date()
        if day > today:
            raise Rejected("is a birth date in the future")
        if day < _EARLIEST_BIRTH:
            raise Rejected(f"is a birth date before {_EARLIEST_BIRTH}")
    return day.isoformat()


def as_timestamp(value: Any, zone: tzinfo) -> str:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise Rejected("is not a timestamp (ISO 8601)") from None
    else:
        raise Rejected(f"is not a timestamp ({type(value).__name__})")
    try:
        return iso_z(moment, zone)
    except (OverflowError, ValueError):
        raise Rejected("is a timestamp out of range") from None


def as_text(value: Any, limit: int) -> str:
    if type(value) is str:
        text = value  # the common case: no other type to rule out
    elif isinstance(value, bytes | bytearray | memoryview):
        raise Rejected("is binary data")
    elif isinstance(value, float) and not math.isfinite(value):
        raise Rejected(f"is {value}")
    else:
        text = value if isinstance(value, str) else str(value)
    if not text.isascii():  # ASCII text is valid UTF-8: only other text needs the check
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise Rejected("holds text that is not valid UTF-8") from None
    if len(text) > limit:
        raise Rejected(f"is {len(text)} characters long; the limit is {limit} "
                       "(set max_length on the field to change it)")
    return text


def as_number(value: Any, integer: bool) -> int | float:
    if isinstance(value, bool):
        raise Rejected(f"is a boolean ({value}), not a number")
    if isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except ArithmeticError:
            raise Rejected("is not a number") from None
    if isinstance(value, int):
        return value
    if isinstance(value, float | Decimal):
        if not _finite(value):
            raise Rejected("is not a finite number (NaN or infinity)")
        if integer:
            if value != int(value):
                raise Rejected("is not a whole number")
            return int(value)
        if isinstance(value, Decimal) and value == value.to_integral_value():
            return int(value)
        return float(value)
    raise Rejected(f"is not a number ({type(value).__name__})")


def as_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in {"true", "false", "t", "f", "1", "0"}:
        return value.strip().lower() in {"true", "t", "1"}
    raise Rejected("is not a boolean")


def auto_value(value: Any, zone: tzinfo, limit: int) -> Any:
    """A value sent as what it is: text, number, boolean, date or timestamp."""
    if type(value) is str:
        return as_text(value, limit)  # the common case first: it is on every row's path
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal):
        return as_number(value, integer=False)
    if isinstance(value, datetime):
        return as_timestamp(value, zone)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict | list | tuple):
        raise Rejected("is a nested value (JSON or array); map a scalar column instead")
    return as_text(value, limit)


# ---------------------------------------------------------------------------
# Conditions and iterations


def _same(value: Any, wanted: Any) -> bool:
    if value is None or wanted is None:
        return value is None and wanted is None
    try:
        if value == wanted:
            return True
    except ArithmeticError:  # a signalling NaN compares with nothing
        return False
    if isinstance(wanted, bool) or isinstance(value, bool):
        try:
            return as_boolean(value) == as_boolean(wanted)
        except Rejected:
            return False
    return str(value) == str(wanted)


def holds(condition: config.Condition, value: Any) -> bool:
    if "equals" in condition.model_fields_set:
        return _same(value, condition.equals)
    if "not_equals" in condition.model_fields_set:
        return not _same(value, condition.not_equals)
    if condition.in_ is not None:
        return any(_same(value, wanted) for wanted in condition.in_)
    if condition.not_in is not None:
        return not any(_same(value, wanted) for wanted in condition.not_in)
    if condition.not_null is not None:
        return (value is not None) == condition.not_null
    if condition.is_null is not None:
        return (value is None) == condition.is_null
    return False


# ---------------------------------------------------------------------------
# Mappers

def _getter(names: Sequence[str], column: str) -> int:
    return list(names).index(column)


class ContactMapper:
    """Rows of one contact stream -> `MappedContact`."""

    def __init__(self, stream: config.ContactStream, names: Sequence[str], zone: tzinfo
                 ) -> None:
        self.stream = stream
        self.zone = zone
        self.id_index = _getter(names, stream.id)
        # `cursor: none`: no cursor column; a flag's time is then its `at`, else now.
        self.cursor_index = _getter(names, stream.cursor if stream.cursor in names else stream.id)
        self.fields = [
            (section, field, spec, _getter(names, spec.column),
             spec.required if spec.required is not None else field == "phoneNumber",
             self._converter(field, spec))
            for section, specs in (("personal", stream.personal), ("general", stream.general))
            for field, spec in specs.items()
        ]
        self.links = [(link, _getter(names, link.iteration.column)
                       if link.iteration and link.iteration.column else None,
                       _getter(names, link.when.column) if link.when else None)
                      for link in stream.links]
        self.events = [(event, _getter(names, event.when.column),
                        _getter(names, event.at) if event.at else None)
                       for event in stream.events]
        # What shapes the mapping besides the row: a change re-maps every row read.
        self.salt = f"{MAPPING_VERSION}|{library_version()}|{zone}|{stream.fingerprint()}"
        self._key = hashlib.blake2b(self.salt.encode(), digest_size=32).digest()
        # The database may digest the salt and the row's values itself (`Source`, on
        # PostgreSQL); then `input_digest` is not called at all.

    def key(self, row: Sequence[Any]) -> str:
        return as_key(row[self.id_index])

    def input_digest(self, row: Sequence[Any]) -> bytes:
        """Digest of the values read and of everything that shapes the mapping."""
        # repr, not pickle: pickle's output depends on object identity, repr only on values.
        data = repr(tuple(row)).encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, digest_size=16, key=self._key).digest()

    def map(self, row: Sequence[Any]) -> MappedContact:
        """The contact for a row; raises `Rejected` with the field and the reason."""
        contact_id = self.key(row)
        personal: dict[str, Any] = {}
        general: dict[str, Any] = {}
        for section, field, spec, index, required, convert in self.fields:
            value = row[index]
            if value is None or (isinstance(value, str) and not value.strip()):
                if required:
                    raise Rejected(f"{section}.{field}: column {spec.column} is empty")
                continue
            try:
                (personal if section == "personal" else general)[field] = convert(value)
            except Rejected as exc:
                raise Rejected(f"{section}.{field} (column {spec.column}) {exc.reason}") from None
        payload = {"schema": 1, "personal": personal, "general": general}
        return MappedContact(contact_id, payload, self._links(contact_id, row), self._flags(row))

    def _converter(self, field: str, spec: config.FieldMap) -> Callable[[Any], Any]:
        """The conversion of one field's values, chosen once (not on every row)."""
        kind = spec.kind if spec.kind != "auto" else config.STANDARD_KINDS.get(field, "auto")
        limit = spec.max_length or MAX_TEXT
        zone = self.zone
        if kind == "phone":
            return partial(phone_digits, region=spec.region)
        if kind == "date":
            return partial(as_date, zone=zone, field=field)
        if kind == "timestamp":
            return partial(as_timestamp, zone=zone)
        if kind == "string":
            return partial(as_text, limit=limit)
        if kind in {"integer", "number"}:
            return partial(as_number, integer=kind == "integer")
        if kind == "boolean":
            return as_boolean
        return partial(auto_value, zone=zone, limit=limit)

    def _links(self, contact_id: str, row: Sequence[Any]) -> tuple[Link, ...]:
        links = []
        for link, iteration_index, when_index in self.links:
            if link.when and when_index is not None and not holds(link.when, row[when_index]):
                continue
            iteration: str | None = None
            if link.iteration and link.iteration.value is not None:
                iteration = link.iteration.value
            elif link.iteration and iteration_index is not None:
                raw = row[iteration_index]
                if raw is None or (isinstance(raw, str) and not raw.strip()):
                    continue  # linked once the row has an iteration
                try:
                    iteration = self._iteration(link.iteration, raw)
                except Rejected as exc:
                    raise Rejected(f"campaign {link.campaign} iteration (column "
                                   f"{link.iteration.column}) {exc.reason}") from None
            links.append(Link(contact_id, link.campaign, iteration))
        return tuple(links)

    def _iteration(self, spec: config.Iteration, raw: Any) -> str:
        if not spec.format:
            return as_text(raw, MAX_KEY)
        moment: date
        try:
            if isinstance(raw, datetime):
                moment = raw.astimezone(self.zone) if raw.tzinfo else raw
            elif isinstance(raw, date):
                moment = raw
            else:
                moment = datetime.fromisoformat(str(raw).strip())
        except (ValueError, OverflowError):
            raise Rejected(f"is not a date for format {spec.format!r}") from None
        return moment.strftime(spec.format)

    def _flags(self, row: Sequence[Any]) -> tuple[Flag, ...]:
        flags = []
        for event, when_index, at_index in self.events:
            active = holds(event.when, row[when_index])
            at = None
            if active:
                # The time it happened: the `at` column, else a time cursor, else (an
                # integer cursor) the moment it is sent.
                explicit = at_index is not None
                raw = row[at_index if at_index is not None else self.cursor_index] \
                    if explicit or not self.stream.compares_whole else None
                if raw is not None and (explicit or isinstance(raw, date | str)):
                    try:
                        at = as_timestamp(raw, self.zone)
                    except Rejected as exc:
                        raise Rejected(f"event {event.name}: time (column "
                                       f"{event.at or self.stream.cursor}) {exc.reason}"
                                       ) from None
            flags.append(Flag(event.name, active, at))
        return tuple(flags)


class EventMapper:
    """Rows of one event stream -> `MappedEvent`."""

    def __init__(self, stream: config.EventStream, names: Sequence[str], zone: tzinfo) -> None:
        self.stream = stream
        self.zone = zone
        self.id_index = _getter(names, stream.id)
        self.contact_index = _getter(names, stream.contact)
        self.at_column = stream.at or stream.cursor
        self.at_index = _getter(names, self.at_column)
        self.extra = [(field, column, _getter(names, column))
                      for field, column in stream.fields.items()]

    def key(self, row: Sequence[Any]) -> str:
        return as_key(row[self.id_index])

    def map(self, row: Sequence[Any]) -> MappedEvent:
        key = self.key(row)
        contact_id = as_key(row[self.contact_index], f"contact id (column {self.stream.contact})")
        raw_at = row[self.at_index]
        if raw_at is None:
            raise Rejected(f"at: column {self.at_column} is empty")
        if not isinstance(raw_at, datetime | date | str):
            raise Rejected(f"at: column {self.at_column} is not a time "
                           f"({type(raw_at).__name__}); set at: to a timestamp column")
        try:
            at = as_timestamp(raw_at, self.zone)
        except Rejected as exc:
            raise Rejected(f"at: column {self.at_column} {exc.reason}") from None
        body: dict[str, Any] = {"at": at, "name": self.stream.name, "schema": 1}
        for field, column, index in self.extra:
            value = row[index]
            if value is None:
                continue
            try:
                body[field] = auto_value(value, self.zone, MAX_TEXT)
            except Rejected as exc:
                raise Rejected(f"{field} (column {column}) {exc.reason}") from None
        return MappedEvent(key, contact_id, body)


def event_body(name: str, at: str) -> dict[str, Any]:
    """The body of an event that a column change (not a row of its own) produced."""
    return {"at": at, "name": name, "schema": 1}
