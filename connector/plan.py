"""Pure decisions for one page: its rows and what the state file knows -> what to do.

Nothing here reads or writes anything. A page of contacts is planned in two steps
(`map_contacts`, then `plan_contacts` once the links and flags on record for the mapped
contacts are known), a page of events likewise (`map_events`, then `plan_events` once it is
known which contacts have arrived). Built on `diff.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from connector import diff
from connector.cursor import cursor_json
from connector.mapping import ContactMapper, EventMapper, MappedContact, MappedEvent, Rejected
from connector.source import Rows
from connector.state import Delivered, FlagState, Held, LinkKey
from connector.values import Counts, Digest, short

NO_ID = "(no id)"  # the start of the key of a held row that has no id


class Columns(NamedTuple):
    """Where a row's id and cursor are."""

    id: int
    cursor: int


def dead_letter(stream: str, key: str, reason: str, *, retriable: bool = False,
                digest: Digest | None = None, cursor: Any = None,
                contact_id: str | None = None, unanswered: int = 0) -> Held:
    return Held(stream, key, "dead", reason[:500], retriable, contact_id=contact_id,
                cursor=cursor_json(cursor), payload_digest=digest, unanswered=unanswered)


def bad_key(raw_id: Any, cursor: Any = None) -> str:
    """The key of a held row whose id is missing or unusable."""
    if raw_id is None:
        where = f" at cursor {cursor.isoformat() if hasattr(cursor, 'isoformat') else cursor}" \
            if cursor is not None else ""
        return f"{NO_ID}{where}"
    return f"(bad id) {short(repr(raw_id), 120)}"


def memory(known: Delivered | None, held: Held | None) -> diff.Memory | None:
    """What `diff` needs to know of a row: last delivered, last refused."""
    if known is None and held is None:
        return None
    return diff.Memory(
        input_digest=known.input_digest if known else None,
        delivered=known.payload_digest if known else None,
        refused=held.payload_digest if held and held.state == "dead" else None,
        refused_retriable=bool(held and held.retriable))


@dataclass
class Keyed:
    """A page's rows by key (the last of a repeated id wins) and the rows without one."""

    index: dict[str, int] = field(default_factory=dict)  # key -> position in the page
    held: list[Held] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)


def key_rows(stream: str, rows: Rows, key: Callable[[Sequence[Any]], str],
             columns: Columns) -> Keyed:
    keyed = Keyed()
    for number, row in enumerate(rows.rows):
        try:
            name = key(row)
        except Rejected as exc:
            keyed.held.append(dead_letter(stream, bad_key(row[columns.id]),
                                          f"id: {exc.reason}", cursor=row[columns.cursor]))
            keyed.counts.dead += 1
            continue
        if name in keyed.index:
            keyed.counts.repeated += 1
        keyed.index[name] = number
    return keyed


# ---------------------------------------------------------------------------
# Contacts


@dataclass
class MappedContacts:
    """Step one of a contact page: the rows that had to be mapped, mapped."""

    mapped: dict[str, MappedContact] = field(default_factory=dict)
    inputs: dict[str, Digest] = field(default_factory=dict)  # input digest of each mapped row
    memories: dict[str, diff.Memory | None] = field(default_factory=dict)
    held: list[Held] = field(default_factory=list)  # rows that could not be mapped
    on_record: set[str] = field(default_factory=set)  # keys of the page held before
    counts: Counts = field(default_factory=Counts)


def map_contacts(stream: str, rows: Rows, keyed: Keyed, mapper: ContactMapper,
                 columns: Columns, known: Mapping[str, Delivered], held: Mapping[str, Held],
                 force: bool) -> MappedContacts:
    """Map the rows whose values are not the ones last delivered (or last refused)."""
    out = MappedContacts(held=keyed.held, counts=keyed.counts,
                         on_record={key for key in keyed.index if key in held})
    digests = rows.digests
    for key, number in keyed.index.items():
        row = rows.rows[number]
        digest = digests[number] if digests is not None else mapper.input_digest(row)
        seen = known.get(key)
        # The common case of a re-read, unchanged row, decided without more ado.
        if seen is not None and seen.input_digest == digest and not force and key not in held:
            out.counts.skipped += 1
            continue
        remembered = out.memories[key] = memory(seen, held.get(key))
        if not diff.must_map(digest, remembered, force):
            out.counts.skipped += 1
            continue
        out.inputs[key] = digest
        try:
            out.mapped[key] = mapper.map(row)
        except Rejected as exc:
            out.held.append(dead_letter(stream, key, exc.reason, cursor=row[columns.cursor],
                                        digest=digest))
            out.counts.dead += 1
    return out


class FlagEvent(NamedTuple):
    """An event a column change produced: its contact, its name, when (None: now)."""

    contact_id: str
    event: str
    at: str | None


@dataclass
class ContactPlan:
    """What to do with a page of contacts."""

    upsert: dict[str, dict[str, Any]]  # key -> payload
    digests: dict[str, bytes]  # payload digest of every mapped contact
    inputs: dict[str, Digest]
    present: set[str]  # mapped contacts Wiraya already has as they are now
    links: list[LinkKey]  # to make once their contact is present
    emit: list[FlagEvent]  # to send once their contact is present
    record: list[FlagState]  # flag states to record (a true one once its event is sent)
    held: list[Held]
    on_record: set[str]
    counts: Counts


def plan_contacts(mapped: MappedContacts, known_links: set[LinkKey],
                  known_flags: Mapping[tuple[str, str], bool], force: bool) -> ContactPlan:
    counts = Counts()
    counts.add(mapped.counts)
    upsert: dict[str, dict[str, Any]] = {}
    digests: dict[str, bytes] = {}
    present: set[str] = set()
    for key, contact in mapped.mapped.items():
        digest = digests[key] = diff.payload_digest(contact.payload)
        decision = diff.decide(digest, mapped.memories.get(key), force)
        if decision == "send":
            upsert[key] = contact.payload
        else:  # the same as delivered, or refused before and unchanged since: not resent
            counts.skipped += 1
            if decision == "same":
                present.add(key)
    wanted = [LinkKey(*link.key) for contact in mapped.mapped.values()
              for link in contact.links]
    current = {(key, flag.event): flag.active for key, contact in mapped.mapped.items()
               for flag in contact.flags}
    at = {(key, flag.event): flag.at for key, contact in mapped.mapped.items()
          for flag in contact.flags}
    emit, record = diff.flag_changes(current, known_flags)
    return ContactPlan(
        upsert=upsert, digests=digests, inputs=mapped.inputs, present=present,
        links=[LinkKey(*link) for link in diff.links_to_make(wanted, set(known_links))],
        emit=[FlagEvent(key, event, at[(key, event)]) for key, event in emit],
        record=[FlagState(*item) for item in record], held=list(mapped.held),
        on_record=mapped.on_record, counts=counts)


# ---------------------------------------------------------------------------
# Events


@dataclass
class MappedEvents:
    """Step one of an event page: the rows not yet in the ledger, mapped."""

    mapped: dict[str, MappedEvent] = field(default_factory=dict)
    cleared: list[str] = field(default_factory=list)  # held, and in the ledger after all
    reused: list[str] = field(default_factory=list)  # ids on record for another event
    held: list[Held] = field(default_factory=list)
    on_record: set[str] = field(default_factory=set)
    counts: Counts = field(default_factory=Counts)

    def contact_ids(self) -> list[str]:
        return sorted({event.contact_id for event in self.mapped.values()})


def map_events(stream: str, rows: Rows, keyed: Keyed, mapper: EventMapper,
               columns: Columns, sent: Mapping[str, bytes | None],
               held: Mapping[str, Held]) -> MappedEvents:
    """Map the rows that are not in the ledger as the event they are now. A row whose id is
    on record with another contact or time (its table was truncated or recreated, or its
    id given out again) is a new event."""
    out = MappedEvents(held=keyed.held, counts=keyed.counts,
                       on_record={key for key in keyed.index if key in held})
    for key, number in keyed.index.items():
        row = rows.rows[number]
        try:
            event = mapper.map(row)
        except Rejected as exc:
            if key in sent:  # sent when it could be mapped: history, not a new problem
                out.counts.skipped += 1
                continue
            out.held.append(dead_letter(stream, key, exc.reason, cursor=row[columns.cursor]))
            out.counts.dead += 1
            continue
        if key in sent:
            identity = sent[key]
            if identity is None or identity == event.identity:
                out.counts.skipped += 1
                if key in held:
                    out.cleared.append(key)
                continue
            out.reused.append(key)
        out.mapped[key] = event
    return out


class EventItem(NamedTuple):
    """One event to send: its ledger key, its contact, its body and what it is."""

    key: str
    contact_id: str
    body: dict[str, Any]
    identity: bytes | None = None


@dataclass
class EventPlan:
    send: list[EventItem]
    digests: dict[str, bytes]
    cleared: list[str]
    held: list[Held]
    on_record: set[str]
    counts: Counts
    # Tries of each event to send that went out before and got no reply (a forced retry
    # starts afresh).
    unanswered: dict[str, int] = field(default_factory=dict)


def plan_events(stream: str, mapped: MappedEvents, held: Mapping[str, Held],
                absent: Mapping[str, str], force: bool) -> EventPlan:
    """`absent`: why each contact that is not in Wiraya yet is missing; its events wait."""
    counts = Counts()
    counts.add(mapped.counts)
    plan = EventPlan([], {}, list(mapped.cleared), list(mapped.held), mapped.on_record, counts)
    for key, event in mapped.mapped.items():
        if event.contact_id in absent:
            counts.waiting += 1
            plan.held.append(Held(stream, key, "waiting", absent[event.contact_id], False,
                                  contact_id=event.contact_id))
            continue
        digest = plan.digests[key] = diff.payload_digest(event.body)
        if diff.decide(digest, memory(None, held.get(key)), force) == "known-bad":
            counts.skipped += 1
            continue
        plan.send.append(EventItem(key, event.contact_id, event.body, event.identity))
        before = held.get(key)
        if before is not None and before.unanswered and not force:
            plan.unanswered[key] = before.unanswered
    return plan


def why_absent(contact_ids: Sequence[str], streams: Sequence[str],
               dead: Mapping[str, Sequence[Held]]) -> dict[str, str]:
    """Why each of these contacts is not there yet: not delivered, or a dead letter
    (`dead`: the dead letters among them, by contact stream)."""
    why = {cid: f"contact {cid} not yet delivered by {', '.join(streams)}"
           for cid in contact_ids}
    for stream in streams:
        for item in dead.get(stream, ()):
            why[item.row_key] = (f"contact {item.row_key} is a dead letter in {stream}: "
                                 f"{item.reason}")[:500]
    return why
