"""What a page of rows becomes, given what the state file knows (connector.plan): pure,
no server. Mappers are built from real config streams; rows are tuples in column order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connector import config, diff
from connector.mapping import ContactMapper, EventMapper
from connector.plan import (
    Columns,
    FlagEvent,
    key_rows,
    map_contacts,
    map_events,
    plan_contacts,
    plan_events,
    why_absent,
)
from connector.source import Rows
from connector.state import Delivered, FlagState, Held, LinkKey

AT = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)

CONTACTS = config.ContactStream.model_validate({
    "table": "customers", "id": "customer_id", "cursor": "updated_at",
    "personal": {"phoneNumber": {"column": "mobile", "region": "SE"}},
    "general": {"city": "city"},
    "campaign": {"campaign": "welcome", "iteration": "2026-11"},
    "events": [{"name": "OptOut", "when": {"column": "status", "equals": "opted_out"}}],
})
EVENTS = config.EventStream.model_validate({
    "table": "orders", "id": "order_id", "contact": "customer_id", "cursor": "created_at",
    "name": "Conversion",
})
CONTACT_MAPPER = ContactMapper(CONTACTS, CONTACTS.columns(), UTC)
EVENT_MAPPER = EventMapper(EVENTS, EVENTS.columns(), UTC)
CONTACT_COLUMNS = Columns(CONTACTS.columns().index("customer_id"),
                          CONTACTS.columns().index("updated_at"))
EVENT_COLUMNS = Columns(EVENTS.columns().index("order_id"), EVENTS.columns().index("created_at"))


def customer(customer_id: Any, mobile: str = "070-413 45 61", city: str = "Lund",
             status: str = "active") -> tuple[Any, ...]:
    values = {"customer_id": customer_id, "updated_at": AT, "mobile": mobile, "city": city,
              "status": status}
    return tuple(values[column] for column in CONTACTS.columns())


def order(order_id: Any, customer_id: Any = 1) -> tuple[Any, ...]:
    values = {"order_id": order_id, "customer_id": customer_id, "created_at": AT}
    return tuple(values[column] for column in EVENTS.columns())


def contacts(rows: list[tuple[Any, ...]], known: dict[str, Delivered] | None = None,
             held: dict[str, Held] | None = None, links: set[LinkKey] | None = None,
             flags: dict[tuple[str, str], bool] | None = None, force: bool = False,
             digests: list[int] | None = None) -> Any:
    page = Rows(rows, digests)
    keyed = key_rows("customers", page, CONTACT_MAPPER.key, CONTACT_COLUMNS)
    mapped = map_contacts("customers", page, keyed, CONTACT_MAPPER, CONTACT_COLUMNS,
                          known or {}, held or {}, force)
    return plan_contacts(mapped, links or set(), flags or {}, force)


def delivered(row: tuple[Any, ...], input_digest: Any = None) -> Delivered:
    """The record of `row` delivered as it is (or, with `input_digest`, from other values)."""
    payload = diff.payload_digest(CONTACT_MAPPER.map(row).payload)
    key = CONTACT_MAPPER.key(row)
    return Delivered(key, input_digest if input_digest is not None
                     else CONTACT_MAPPER.input_digest(row), payload)


WELCOME = LinkKey("1", "welcome", "2026-11")
OPTED_IN = {("1", "OptOut"): False}


# ---------------------------------------------------------------------------
# contacts


def test_a_new_contact_is_upserted_linked_and_its_flag_state_recorded() -> None:
    plan = contacts([customer(1)])
    assert list(plan.upsert) == ["1"]
    assert plan.upsert["1"]["general"] == {"city": "Lund"}
    assert plan.links == [WELCOME]
    assert plan.emit == []
    assert plan.record == [FlagState("1", "OptOut", False)]
    assert plan.counts.skipped == 0


def test_an_unchanged_row_is_skipped_without_mapping() -> None:
    row = customer(1)
    plan = contacts([row], known={"1": delivered(row)}, links={WELCOME}, flags=OPTED_IN)
    assert plan.upsert == {} and plan.present == set()
    assert plan.counts.skipped == 1


def test_a_changed_row_is_sent() -> None:
    plan = contacts([customer(1, city="Malmö")], known={"1": delivered(customer(1))},
                    links={WELCOME}, flags=OPTED_IN)
    assert plan.upsert["1"]["general"] == {"city": "Malmö"}
    assert plan.links == [] and plan.record == []


def test_new_values_that_map_to_the_same_payload_are_not_sent() -> None:
    row = customer(1)
    plan = contacts([row], known={"1": delivered(row, input_digest=b"other values")},
                    links={WELCOME}, flags=OPTED_IN)
    assert plan.upsert == {}
    assert plan.present == {"1"}  # its links and events may go, its digest is recorded
    assert plan.counts.skipped == 1


def test_the_server_digest_is_used_when_the_page_has_one() -> None:
    row = customer(1)
    plan = contacts([row], known={"1": delivered(row, input_digest=42)}, digests=[42])
    assert plan.upsert == {} and plan.present == set() and plan.counts.skipped == 1
    plan = contacts([row], known={"1": delivered(row, input_digest=42)}, digests=[43])
    assert plan.present == {"1"}


def test_force_sends_an_unchanged_row() -> None:
    row = customer(1)
    plan = contacts([row], known={"1": delivered(row)}, links={WELCOME}, flags=OPTED_IN,
                    force=True)
    assert list(plan.upsert) == ["1"]


def refused(row: tuple[Any, ...], retriable: bool) -> Held:
    payload = diff.payload_digest(CONTACT_MAPPER.map(row).payload)
    return Held("customers", "1", "dead", "refused", retriable, payload_digest=payload)


def test_a_payload_refused_for_good_is_not_resent_until_it_changes() -> None:
    row = customer(1)
    plan = contacts([row], held={"1": refused(row, retriable=False)})
    assert plan.upsert == {} and plan.counts.skipped == 1
    assert plan.on_record == {"1"}
    changed = contacts([customer(1, city="Ystad")], held={"1": refused(row, retriable=False)})
    assert list(changed.upsert) == ["1"]


def test_a_payload_refused_for_a_passing_reason_is_resent() -> None:
    row = customer(1)
    plan = contacts([row], held={"1": refused(row, retriable=True)})
    assert list(plan.upsert) == ["1"]


def test_a_held_row_is_looked_at_even_with_its_values_as_delivered() -> None:
    """Delivered, then changed and refused (held), then changed back: the values are the
    delivered ones again, so nothing is sent, but it is present and no longer held."""
    row = customer(1)
    refused_change = refused(customer(1, city="Nowhere"), retriable=False)
    plan = contacts([row], known={"1": delivered(row)}, held={"1": refused_change},
                    links={WELCOME}, flags=OPTED_IN)
    assert plan.upsert == {}
    assert plan.present == {"1"} and plan.on_record == {"1"}


def test_a_link_is_made_once() -> None:
    plan = contacts([customer(1), customer(2)], links={WELCOME})
    assert plan.links == [LinkKey("2", "welcome", "2026-11")]


def test_a_flag_event_is_emitted_when_it_turns_true_and_only_then() -> None:
    opted_out = customer(1, status="opted_out")
    plan = contacts([opted_out], flags=OPTED_IN, links={WELCOME})
    assert plan.emit == [FlagEvent("1", "OptOut", "2026-11-27T09:00:00Z")]
    assert plan.record == [FlagState("1", "OptOut", True)]
    again = contacts([opted_out], flags={("1", "OptOut"): True}, links={WELCOME})
    assert again.emit == [] and again.record == []
    back = contacts([customer(1)], flags={("1", "OptOut"): True}, links={WELCOME})
    assert back.emit == [] and back.record == [FlagState("1", "OptOut", False)]


def test_rows_that_cannot_be_mapped_are_dead_letters_with_their_input_digest() -> None:
    row = customer(1, mobile="12")
    plan = contacts([row, customer(2)])
    assert [(h.row_key, h.state) for h in plan.held] == [("1", "dead")]
    assert "phoneNumber" in plan.held[0].reason
    assert plan.held[0].payload_digest == CONTACT_MAPPER.input_digest(row)
    assert list(plan.upsert) == ["2"]
    assert plan.counts.dead == 1


def test_bad_and_repeated_ids() -> None:
    keyed = key_rows("customers", Rows([customer(1, city="A"), customer(float("nan")),
                                        customer(1, city="B")]),
                     CONTACT_MAPPER.key, CONTACT_COLUMNS)
    assert keyed.index == {"1": 2}  # the last of a repeated id wins
    assert keyed.counts.repeated == 1 and keyed.counts.dead == 1
    assert keyed.held[0].row_key == "(bad id) nan"
    assert keyed.held[0].reason.startswith("id: ")


# ---------------------------------------------------------------------------
# events


def events(rows: list[tuple[Any, ...]], sent: dict[str, bytes | None] | None = None,
           held: dict[str, Held] | None = None, absent: dict[str, str] | None = None,
           force: bool = False) -> Any:
    page = Rows(rows)
    keyed = key_rows("orders", page, EVENT_MAPPER.key, EVENT_COLUMNS)
    mapped = map_events("orders", page, keyed, EVENT_MAPPER, EVENT_COLUMNS, sent or {},
                        held or {})
    return plan_events("orders", mapped, held or {}, absent or {}, force)


def test_events_in_the_ledger_are_skipped_and_no_longer_held() -> None:
    waiting = Held("orders", "11", "waiting", "contact 1 not yet delivered", contact_id="1")
    sent = {"10": EVENT_MAPPER.map(order(10)).identity, "11": None}  # None: an older ledger
    plan = events([order(10), order(11), order(12)], sent=sent, held={"11": waiting})
    assert [item.key for item in plan.send] == ["12"]
    assert plan.send[0].body == {"at": "2026-11-27T09:00:00Z", "name": "Conversion",
                                 "schema": 1}
    assert plan.cleared == ["11"]
    assert plan.counts.skipped == 2


def test_a_row_that_reuses_a_sent_id_is_a_new_event() -> None:
    """The table was truncated and ids start again: the same id, another contact or time."""
    before = EVENT_MAPPER.map(order(10, customer_id=1)).identity
    plan = events([order(10, customer_id=2)], sent={"10": before})
    assert [(item.key, item.contact_id) for item in plan.send] == [("10", "2")]
    assert events([order(10, customer_id=1)], sent={"10": before}).send == []


def test_tries_without_a_reply_are_carried_to_the_next_pass() -> None:
    tried = Held("orders", "10", "dead", "no reply", True, contact_id="1", unanswered=2)
    assert events([order(10)], held={"10": tried}).unanswered == {"10": 2}
    assert events([order(10)], held={"10": tried}, force=True).unanswered == {}


def test_an_event_waits_for_its_contact() -> None:
    plan = events([order(10, customer_id=1), order(11, customer_id=2)],
                  absent={"2": "contact 2 not yet delivered by customers"})
    assert [item.key for item in plan.send] == ["10"]
    assert [(h.row_key, h.state, h.contact_id, h.reason) for h in plan.held] == [
        ("11", "waiting", "2", "contact 2 not yet delivered by customers")]
    assert plan.counts.waiting == 1


def test_an_event_refused_for_good_is_not_resent_unchanged() -> None:
    body = EVENT_MAPPER.map(order(10)).body
    dead = Held("orders", "10", "dead", "refused", False, contact_id="1",
                payload_digest=diff.payload_digest(body))
    assert events([order(10)], held={"10": dead}).send == []
    assert [item.key for item in events([order(10)], held={"10": dead}, force=True).send] \
        == ["10"]


def test_why_a_contact_is_absent() -> None:
    dead = Held("customers", "2", "dead", "personal.phoneNumber: not a number")
    why = why_absent(["1", "2"], ["customers"], {"customers": [dead]})
    assert why == {"1": "contact 1 not yet delivered by customers",
                   "2": "contact 2 is a dead letter in customers: personal.phoneNumber: "
                        "not a number"}
