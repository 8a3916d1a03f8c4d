"""What a reply means: is it Wiraya's answer at all, and what became of the item.

Every reply is judged against the contract of its route (shared/wiraya-api.md). A 2xx is
Wiraya's answer only when its body has the contract's shape: a JSON object on every route
that gives JSON, and for events (reply unpublished) a JSON object or an empty body. An HTML
page, whatever its status, is not Wiraya's answer either: it is a proxy or gateway talking.
Such a reply is a failed call, retried like a 5xx, and never counts as accepted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from connector.transport import MAX_REPLY_BYTES, Response

Route = Literal["auth", "contact", "contacts-bulk", "campaigns", "campaigns-bulk", "events"]
MAX_RETRY_AFTER = 86_400.0  # a longer announced hold is read as a day (it fails anyway)


@dataclass(frozen=True)
class Result:
    """What became of one item: accepted, or refused with a reason.

    `retriable`: a later pass may succeed. `ambiguous`: not accepted, and at least one try
    went out with no reply, so Wiraya may have it already. `attempts` counts the tries that
    were sent for this item in this call (429s and the one resend after a fresh token are
    not tries); `ambiguous_attempts` how many of them ended with no reply.
    """

    ok: bool
    reason: str = ""
    retriable: bool = False
    status: int = 200  # 0: no reply; -1: a bulk item Wiraya asked to retry
    ambiguous: bool = False
    attempts: int = 0
    ambiguous_attempts: int = 0

    @classmethod
    def accepted(cls) -> Result:
        return _ACCEPTED


_ACCEPTED = Result(True)


@dataclass(frozen=True)
class Reply:
    status: int  # 0: no reply (timeout, dropped connection)
    data: Any  # parsed JSON, or None
    text: str  # a short excerpt for messages
    retry_after: float | None = None
    ambiguous: bool = False  # no reply, and the request went out
    foreign: bool = False  # a reply, but not Wiraya's answer (an HTML page, not JSON, ...)

    @property
    def transient(self) -> bool:
        return self.foreign or self.status == 0 or self.status >= 500 or self.status == 408


def judge(route: Route, response: Response) -> Reply:
    """Read one response as the route's contract says it should look."""
    status, raw = response.status, response.body
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if response.too_large:
        return Reply(status, None, f"not Wiraya's answer: a reply larger than "
                                   f"{MAX_REPLY_BYTES} bytes", retry_after, foreign=True)
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "text/html" or raw.lstrip()[:1] == b"<":
        excerpt = " ".join(raw[:120].decode("utf-8", "replace").split())
        return Reply(status, None, f"not Wiraya's answer: an HTML page ({kind or 'no type'}: "
                                   f"{excerpt!r})", retry_after, foreign=True)
    data, readable = _parse(raw)
    if 300 <= status < 400:
        host = urlsplit(response.headers.get("location", "")).hostname or "an unnamed place"
        return Reply(status, data, f"redirect to {host} (not followed: the API must answer "
                                   "directly)", retry_after)
    if not 200 <= status < 300:  # the status says it; the body is an excerpt for messages
        return Reply(status, data, raw[:300].decode("utf-8", "replace"), retry_after)
    why = _not_the_contract(route, raw, data, readable)
    if why:
        return Reply(status, None, f"not Wiraya's answer: {why}", retry_after, foreign=True)
    return Reply(status, data, "", retry_after)


def _parse(raw: bytes) -> tuple[Any, bool]:
    if not raw.strip():
        return None, False
    try:
        return json.loads(raw), True
    except ValueError:
        return None, False


def _not_the_contract(route: Route, raw: bytes, data: Any, readable: bool) -> str:
    """Why a 2xx body is not what the route answers; "" when it is."""
    if route == "events" and not raw.strip():
        return ""  # the events reply is unpublished: an empty 2xx/204 is an answer
    if not readable:
        excerpt = " ".join(raw[:60].decode("utf-8", "replace").split())
        return f"a reply that is not JSON ({excerpt!r})" if raw.strip() else "an empty reply"
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not the object the API answers"
    if route in ("contact", "campaigns") and not isinstance(data.get("id"), str | list | None):
        return f"an `id` of type {type(data['id']).__name__} (a string or a list was expected)"
    if route.endswith("-bulk") and not isinstance(data.get("failures"), dict | None):
        return "a bulk reply whose `failures` is not an object"
    return ""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from now, from `Retry-After: 120` or an HTTP date; None when unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = datetime.strptime(value.strip(), "%a, %d %b %Y %H:%M:%S GMT")
        except ValueError:
            return None
        seconds = (moment.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def describe(reply: Reply) -> str:
    if reply.status == 0:
        return reply.text
    return f"{reply.status} {reply.text}".strip()


@dataclass(frozen=True)
class Delivery:
    """The last reply of a call retried on transient failures, and how many tries it took."""

    reply: Reply
    attempts: int = 0
    ambiguous_attempts: int = 0


def outcome(delivery: Delivery, what: str) -> Result:
    """The `Result` of one item's call, with its tries counted."""
    reply, tries = delivery.reply, delivery.attempts
    counts = Result(False, attempts=tries, ambiguous_attempts=delivery.ambiguous_attempts,
                    ambiguous=delivery.ambiguous_attempts > 0, status=reply.status)
    if tries == 0:
        return replace(counts, reason=f"{what}: not sent, its try budget is spent")
    if 200 <= reply.status < 300 and not reply.transient:
        data = reply.data
        if isinstance(data, dict) and data.get("error") is True and not data.get("failures"):
            return replace(counts, reason=f"{what}: Wiraya answered error", retriable=True)
        return replace(counts, ok=True, ambiguous=False)
    if reply.transient or reply.status == 429:
        return replace(counts, retriable=True, reason=f"{what}: gave up after {tries} "
                                                      f"attempts: {describe(reply)}")
    return replace(counts, reason=f"{what}: {describe(reply)}",
                   retriable=300 <= reply.status < 400)
