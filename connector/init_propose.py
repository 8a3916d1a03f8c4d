"""Pure: a described database -> the streams `connector init` proposes, each with its reasons.

A contact table has a one-column primary key and a phone number column (by name, or because
most sampled values are valid numbers). The best one is proposed; other such tables are kept
as alternatives. An event table points at the contact table's key (a foreign key, or a
column named like it) and has a time column for `at`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from connector import init_names as names
from connector.init_scan import Column, Schema, Table

PHONE_SHARE = 0.8  # share of sampled values that must be valid numbers, by value alone


@dataclass(frozen=True)
class Phone:
    column: str
    region: str | None
    why: str
    others: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cursor:
    column: str | None  # None: `cursor: none`
    why: str
    index: str | None = None  # the index that serves it, when there is one


@dataclass(frozen=True)
class Mapped:
    field: str
    section: str  # personal | general
    column: str
    why: str


@dataclass(frozen=True)
class OptOut:
    """An opt-out on the contact's own row: a flag or a time column."""

    column: str
    condition: str  # equals-true | equals-false | not-null
    at: str | None
    why: str


@dataclass(frozen=True)
class Contacts:
    stream: str
    table: Table
    id: str
    phone: Phone
    cursor: Cursor
    fields: tuple[Mapped, ...]
    opt_outs: tuple[OptOut, ...] = ()


@dataclass(frozen=True)
class Events:
    stream: str
    table: Table
    id: str
    contact: str
    link: str  # why `contact` points at the contact table
    cursor: Cursor
    at: str
    name: str  # Conversion | OptOut
    for_stream: str
    at_nullable: bool = False


@dataclass(frozen=True)
class Proposal:
    dialect: str
    contacts: tuple[Contacts, ...]  # the first is proposed, the others are alternatives
    events: tuple[Events, ...]
    skipped: tuple[tuple[str, str], ...] = field(default=())  # (table, why not)


def propose(schema: Schema, region: str | None = None) -> Proposal:
    found = {table.name: contact_stream(table, region) for table in schema.tables}
    candidates = {name for name, item in found.items() if not isinstance(item, str)}
    # A table that points at another contact table and has an event time is an event table,
    # even with a phone column (an order's delivery phone).
    contacts = [item for item in found.values() if not isinstance(item, str)
                and not _is_event_table(item.table, candidates)]
    contact_tables = {item.table.name for item in contacts}
    events = {item.table.name: event_streams(item, schema, contact_tables) for item in contacts}
    contacts.sort(key=lambda item: (-len(events[item.table.name]), -_phone_rank(item),
                                    -len(item.fields), item.stream))
    taken: set[str] = set()
    contacts = [replace(item, stream=_unique(item.stream, taken)) for item in contacts]
    streams = [replace(event, stream=_unique(event.stream, taken), for_stream=item.stream)
               for item in contacts for event in events[item.table.name]]
    linked = {event.table.name for event in streams}
    skipped = tuple((table.name, _skip_reason(found[table.name])) for table in schema.tables
                    if table.name not in contact_tables | linked)
    return Proposal(dialect=schema.dialect, contacts=tuple(contacts), events=tuple(streams),
                    skipped=skipped)


def _skip_reason(found: Contacts | str) -> str:
    head = found if isinstance(found, str) else "a phone column, but it points at a contact " \
                                                 "table and has a time: an event table"
    return f"{head}; no column pointing at a contact table with a time column for at"


def _is_event_table(table: Table, contact_tables: set[str]) -> bool:
    return event_time(table) is not None and any(
        key.table in contact_tables and key.table != table.name for key in table.foreign_keys)


def _phone_rank(item: Contacts) -> int:
    return names.phone_name_score(item.phone.column)


def _unique(name: str, taken: set[str]) -> str:
    """Stream names are unique across contacts and events: a repeat gets a number."""
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}_{number}", number + 1
    taken.add(candidate)
    return candidate


def stream_name(table: str) -> str:
    """A stream name from a table name: `Contacts` -> `contacts`, `Order Lines` -> `order_lines`."""
    text = "_".join(names.words(table)) or "stream"
    return text if re.fullmatch(r"[a-z0-9_][a-z0-9_.-]*", text) else "stream"


# -- contact streams -----------------------------------------------------------------------


def contact_stream(table: Table, region: str | None) -> Contacts | str:
    """The table as a contact stream, or why it is not one."""
    phone = find_phone(table, region)
    if phone is None:
        return "no phone number column (by name or by its values)"
    if len(table.primary_key) != 1:
        return ("a phone column but no primary key" if not table.primary_key
                else "a phone column but a primary key of several columns")
    fields = _fields(table)
    return Contacts(stream=stream_name(table.name), table=table, id=table.primary_key[0],
                    phone=phone, cursor=change_cursor(table), fields=fields,
                    opt_outs=_opt_outs(table))


def find_phone(table: Table, region: str | None) -> Phone | None:
    """The best phone column: by name and by the share of sampled values that are numbers."""
    scored = []
    for column in table.columns:
        by_name = names.phone_name_score(column.name)
        if column.kind != "text" and not (by_name and column.kind == "integer"):
            continue
        if not by_name and names.joined(column.name).startswith("fax"):
            continue
        zone = region or names.sample_region(column.samples)
        good = names.valid_phones(column.samples, zone)
        if by_name and _phone_like(column, good):
            scored.append((by_name + good / max(1, len(column.samples)), column, zone, good))
        elif len(column.samples) >= 3 and good >= PHONE_SHARE * len(column.samples):
            scored.append((good / len(column.samples), column, zone, good))
    if not scored:
        return None
    scored.sort(key=lambda item: -item[0])
    _score, best, zone, good = scored[0]
    return Phone(column=best.name, region=zone, why=_phone_why(best, zone, good, region),
                 others=tuple(item[1].name for item in scored[1:]))


def _phone_like(column: Column, good: int) -> bool:
    """A column named like a phone holds numbers: valid ones, or at least phone-shaped ones
    (local numbers cannot be validated without a region). An empty table: by name alone."""
    if not column.samples:
        return True
    shaped = sum(1 for value in column.samples if names.phone_shaped(value))
    return max(good, shaped) >= 0.5 * len(column.samples)


def _phone_why(column: Column, zone: str | None, good: int, given: str | None) -> str:
    parts = ["by name"] if names.phone_name_score(column.name) else ["by its values"]
    if column.samples:
        parts.append(f"{good} of {len(column.samples)} sampled values are valid numbers")
    else:
        parts.append("no value to sample")
    if given:
        parts.append(f"region {given} from --region")
    elif zone:
        parts.append(f"region {zone}: the most common country code in the sample")
    else:
        parts.append("no region: no country holds most of the sample's numbers; set region "
                     "(e.g. SE) if some numbers lack a country code")
    return "; ".join(parts)


def _fields(table: Table) -> tuple[Mapped, ...]:
    mapped = []
    for wiraya_field, (section, known) in names.CONTACT_FIELDS.items():
        for column in table.columns:
            if names.joined(column.name) not in known:
                continue
            if wiraya_field in names.TIME_FIELDS and not names.is_time(column):
                continue
            held = " holding ISO 8601 times" if column.kind == "text" \
                and wiraya_field in names.TIME_FIELDS else ""
            mapped.append(Mapped(wiraya_field, section, column.name,
                                 f"by name ({column.type_name.lower()}{held})"))
            break
    return tuple(mapped)


def change_cursor(table: Table) -> Cursor:
    """A column that changes whenever the row does, else `none` (compare the whole table)."""
    changes = [column for column in table.columns if names.is_change_column(column.name)]
    usable = [column for column in changes if column.kind in names.CURSOR_KINDS]
    if usable:
        column = sorted(usable, key=lambda item: item.kind == "integer")[0]
        return Cursor(column.name, f"{column.kind}, named like a change time",
                      table.index_on(column.name))
    if changes:
        return Cursor(None, f"{changes[0].name} is {changes[0].type_name.lower()}, which "
                            "cannot be a cursor yet")
    return Cursor(None, "no column that changes with the row (updated_at, modified, ...)")


def _opt_outs(table: Table) -> tuple[OptOut, ...]:
    times = [column for column in table.columns
             if names.is_opt_out(column.name) and names.is_time(column)]
    if times:
        column = times[0]
        return (OptOut(column.name, "not-null", column.name,
                       f"{column.name} is a time named like an opt-out: set means opted out"),)
    for column in table.columns:
        if column.kind == "boolean" and names.is_opt_out(column.name):
            return (OptOut(column.name, "equals-true", None,
                           f"{column.name} is a flag named like an opt-out"),)
        if column.kind == "boolean" and names.is_consent(column.name):
            return (OptOut(column.name, "equals-false", None,
                           f"{column.name} is a consent flag: false means no consent"),)
    return ()


# -- event streams -------------------------------------------------------------------------


def event_streams(contacts: Contacts, schema: Schema,
                  contact_tables: set[str]) -> list[Events]:
    found = []
    for table in schema.tables:
        if table.name in contact_tables:
            continue
        link = contact_link(table, contacts)
        at = event_time(table)
        if link is None or at is None or len(table.primary_key) != 1:
            continue
        opt_out = names.is_opt_out(table.name)
        found.append(Events(
            stream=stream_name(table.name), table=table, id=table.primary_key[0],
            contact=link[0], link=link[1], cursor=event_cursor(table, at), at=at.name,
            name="OptOut" if opt_out else "Conversion", for_stream=contacts.stream,
            at_nullable=at.nullable))
    return found


def contact_link(table: Table, contacts: Contacts) -> tuple[str, str] | None:
    """The column of `table` that holds the contact's id, and why it is taken to."""
    target = contacts.table
    for foreign in table.foreign_keys:
        if foreign.table == target.name and foreign.schema is None \
                and foreign.referred == (contacts.id,) and len(foreign.columns) == 1:
            return foreign.columns[0], f"a foreign key to {target.name}.{contacts.id}"
    key = names.joined(contacts.id)
    wanted = {names.singular(target.name) + "id"} | ({key} if key != "id" else set())
    for column in table.columns:
        if names.joined(column.name) in wanted and column.name not in table.primary_key:
            return column.name, f"named like {target.name}.{contacts.id} (no foreign key)"
    return None


def event_time(table: Table) -> Column | None:
    """The column that tells when the event happened: an order/close/invoice time first."""
    times = [column for column in table.columns
             if names.is_time(column) and names.event_time_rank(column.name) > 0]
    if not times:
        return None
    return sorted(times, key=lambda column: -names.event_time_rank(column.name))[0]


def event_cursor(table: Table, at: Column) -> Cursor:
    """Event rows are history: a change column, else a growing integer id, else the time."""
    change = change_cursor(table)
    if change.column is not None:
        return change
    key = table.column(table.primary_key[0])
    if key.kind == "integer":
        return Cursor(key.name, "an integer primary key: each new row is read once",
                      "the primary key")
    if at.kind in names.CURSOR_KINDS:
        return Cursor(at.name, f"{at.kind}, when the event happened", table.index_on(at.name))
    return Cursor(None, "no change column, no integer key and no typed time column")
