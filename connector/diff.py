"""Pure decisions: given what a page mapped and what the state file remembers, what to send.

Nothing here reads or writes anything; `sync.py` hands in the facts and acts on the answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from connector.values import Digest

Decision = Literal["send", "same", "known-bad"]


# Made once: `json.dumps` with options builds an encoder on every call. The text must not
# change (sorted keys, no spaces, UTF-8): the state file keeps digests of it, and another
# text would resend every contact once.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def payload_digest(payload: Mapping[str, Any]) -> bytes:
    """A digest of a payload that ignores key order and whitespace."""
    text = _CANONICAL.encode(payload)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


@dataclass(frozen=True)
class Memory:
    """What the state file says of one row: the last delivered and last refused payloads."""

    input_digest: Digest | None = None
    delivered: bytes | None = None
    refused: Digest | None = None  # digest of what was refused: the payload, or the input
    # values when the row could not be mapped at all
    refused_retriable: bool = False


def must_map(input_digest: Digest, memory: Memory | None, force: bool = False) -> bool:
    """Whether a row has to be mapped at all: not when its values are the ones last delivered,
    nor when they are the very values that could not be mapped before (a dead letter that
    nobody has fixed yet)."""
    if force or memory is None:
        return True
    if memory.refused is not None:
        return memory.refused != input_digest or memory.refused_retriable
    return memory.input_digest != input_digest


def decide(digest: bytes, memory: Memory | None, force: bool = False) -> Decision:
    """Send a contact only when it differs from what Wiraya last accepted.

    A payload that Wiraya refused for good is not sent again until it changes (or a user
    retries it), so a bad row does not cost a request on every pass.
    """
    if force or memory is None:
        return "send"
    if memory.delivered == digest:
        return "same"
    if memory.refused == digest and not memory.refused_retriable:
        return "known-bad"
    return "send"


def links_to_make(wanted: Iterable[tuple[str, str, str]],
                  known: set[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Links not yet made, each once, in the order first wanted."""
    seen: set[tuple[str, str, str]] = set()
    todo = []
    for link in wanted:
        if link not in known and link not in seen:
            seen.add(link)
            todo.append(link)
    return todo


def flag_changes(current: Mapping[tuple[str, str], bool],
                 known: Mapping[tuple[str, str], bool]) -> tuple[list[tuple[str, str]],
                                                                 list[tuple[str, str, bool]]]:
    """Column-defined events: emit on each turn to true; record every changed state.

    Returns `(emit, record)`: the `(contact, event)` pairs whose condition just became true
    (first sight included), and every `(contact, event, active)` that differs from memory.
    """
    emit: list[tuple[str, str]] = []
    record: list[tuple[str, str, bool]] = []
    for pair, active in current.items():
        before = known.get(pair)
        if before == active:
            continue
        record.append((*pair, active))
        if active:
            emit.append(pair)
    return emit, record
