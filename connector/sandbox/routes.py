"""The API's routes once a call is authorised and past the faults: check the body, apply it
to what the sandbox holds, and say whether it took effect."""

from __future__ import annotations

from collections.abc import Callable
from random import Random
from typing import Any, NamedTuple

from connector.sandbox.checks import check_contact, check_event, check_link
from connector.sandbox.faults import Faults
from connector.sandbox.records import Received
from connector.sandbox.wire import (
    CONTACT_NOT_FOUND,
    NO_HEADERS,
    Reply,
    dumps,
    error,
    ok_ids,
)

# Gives the seeded generator; call it with the store's lock held.
Dice = Callable[[], Random]


class Outcome(NamedTuple):
    reply: Reply
    items: int  # items in the call, as recorded
    applied: bool  # whether the call changed what the sandbox holds


def contact(store: Received, cid: str, data: dict[str, Any], f: Faults) -> Outcome:
    problem = check_contact(data)
    if problem is None and cid in f.reject_ids:
        problem = f"contact {cid!r} is refused (reject_ids)"
    if problem is not None:
        return Outcome(error(problem), 1, False)
    with store.lock:
        seq = store.store_contact(cid, data)
    return Outcome((200, ok_ids(seq), NO_HEADERS), 1, True)


def link(store: Received, cid: str, data: dict[str, Any], f: Faults) -> Outcome:
    problem = check_link(data)
    if problem is not None:
        return Outcome(error(problem), 1, False)
    with store.lock:
        if f.strict_order and cid not in store.contacts:
            return Outcome((404, CONTACT_NOT_FOUND, NO_HEADERS), 1, False)
        seq = store.add_link(cid, data)
    return Outcome((200, dumps({"id": seq}), NO_HEADERS), 1, True)


def event(store: Received, cid: str, data: dict[str, Any], f: Faults) -> Outcome:
    problem = check_event(data)
    if problem is None and f.event_names is not None and data["name"] not in f.event_names:
        problem = f"name: unknown event name {data['name']!r} (names are case-sensitive)"
    if problem is not None:
        return Outcome(error(problem), 1, False)
    with store.lock:
        if f.strict_order and cid not in store.contacts:
            return Outcome((404, CONTACT_NOT_FOUND, NO_HEADERS), 1, False)
        seq = store.add_event(cid, data)
    return Outcome((200, ok_ids(seq), NO_HEADERS), 1, True)


def _bulk_fate(rng: Random, f: Faults) -> dict[str, Any] | None:
    """Random per-item failure (call with the lock held), or None to accept the item."""
    if f.bulk_reject_rate and rng.random() < f.bulk_reject_rate:
        return {"retry": False, "reason": "rejected (bulk_reject_rate)"}
    if f.bulk_retry_rate and rng.random() < f.bulk_retry_rate:
        return {"retry": True}
    return None


def _bulk_reply(ids: list[str | None], failures: dict[str, Any]) -> Outcome:
    reply = {"id": ids, "error": bool(failures), "failures": failures}
    applied = any(seq is not None for seq in ids)
    return Outcome((200, dumps(reply), NO_HEADERS), len(ids), applied)


def contacts_bulk(store: Received, data: dict[str, Any], f: Faults, dice: Dice) -> Outcome:
    checked = []
    for cid, body in data.items():
        problem = check_contact(body)
        if problem is None and cid in f.reject_ids:
            problem = "refused (reject_ids)"
        checked.append((cid, body, problem))
    ids: list[str | None] = []
    failures: dict[str, Any] = {}
    with store.lock:
        rng = dice()
        for cid, body, problem in checked:
            fate = {"retry": False, "reason": problem} if problem else _bulk_fate(rng, f)
            if fate is not None:
                failures[cid] = fate
                ids.append(None)
            else:
                ids.append(store.store_contact(cid, body))
    return _bulk_reply(ids, failures)


def links_bulk(store: Received, data: dict[str, Any], f: Faults, dice: Dice) -> Outcome:
    checked = [(cid, body, check_link(body)) for cid, body in data.items()]
    ids: list[str | None] = []
    failures: dict[str, Any] = {}
    with store.lock:
        rng = dice()
        for cid, body, problem in checked:
            if problem is None and f.strict_order and cid not in store.contacts:
                problem = "contact not found"
            fate = {"retry": False, "reason": problem} if problem else _bulk_fate(rng, f)
            if fate is not None:
                failures[cid] = fate
                ids.append(None)
            else:
                ids.append(store.add_link(cid, body))
    return _bulk_reply(ids, failures)
