"""What a plan becomes in a dry run (connector.deliver with no API): every payload handed to
`on_send` in the order it would go, and the commit the state file would get; and what is
recorded as replies come, against the sandbox. The failure paths are tested end to end
against the sandbox (test_delivery, test_hostile)."""

from __future__ import annotations

import asyncio
from datetime import UTC
from typing import Any

from connector import config
from connector.deliver import Delivery
from connector.plan import ContactPlan, EventItem, EventPlan, FlagEvent
from connector.sandbox import Sandbox
from connector.state import Commit, Delivered, FlagState, Held, LinkKey, Sent
from connector.values import Counts
from connector.wiraya import Wiraya
from tests.conftest import API_KEY

PAYLOAD = {"schema": 1, "personal": {"phoneNumber": "46701234567"}, "general": {}}


def dry(plan: ContactPlan | EventPlan) -> tuple[Commit, list[tuple[str, str, Any]], Counts]:
    heard: list[tuple[str, str, Any]] = []
    recorded: list[Commit] = []
    delivery = Delivery("s", None, recorded.append, UTC,
                        lambda kind, key, body: heard.append((kind, key, body)))
    if isinstance(plan, ContactPlan):
        commit = asyncio.run(delivery.contacts(plan))
    else:
        commit = asyncio.run(delivery.events(plan))
    assert recorded == []  # a dry run records nothing as replies come
    return commit, heard, delivery.counts


def test_contacts_then_their_links_and_events_in_that_order() -> None:
    plan = ContactPlan(
        upsert={"1": PAYLOAD}, digests={"1": b"p1", "2": b"p2", "3": b"p3"},
        inputs={"1": b"i1", "2": b"i2", "3": b"i3"}, present={"2"},
        links=[LinkKey("1", "welcome", ""), LinkKey("2", "welcome", "2026-11"),
               LinkKey("9", "welcome", "")],  # 9: not present, so not linked
        emit=[FlagEvent("2", "OptOut", "2026-11-27T09:00:00Z")],
        # A true flag is recorded only once its event went: 1's "Vip" had none to go.
        record=[FlagState("2", "OptOut", True), FlagState("1", "OptOut", False),
                FlagState("9", "OptOut", True), FlagState("1", "Vip", True)],
        held=[Held("s", "3", "dead", "bad phone")], on_record={"2", "3"}, counts=Counts())
    commit, heard, counts = dry(plan)
    assert heard == [
        ("contact", "1", PAYLOAD),
        ("link", "1", {"campaign": "welcome"}),
        ("link", "2", {"campaign": "welcome", "iteration": "2026-11"}),
        ("event", "2\x1fOptOut", {"at": "2026-11-27T09:00:00Z", "name": "OptOut",
                                   "schema": 1}),
    ]
    assert sorted(commit.contacts) == [Delivered("1", b"i1", b"p1"),
                                       Delivered("2", b"i2", b"p2")]
    assert commit.links == [LinkKey("1", "welcome", ""), LinkKey("2", "welcome", "2026-11")]
    assert commit.flags == [FlagState("2", "OptOut", True), FlagState("1", "OptOut", False)]
    assert commit.cleared == ["2"]
    assert [h.row_key for h in commit.held] == ["3"]
    assert (counts.sent, counts.linked, counts.events) == (1, 2, 1)


def test_events_go_into_the_ledger_and_leave_the_held_list() -> None:
    body = {"at": "2026-11-27T09:00:00Z", "name": "Conversion", "schema": 1}
    plan = EventPlan(send=[EventItem("10", "1", body, b"who-when-10"),
                           EventItem("11", "2", body, b"who-when-11")],
                     digests={"10": b"a", "11": b"b"}, cleared=["7"],
                     held=[Held("s", "12", "waiting", "contact 3 not yet delivered")],
                     on_record={"11"}, counts=Counts())
    commit, heard, counts = dry(plan)
    assert heard == [("event", "10", body), ("event", "11", body)]
    assert commit.ledger == [Sent("10", b"who-when-10"), Sent("11", b"who-when-11")]
    assert commit.cleared == ["7", "11"]
    assert [h.row_key for h in commit.held] == ["12"]
    assert counts.sent == 2


def test_an_upsert_is_recorded_whole_only_when_it_is_the_contacts_last_step(
        api: Sandbox) -> None:
    """Over real HTTP: contact 1 has nothing to follow, so it is on record whole as its reply
    comes and not written again with the page; contact 2's flag turned false, a state the
    page writes, so until the page commits it is on record without its input digest (a
    crash in between maps it again and writes the flag then)."""
    plan = ContactPlan(
        upsert={"1": PAYLOAD, "2": PAYLOAD}, digests={"1": b"p1", "2": b"p2"},
        inputs={"1": b"i1", "2": b"i2"}, present=set(), links=[], emit=[],
        record=[FlagState("2", "OptOut", False)], held=[], on_record=set(), counts=Counts())
    recorded: list[Commit] = []
    wiraya = config.Wiraya.model_validate({"base_url": api.url, "api_key": API_KEY,
                                           "rate_limit": None, "bulk_size": 10})

    async def deliver() -> Commit:
        async with Wiraya(wiraya) as client:
            return await Delivery("s", client, recorded.append, UTC).contacts(plan)

    commit = asyncio.run(deliver())
    assert sorted(c for r in recorded for c in r.contacts) == [
        Delivered("1", b"i1", b"p1"), Delivered("2", None, b"p2")]
    assert commit.recorded == ["1"]
    assert commit.contacts == [Delivered("2", b"i2", b"p2")]
    assert commit.flags == [FlagState("2", "OptOut", False)]
    assert set(api.contacts) == {"1", "2"}
