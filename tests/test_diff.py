"""Pure send decisions (connector.diff): digests, must_map, decide, links and flags."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.diff import (
    Memory,
    decide,
    flag_changes,
    links_to_make,
    must_map,
    payload_digest,
)

CONTACT: dict[str, Any] = {
    "schema": 1,
    "personal": {"phoneNumber": "46704134561", "givenName": "John", "surName": "Doe"},
    "general": {"city": "Testershire", "nrLogins": 6, "vip": True, "score": 1.5},
}


def reordered(value: Any) -> Any:
    """The same JSON value with every mapping's keys in reverse order."""
    if isinstance(value, dict):
        return {key: reordered(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(item) for item in value]
    return value


# ---------------------------------------------------------------------------
# payload_digest


def test_payload_digest_ignores_key_order() -> None:
    flipped = reordered(CONTACT)
    assert list(flipped) != list(CONTACT)
    assert list(flipped["personal"]) != list(CONTACT["personal"])
    assert payload_digest(flipped) == payload_digest(CONTACT)


def test_payload_digest_is_stable() -> None:
    digest = payload_digest(CONTACT)
    assert isinstance(digest, bytes)
    assert len(digest) == 16
    assert payload_digest(json.loads(json.dumps(CONTACT))) == digest
    # The same across runs and processes: the digest is stored in the state file.
    again = {"schema": 1, "personal": {"givenName": "Åsa"}, "general": {}}
    assert payload_digest(again) == payload_digest({"general": {}, "schema": 1,
                                                    "personal": {"givenName": "Åsa"}})


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p["personal"].update(givenName="Jon"),
        lambda p: p["personal"].update(givenName="John "),
        lambda p: p["personal"].pop("surName"),
        lambda p: p["general"].update(nrLogins=7),
        lambda p: p["general"].update(nrLogins="6"),
        lambda p: p["general"].update(vip=1),
        lambda p: p["general"].update(extra=None),
        lambda p: p.update(schema=2),
        # The same field moved between sections is a different contact.
        lambda p: p["general"].update(givenName=p["personal"].pop("givenName")),
    ],
)
def test_payload_digest_follows_every_change(change: Any) -> None:
    changed = json.loads(json.dumps(CONTACT))
    change(changed)
    assert payload_digest(changed) != payload_digest(CONTACT)


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63),
                      st.floats(allow_nan=False, allow_infinity=False), st.text())
JSON = st.recursive(JSON_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=20)
PAYLOAD = st.dictionaries(st.text(max_size=8), JSON, max_size=6)


@given(PAYLOAD)
def test_property_payload_digest_ignores_order(payload: dict[str, Any]) -> None:
    assert payload_digest(reordered(payload)) == payload_digest(payload)
    assert payload_digest(json.loads(json.dumps(payload))) == payload_digest(payload)


@given(PAYLOAD, st.text(max_size=8), JSON)
def test_property_payload_digest_sees_a_new_value(payload: dict[str, Any], key: str,
                                                  value: Any) -> None:
    changed = {**payload, key: value}
    same = json.dumps(changed, sort_keys=True) == json.dumps(payload, sort_keys=True)
    assert (payload_digest(changed) == payload_digest(payload)) == same


# ---------------------------------------------------------------------------
# must_map

INPUT = b"i" * 16
OTHER_INPUT = b"j" * 16
SENT = payload_digest(CONTACT)
OTHER = payload_digest({**CONTACT, "schema": 2})


def test_must_map_a_new_row() -> None:
    assert must_map(INPUT, None) is True


def test_must_map_skips_a_row_delivered_with_the_same_values() -> None:
    assert must_map(INPUT, Memory(input_digest=INPUT, delivered=SENT)) is False


def test_must_map_a_changed_row() -> None:
    assert must_map(OTHER_INPUT, Memory(input_digest=INPUT, delivered=SENT)) is True
    assert must_map(INPUT, Memory(input_digest=None, delivered=SENT)) is True


def test_must_map_a_row_that_was_refused() -> None:
    memory = Memory(input_digest=INPUT, delivered=None, refused=SENT)
    assert must_map(INPUT, memory) is True


def test_must_not_map_values_that_could_not_be_mapped_before() -> None:
    memory = Memory(input_digest=None, delivered=None, refused=INPUT)
    assert must_map(INPUT, memory) is False
    assert must_map(OTHER_INPUT, memory) is True  # fixed in the database: mapped again
    assert must_map(INPUT, memory, force=True) is True  # `dead-letters retry`


def test_must_map_when_forced() -> None:
    assert must_map(INPUT, Memory(input_digest=INPUT, delivered=SENT), force=True) is True


# ---------------------------------------------------------------------------
# decide


@pytest.mark.parametrize(
    ("memory", "force", "expected"),
    [
        (None, False, "send"),
        (None, True, "send"),
        (Memory(), False, "send"),
        (Memory(delivered=SENT), False, "same"),
        (Memory(delivered=SENT), True, "send"),
        (Memory(delivered=OTHER), False, "send"),
        (Memory(refused=SENT), False, "known-bad"),
        (Memory(refused=SENT), True, "send"),
        (Memory(refused=SENT, refused_retriable=True), False, "send"),
        (Memory(refused=OTHER), False, "send"),
        (Memory(delivered=OTHER, refused=SENT), False, "known-bad"),
        (Memory(delivered=SENT, refused=OTHER), False, "same"),
        (Memory(input_digest=INPUT, delivered=SENT), False, "same"),
    ],
)
def test_decide(memory: Memory | None, force: bool, expected: str) -> None:
    assert decide(SENT, memory, force=force) == expected


DIGEST = st.binary(min_size=16, max_size=16)
MEMORY = st.one_of(st.none(), st.builds(Memory, input_digest=st.one_of(st.none(), DIGEST),
                                        delivered=st.one_of(st.none(), DIGEST),
                                        refused=st.one_of(st.none(), DIGEST),
                                        refused_retriable=st.booleans()))


@given(DIGEST, MEMORY, st.booleans())
def test_property_decide(digest: bytes, memory: Memory | None, force: bool) -> None:
    decision = decide(digest, memory, force=force)
    assert decision in {"send", "same", "known-bad"}
    if force or memory is None:
        assert decision == "send"
        return
    # Never "same" for a digest other than the one Wiraya last accepted.
    assert (decision == "same") == (memory.delivered == digest)
    if decision == "known-bad":
        assert memory.refused == digest
        assert not memory.refused_retriable
    if memory.delivered != digest and memory.refused != digest:
        assert decision == "send"


@given(DIGEST, MEMORY)
def test_property_what_was_delivered_is_not_sent_again(digest: bytes,
                                                       memory: Memory | None) -> None:
    # After a delivery the state file holds the digest; the next pass finds it "same".
    before = memory or Memory()
    after = Memory(input_digest=before.input_digest, delivered=digest, refused=None)
    assert decide(digest, after) == "same"


@given(DIGEST, MEMORY)
def test_property_rows_not_known_or_forced_are_always_mapped(digest: bytes,
                                                             memory: Memory | None) -> None:
    assert must_map(digest, None) is True
    assert must_map(digest, memory, force=True) is True


@given(DIGEST, DIGEST)
def test_property_a_delivered_row_with_the_same_values_is_never_mapped(
        digest: bytes, delivered: bytes) -> None:
    assert must_map(digest, Memory(input_digest=digest, delivered=delivered)) is False


@given(DIGEST, MEMORY.filter(lambda m: m is not None))
def test_property_new_values_are_always_mapped(digest: bytes, memory: Memory) -> None:
    # Values that are neither the ones last read nor the ones refused: a changed row.
    if digest in (memory.input_digest, memory.refused):
        return
    assert must_map(digest, memory) is True


@given(DIGEST, MEMORY)
def test_property_a_row_is_skipped_only_for_values_the_state_knows(
        digest: bytes, memory: Memory | None) -> None:
    # Skipping is safe only for the values last read, or values refused for good.
    if must_map(digest, memory):
        return
    assert memory is not None
    known_read = memory.input_digest == digest
    refused_for_good = memory.refused == digest and not memory.refused_retriable
    assert known_read or refused_for_good


@given(DIGEST, DIGEST, st.one_of(st.none(), DIGEST))
def test_property_a_retriable_refusal_is_mapped_again(digest: bytes, refused: bytes,
                                                      delivered: bytes | None) -> None:
    memory = Memory(input_digest=digest, delivered=delivered, refused=refused,
                    refused_retriable=True)
    assert must_map(digest, memory) is True


@pytest.mark.parametrize(
    ("memory", "force", "expected"),
    [
        pytest.param(None, False, True, id="never seen"),
        pytest.param(Memory(input_digest=INPUT, delivered=SENT), False, False,
                     id="delivered, unchanged"),
        pytest.param(Memory(input_digest=INPUT, delivered=SENT), True, True,
                     id="delivered, unchanged, forced"),
        pytest.param(Memory(input_digest=OTHER_INPUT, delivered=SENT), False, True,
                     id="delivered, changed since"),
        pytest.param(Memory(input_digest=INPUT, delivered=None, refused=SENT), False, True,
                     id="payload refused, values unchanged: the mapping may have changed"),
        pytest.param(Memory(refused=INPUT), False, False, id="unmappable, unchanged"),
        pytest.param(Memory(refused=INPUT, refused_retriable=True), False, True,
                     id="unmappable, retriable"),
        pytest.param(Memory(refused=OTHER_INPUT), False, True, id="unmappable, fixed since"),
        pytest.param(Memory(refused=INPUT), True, True, id="unmappable, dead-letters retry"),
        pytest.param(Memory(input_digest=INPUT, delivered=SENT, refused=OTHER_INPUT), False,
                     True, id="delivered, then other values refused"),
    ],
)
def test_must_map_examples(memory: Memory | None, force: bool, expected: bool) -> None:
    assert must_map(INPUT, memory, force=force) is expected


# ---------------------------------------------------------------------------
# links_to_make

A = ("42", "welcome-flow", "2026-11")
B = ("42", "welcome-flow", "2026-12")
C = ("43", "welcome-flow", "")
D = ("42", "vip", "")


def test_links_to_make_dedups_and_keeps_order() -> None:
    assert links_to_make([B, A, B, C, A, D, C], set()) == [B, A, C, D]


def test_links_to_make_skips_known() -> None:
    assert links_to_make([A, B, C, D], {A, C}) == [B, D]
    assert links_to_make([A, A], {A}) == []
    assert links_to_make([], {A}) == []


def test_links_to_make_iteration_is_part_of_the_key() -> None:
    assert links_to_make([A, B], {A}) == [B]
    assert links_to_make([("42", "welcome-flow", "")], {A, B}) == [("42", "welcome-flow", "")]


def test_links_to_make_takes_any_iterable_once() -> None:
    assert links_to_make(iter([A, B, A]), set()) == [A, B]


def test_links_to_make_does_not_touch_known() -> None:
    known = {A}
    links_to_make([A, B], known)
    assert known == {A}


LINK = st.tuples(st.sampled_from(["1", "2", "3"]), st.sampled_from(["a", "b"]),
                 st.sampled_from(["", "2026-11", "2026-12"]))


@given(st.lists(LINK, max_size=30), st.sets(LINK, max_size=10))
def test_property_links_to_make(wanted: list[tuple[str, str, str]],
                                known: set[tuple[str, str, str]]) -> None:
    todo = links_to_make(wanted, known)
    assert len(todo) == len(set(todo))
    assert not set(todo) & known
    assert set(todo) == set(wanted) - known
    # In the order first wanted.
    firsts = list(dict.fromkeys(link for link in wanted if link not in known))
    assert todo == firsts
    # Once made, nothing is left to make.
    assert links_to_make(wanted, known | set(todo)) == []


# ---------------------------------------------------------------------------
# flag_changes

OPT = ("42", "OptOut")
CHURN = ("42", "Churn")
OTHER_OPT = ("43", "OptOut")


def test_flag_first_sight_true_is_emitted() -> None:
    emit, record = flag_changes({OPT: True}, {})
    assert emit == [OPT]
    assert record == [("42", "OptOut", True)]


def test_flag_first_sight_false_is_recorded_not_emitted() -> None:
    emit, record = flag_changes({OPT: False}, {})
    assert emit == []
    assert record == [("42", "OptOut", False)]


def test_flag_false_to_true_is_emitted() -> None:
    emit, record = flag_changes({OPT: True}, {OPT: False})
    assert emit == [OPT]
    assert record == [("42", "OptOut", True)]


def test_flag_true_to_true_is_quiet() -> None:
    assert flag_changes({OPT: True}, {OPT: True}) == ([], [])


def test_flag_false_to_false_is_quiet() -> None:
    assert flag_changes({OPT: False}, {OPT: False}) == ([], [])


def test_flag_true_to_false_is_recorded_not_emitted() -> None:
    emit, record = flag_changes({OPT: False}, {OPT: True})
    assert emit == []
    assert record == [("42", "OptOut", False)]


def test_flag_every_turn_to_true_is_an_event() -> None:
    known: dict[tuple[str, str], bool] = {}
    emitted = 0
    for state in [True, True, False, False, True, False, True, True]:
        emit, record = flag_changes({OPT: state}, known)
        emitted += len(emit)
        for contact, event, active in record:
            known[(contact, event)] = active
    assert emitted == 3


def test_flag_many_pairs() -> None:
    current = {OPT: True, CHURN: False, OTHER_OPT: True}
    known = {OPT: True, CHURN: True, OTHER_OPT: False}
    emit, record = flag_changes(current, known)
    assert emit == [OTHER_OPT]
    assert record == [("42", "Churn", False), ("43", "OptOut", True)]


def test_flag_known_pairs_not_in_this_page_are_left_alone() -> None:
    assert flag_changes({}, {OPT: True}) == ([], [])
    assert flag_changes({OPT: True}, {OPT: True, OTHER_OPT: False}) == ([], [])


PAIR = st.tuples(st.sampled_from(["1", "2", "3"]), st.sampled_from(["OptOut", "Churn"]))
STATES = st.dictionaries(PAIR, st.booleans(), max_size=6)


@given(STATES, STATES)
def test_property_flag_changes(current: dict[tuple[str, str], bool],
                               known: dict[tuple[str, str], bool]) -> None:
    emit, record = flag_changes(current, known)
    # Emit exactly the pairs that are true now and were not known as true.
    assert set(emit) == {pair for pair, active in current.items()
                         if active and known.get(pair) is not True}
    assert len(emit) == len(set(emit))
    # Record every pair whose state differs from memory, with its new state.
    assert {(c, e): a for c, e, a in record} == {
        pair: active for pair, active in current.items() if known.get(pair) != active}
    assert len(record) == len({(contact, event) for contact, event, _ in record})
    # Applying the record to memory and asking again gives nothing to emit or record.
    after = dict(known)
    for contact, event, active in record:
        after[(contact, event)] = active
    assert flag_changes(current, after) == ([], [])


@given(st.lists(STATES, min_size=1, max_size=6))
def test_property_flag_events_count_turns_to_true(history: list[dict[tuple[str, str], bool]]
                                                  ) -> None:
    known: dict[tuple[str, str], bool] = {}
    emitted: dict[tuple[str, str], int] = {}
    expected: dict[tuple[str, str], int] = {}
    last: dict[tuple[str, str], bool] = {}
    for current in history:
        for pair, active in current.items():
            if active and last.get(pair) is not True:
                expected[pair] = expected.get(pair, 0) + 1
            last[pair] = active
        emit, record = flag_changes(current, known)
        for pair in emit:
            emitted[pair] = emitted.get(pair, 0) + 1
        for contact, event, active in record:
            known[(contact, event)] = active
    assert emitted == expected
    assert known == last
