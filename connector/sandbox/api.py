"""Answering one request: auth, rate limit, faults, then the route; and the admin routes."""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from random import Random
from typing import Any

from connector.sandbox import routes
from connector.sandbox.faults import FAULT_NAMES, Dose, Faults, Next, coerce_faults, faults_json
from connector.sandbox.records import Received, RequestRecord
from connector.sandbox.routes import Outcome
from connector.sandbox.wire import (
    ADMIN_PREFIX,
    AUTH_PATH,
    BULK_KINDS,
    CONTACT,
    CONTACTS_BULK,
    DECODER,
    DROP,
    EVENT,
    HANG,
    HTML_TYPE,
    ITEM_LIMIT,
    LINK,
    MAINTENANCE_PAGE,
    MALFORMED,
    NO_HEADERS,
    NO_ROUTE,
    NOT_ALLOWED,
    NOT_AUTHENTICATED,
    REDIRECT_LOCATION,
    UNAUTHORIZED,
    UNAVAILABLE,
    WRONG_TYPES,
    Reply,
    count_items,
    dumps,
    error,
    huge,
    parse_json,
    route,
)


def dotnet_utc(epoch_ns: int) -> str:
    """UTC ISO 8601 with exactly 7 fractional digits and Z, as .NET writes it."""
    secs, rem = divmod(epoch_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rem // 100:07d}Z"


def misbehaviour(mode: str) -> Reply:
    if mode == "hang":
        return (HANG, b"", NO_HEADERS)
    if mode == "malformed_json":
        return (200, MALFORMED, NO_HEADERS)
    if mode == "wrong_types":
        return (200, WRONG_TYPES, NO_HEADERS)
    if mode == "huge_body":
        return (200, huge(), NO_HEADERS)
    if mode == "redirect":
        body = dumps({"error": True, "message": "moved"})
        return (307, body, [("Location", REDIRECT_LOCATION)])
    return error(f"unknown misbehave mode {mode!r}", 500)


class Api:
    """The fake API behind the HTTP handler. `faults` may be replaced or changed at any time."""

    def __init__(self, api_keys: frozenset[str], faults: Faults) -> None:
        self.faults = faults
        self.received = Received()
        self.stopping = threading.Event()  # set when the sandbox stops: ends waits and hangs
        self._api_keys = api_keys
        self._tokens: dict[str, float] = {}
        self._holdback_until = 0.0
        self._bucket: float | None = None
        self._bucket_at = 0.0
        self._rng_seed = faults.seed
        self._rng = Random(self._rng_seed)

    def reset(self) -> None:
        """Forget what was received and the rate-limit state; keep faults and tokens."""
        with self.received.lock:
            self.received.clear()
            self._holdback_until = 0.0
            self._bucket = None
            self._rng_seed = self.faults.seed
            self._rng = Random(self._rng_seed)

    def _random(self) -> Random:  # call with the store's lock held
        seed = self.faults.seed
        if seed != self._rng_seed:
            self._rng_seed = seed
            self._rng = Random(seed)
        return self._rng

    def _fires(self, name: str) -> bool:
        """Whether the dose knob `name` hits this call (a count is used up as it hits)."""
        with self.received.lock:
            dose: Dose = getattr(self.faults, name)
            if isinstance(dose, Next):
                if dose.calls <= 0:
                    return False
                setattr(self.faults, name, Next(dose.calls - 1))
                return True
            return bool(dose) and self._random().random() < dose

    # --- one request ---

    def respond(
        self, at: float, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> Reply:
        """Answer one request (`path` raw, without query): (status, body, extra headers).
        Status DROP or HANG asks the handler to drop or to hold the connection."""
        lower = path.lower()
        if lower.startswith(ADMIN_PREFIX):
            return self._admin(method, lower, body)
        if lower.startswith("/api/"):
            outcome = self._api(method, path, headers, body)
        elif lower == AUTH_PATH:
            outcome = Outcome(self._auth(method, headers, body), 0, False)
        else:
            outcome = Outcome((404, NO_ROUTE, NO_HEADERS), 0, False)
        reply = outcome.reply
        if outcome.applied and self._fires("drop_after_apply"):
            reply = (DROP, b"", NO_HEADERS)
        rec = RequestRecord(at, method, path, max(reply[0], 0), outcome.items, outcome.applied)
        self.received.record(rec)
        wait = self.faults.slow_after_apply
        if outcome.applied and wait > 0:
            self.stopping.wait(wait)  # recorded first: the call took effect before this wait
        return reply

    def _auth(self, method: str, headers: dict[str, str], body: bytes) -> Reply:
        if method != "POST":
            return (405, NOT_ALLOWED, [("Allow", "POST")])
        data, problem = parse_json(headers, body)
        if problem is not None:
            return error(problem)
        key = data.get("key")
        if not isinstance(key, str):
            return error("key: required string")
        if key not in self._api_keys:
            return (self.faults.bad_key_status, NOT_AUTHENTICATED, NO_HEADERS)
        lifetime = self.faults.token_lifetime
        token = secrets.token_urlsafe(24)
        expires = dotnet_utc(time.time_ns() + int(lifetime * 1e9))
        with self.received.lock:
            self._tokens[token] = time.monotonic() + lifetime
        reply = {"authenticated": True, "token": token, "tokenExpires": expires}
        return (200, dumps(reply), NO_HEADERS)

    def _rate_limited(self, rate: float, retry_after: int) -> Reply | None:
        with self.received.lock:
            now = time.monotonic()
            if now < self._holdback_until:
                wait = max(1, math.ceil(self._holdback_until - now))
            else:
                burst = max(1.0, rate)
                if self._bucket is None:
                    tokens = burst
                else:
                    tokens = min(burst, self._bucket + (now - self._bucket_at) * rate)
                self._bucket_at = now
                if tokens >= 1.0:
                    self._bucket = tokens - 1.0
                    return None
                self._bucket = tokens
                wait = max(0, retry_after)
                self._holdback_until = now + wait
            self.received.holdbacks.append((now, now + wait))
        body = dumps({"error": True, "message": "too many requests"})
        return (429, body, [("Retry-After", str(wait))])

    def _authorised(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        expires = self._tokens.get(token)
        return expires is not None and time.monotonic() < expires

    def _fault(self, headers: dict[str, str]) -> Reply | None:
        """The reply a fault gives instead of the API's, or None to let the call through."""
        f = self.faults
        if self._fires("foreign_page"):  # a proxy in front of the API answers first
            return (f.foreign_page_status, MAINTENANCE_PAGE, [("Content-Type", HTML_TYPE)])
        if not self._authorised(headers):
            return (401, UNAUTHORIZED, NO_HEADERS)
        if f.rate_limit is not None:
            limited = self._rate_limited(f.rate_limit, f.retry_after)
            if limited is not None:
                return limited
        if self._fires("drop_rate"):
            return (DROP, b"", NO_HEADERS)
        if self._fires("error_rate"):
            return (503, UNAVAILABLE, NO_HEADERS)
        if f.latency > 0:
            self.stopping.wait(f.latency)
        return misbehaviour(f.misbehave) if f.misbehave else None

    def _api(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Outcome:
        found = route(path)
        kind = found.kind if found is not None else ""
        items = 1 if found is not None and kind not in BULK_KINDS else 0
        faulty = self._fault(headers)
        if faulty is not None:
            return Outcome(faulty, count_items(kind, body, items), False)
        if found is None or (kind in BULK_KINDS and not self.faults.bulk_routes):
            return Outcome((404, NO_ROUTE, NO_HEADERS), 0, False)
        if method != found.method:
            return Outcome((405, NOT_ALLOWED, [("Allow", found.method)]), items, False)
        data, problem = parse_json(headers, body)
        if problem is not None:
            return Outcome(error(problem), items, False)
        return self._apply(kind, found.contact_id, data)

    def _apply(self, kind: str, cid: str, data: dict[str, Any]) -> Outcome:
        f, store = self.faults, self.received
        if kind == CONTACT:
            return routes.contact(store, cid, data, f)
        if kind == EVENT:
            return routes.event(store, cid, data, f)
        if kind == LINK:
            return routes.link(store, cid, data, f)
        if not data:
            return Outcome(error("bulk body must hold at least one item"), 0, False)
        if f.bulk_item_limit is not None and len(data) > f.bulk_item_limit:
            return Outcome((400, ITEM_LIMIT, NO_HEADERS), len(data), False)
        if kind == CONTACTS_BULK:
            return routes.contacts_bulk(store, data, f, self._random)
        return routes.links_bulk(store, data, f, self._random)

    # --- admin routes: no auth, no faults, not recorded ---

    def _admin(self, method: str, lower: str, body: bytes) -> Reply:
        name = lower[len(ADMIN_PREFIX) :]
        getters = self._admin_getters()
        if name in getters and method == "GET":
            return (200, dumps(getters[name]()), NO_HEADERS)
        if name == "faults" and method == "POST":
            return self._set_faults(body)
        if name == "reset" and method == "POST":
            self.reset()
            return (200, dumps({"reset": True}), NO_HEADERS)
        if name in getters or name == "reset":
            allow = "GET, POST" if name == "faults" else ("POST" if name == "reset" else "GET")
            return (405, NOT_ALLOWED, [("Allow", allow)])
        return (404, NO_ROUTE, NO_HEADERS)

    def _admin_getters(self) -> dict[str, Callable[[], Any]]:
        store = self.received

        def copy(get: Callable[[], Any]) -> Callable[[], Any]:
            def locked() -> Any:
                with store.lock:
                    return get()

            return locked

        return {
            "summary": store.summary,
            "contacts": copy(lambda: dict(store.contacts)),
            "events": copy(lambda: [{"contactId": c, "event": e} for c, e in store.events]),
            "links": copy(
                lambda: [{"contactId": c, "campaign": k, "iteration": i} for c, k, i in store.links]
            ),
            "faults": lambda: faults_json(self.faults),
            # When each contact was last written and each event applied (unix time), for
            # bench/freshness.py; events in the order of the `events` route.
            "arrivals": copy(lambda: {"contacts": dict(store.contact_arrivals),
                                      "events": list(store.event_arrivals)}),
        }

    def _set_faults(self, body: bytes) -> Reply:
        try:
            changes = DECODER.decode(body.decode("utf-8")) if body.strip() else {}
        except ValueError as exc:
            return error(f"body is not valid JSON: {exc}")
        try:
            values = coerce_faults(changes)
        except ValueError as exc:
            return error(str(exc))
        for name, value in values.items():
            assert name in FAULT_NAMES
            setattr(self.faults, name, value)
        return (200, dumps(faults_json(self.faults)), NO_HEADERS)
