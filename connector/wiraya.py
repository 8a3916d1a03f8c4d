"""The Wiraya API client: token, pacing, concurrency, bulk calls and retries.

One client serves every stream of a process, so the rate limit, the concurrency bound and a
`Retry-After` hold apply to all of them at once. Calls that concern one row return a
`Result` (accepted, or refused with a reason, whether a later retry may help, and whether a
try that got no reply may have arrived); only a failure of the API as a whole raises
(`AuthError`, `ApiUnavailable`).

    rows -> N workers -> transport (a lane: one keep-alive connection, through the
             environment's proxy) -> [pace: the Retry-After hold, then the rate limit]
             -> the request -> the reply judged against its route's contract (replies.py)
             5xx / timeout / dropped connection / not the API's answer: backoff with
                 jitter, up to max_attempts (or the item's budget)
             429: every worker holds back; does not count as an attempt; a hold longer
                 than max_hold fails the call at once (ApiUnavailable)
             401: fetch a new token once, then retry
             400: refused for good, with the reply

Seams (retry.py, transport.py): `Wiraya(settings, transport=..., clock=..., policy=...)`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from connector import config, logs, recorder
from connector.bulk import Bulk
from connector.errors import ApiUnavailable, AuthError, WirayaError
from connector.proxies import proxy_for
from connector.replies import Delivery, Reply, Result, Route, describe, judge, outcome
from connector.retry import Clock, Pacer, Policy, SystemClock
from connector.transport import OnFirstUse, Request, Transport, TransportError

__all__ = ["Result", "Wiraya", "contact_path", "parse_expiry"]

log = logging.getLogger("connector.wiraya")

TOKEN_PATH = "/auth/token/apikey"  # noqa: S105 - a route, not a secret
MAX_HOLDS = 1000  # consecutive 429s for one request before it counts as a failed attempt

T = TypeVar("T")
K = TypeVar("K")
Done = Callable[[dict[K, "Result"]], None] | None  # hears outcomes as replies come


def contact_path(contact_id: str, tail: str = "") -> str:
    """`/api/Contact/{id}` with the id URL-encoded, whatever characters it holds.

    Dots are encoded too: an id of `.` or `..` would otherwise be read as a path step.
    """
    return f"/api/Contact/{quote(contact_id, safe='').replace('.', '%2E')}{tail}"


def parse_expiry(text: object) -> datetime | None:
    """`tokenExpires`, which may carry 7 fractional digits (.NET) or none."""
    if not isinstance(text, str):
        return None
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?",
                         text.strip())
    if not match:
        return None
    whole, fraction, zone = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    try:
        offset = "+00:00" if zone in (None, "Z") else zone
        moment = datetime.fromisoformat(f"{whole}.{micro}{offset}")
    except ValueError:
        return None
    return moment.astimezone(UTC)


class Wiraya:
    """An async client for one API key. Use as `async with Wiraya(settings) as api:`.

    `transport` (default: keep-alive lanes through the environment's proxy), `clock` and
    `policy` (default: from the settings) are the seams tests replace.
    """

    def __init__(self, settings: config.Wiraya, *, transport: Transport | None = None,
                 clock: Clock | None = None, policy: Policy | None = None) -> None:
        self.settings = settings
        self.policy = policy or Policy.from_settings(settings)
        self.clock = clock or SystemClock()
        self.transport = transport or _default_transport(settings)
        self.pacer = Pacer(self.policy, self.clock)
        self.bulk = Bulk(self, settings.bulk_size)
        self._token: str | None = None
        self._refresh_at = 0.0
        self._token_lock = asyncio.Lock()
        self._warned: set[str] = set()
        self.requests = 0
        logs.register_secret(settings.api_key.get_secret_value())

    async def __aenter__(self) -> Wiraya:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.transport.aclose()

    def hold_remaining(self) -> float:
        """Seconds left of the current `Retry-After` hold (0.0: none)."""
        return self.pacer.remaining()

    # -- token --------------------------------------------------------------------------

    async def login(self) -> None:
        """Fetch a token now; a refused key raises `AuthError`, never showing the key."""
        body = {"key": self.settings.api_key.get_secret_value()}
        reply = (await self.deliver("POST", TOKEN_PATH, body, "auth", auth=False)).reply
        data = reply.data if isinstance(reply.data, dict) else {}
        if (reply.status in (401, 403) and not reply.foreign) or (
                reply.status == 200 and data.get("authenticated") is False):
            raise AuthError(f"Wiraya refused the API key ({reply.status} from "
                            f"{self.settings.base_url}{TOKEN_PATH}); check wiraya.api_key")
        token = data.get("token")
        if reply.status != 200 or reply.foreign or not isinstance(token, str) or not token:
            why = describe(reply) if reply.status != 200 or reply.foreign else "no token"
            raise ApiUnavailable(f"cannot get a token from {self.settings.base_url}{TOKEN_PATH}: "
                                 f"{why}")
        logs.register_secret(token)
        expires = parse_expiry(data.get("tokenExpires"))
        lifetime = (expires - datetime.now(UTC)).total_seconds() if expires else 0.0
        if lifetime <= 0:
            self._warn("expiry", "the token reply has no usable tokenExpires; the token is "
                                 "refreshed every 60 s and whenever a call answers 401")
            lifetime = 60.0
        margin = min(self.settings.token_refresh_margin.total_seconds(), lifetime * 0.2)
        self._token = token
        self._refresh_at = self.clock.monotonic() + lifetime - margin

    async def _current_token(self) -> str:
        if self._token is None or self.clock.monotonic() >= self._refresh_at:
            async with self._token_lock:
                if self._token is None or self.clock.monotonic() >= self._refresh_at:
                    await self.login()
        assert self._token is not None
        return self._token

    async def _drop_token(self, used: str) -> None:
        async with self._token_lock:
            if self._token == used:  # nobody has replaced it yet
                self._token = None

    # -- one request ----------------------------------------------------------------------

    async def _send(self, method: str, path: str, body: Any, route: Route, token: str | None,
                    headers: tuple[tuple[str, str], ...]) -> Reply:
        """One HTTP exchange, paced; never raises for HTTP or network trouble."""
        if token is not None:
            headers = (*headers, ("Authorization", "Bearer " + token))
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        request = Request(method, self.settings.base_url + path, (*_HEADERS, *headers), content)
        started = [self.clock.monotonic()]

        async def ready() -> None:
            await self.pacer.ready()
            started[0] = self.clock.monotonic()
            self.requests += 1

        try:
            reply = judge(route, await self.transport.exchange(request, ready))
        except TransportError as exc:
            reply = Reply(0, None, str(exc), ambiguous=exc.ambiguous)
        metrics = recorder.live()
        if metrics is not None:
            metrics.API_LATENCY.labels(route).observe(self.clock.monotonic() - started[0])
            metrics.API_REQUESTS.labels(route, str(reply.status)).inc()
        return reply

    async def _call(self, method: str, path: str, body: Any, route: Route, *, auth: bool,
                    headers: tuple[tuple[str, str], ...]) -> Reply:
        """One try: 401 refreshes the token once, 429 holds every worker; no other retry."""
        refreshed = False
        holds = 0
        while True:
            token = await self._current_token() if auth else None
            reply = await self._send(method, path, body, route, token, headers)
            if token is not None and reply.status == 401 and not reply.foreign:
                if refreshed:
                    raise AuthError(f"Wiraya refused a fresh token on {method} {route} (401); "
                                    "check that the API key may use this API")
                refreshed = True
                await self._drop_token(token)
                continue
            if reply.status == 429 and holds < MAX_HOLDS:
                holds += 1
                metrics = recorder.live()
                if metrics is not None:
                    metrics.API_RATE_LIMITED.inc()
                wait = reply.retry_after if reply.retry_after is not None else 1.0
                self.pacer.hold(wait, ROUTE_PATHS[route])
                if wait <= self.policy.max_hold:
                    log.info("rate limited on %s: every call waits %.1f s (Retry-After)",
                             route, wait)
                continue
            return reply

    async def deliver(self, method: str, path: str, body: Any, route: Route, *,
                      auth: bool = True, limit: int | None = None,
                      headers: tuple[tuple[str, str], ...] = ()) -> Delivery:
        """A call retried on transient failures with backoff, at most `limit` tries."""
        limit = self.policy.max_attempts if limit is None else min(limit,
                                                                   self.policy.max_attempts)
        reply = Reply(0, None, "not sent: no tries left in its budget")
        ambiguous = 0
        for attempt in range(1, limit + 1):
            reply = await self._call(method, path, body, route, auth=auth, headers=headers)
            ambiguous += reply.ambiguous
            if not reply.transient:
                return Delivery(reply, attempt, ambiguous)
            if attempt < limit:
                await self.pause(attempt)
        return Delivery(reply, max(limit, 0), ambiguous)

    async def pause(self, attempt: int) -> None:
        await self.pacer.sleep(self.policy.backoff_for(attempt))

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    # -- the calls ------------------------------------------------------------------------

    async def upsert_contacts(self, contacts: dict[str, dict[str, Any]],
                              done: Done[str] = None) -> dict[str, Result]:
        """Upsert each contact, in bulk calls when configured; one `Result` per contact id.

        `done` hears each reply's outcomes as soon as they are known, so a caller can record
        them before the rest is sent (a crash then resends at most what was in flight).
        """
        if not contacts:
            return {}
        if self.bulk.usable("contacts"):
            return await self.bulk.send("contacts", "PUT", "/api/contact/_bulk", contacts,
                                        self._upsert_one, done)
        return await self._each(list(contacts.items()), lambda item: item[0],
                                lambda item: self._upsert_one(*item), done)

    async def _upsert_one(self, contact_id: str, payload: dict[str, Any]) -> Result:
        delivery = await self.deliver("PUT", contact_path(contact_id), payload, "contact")
        return outcome(delivery, f"PUT contact {contact_id}")

    async def link_contacts(self, links: Sequence[tuple[str, dict[str, Any]]],
                            done: Done[int] = None) -> list[Result]:
        """Link each `(contact id, {"campaign", "iteration"})`; results in the same order,
        and `done` hears them by index."""
        if not links:
            return []
        if self.bulk.usable("campaigns"):
            return await self.bulk.link(links, self._link_one, done)
        outcome = await self._each(list(enumerate(links)), lambda item: item[0],
                                   lambda item: self._link_one(*item[1]), done)
        return [outcome[index] for index in range(len(links))]

    async def _link_one(self, contact_id: str, body: dict[str, Any]) -> Result:
        delivery = await self.deliver("POST", contact_path(contact_id, "/campaigns"), body,
                                      "campaigns")
        return outcome(delivery, f"link {contact_id} to {body.get('campaign')}")

    async def send_events(self, events: Sequence[tuple[str, str, dict[str, Any]]],
                          done: Done[str] = None, *, budget: Mapping[str, int] | None = None,
                          idempotency_keys: Mapping[str, str] | None = None
                          ) -> dict[str, Result]:
        """Send each `(row key, contact id, body)`; there is no bulk route for events.

        `budget[row key]`: the most tries this event may have now (never more than
        max_attempts); a caller keeps a total across passes, since a try that got no reply
        may have arrived. `idempotency_keys[row key]`: a stable key sent under the header
        `wiraya.idempotency_header` when that is set (Wiraya is not known to honour it).
        """
        header = self.settings.idempotency_header

        async def one(item: tuple[str, str, dict[str, Any]]) -> Result:
            key, contact_id, body = item
            given = (idempotency_keys or {}).get(key)
            extra = ((header, given),) if header and given else ()
            delivery = await self.deliver("POST", contact_path(contact_id, "/events"), body,
                                          "events", limit=(budget or {}).get(key),
                                          headers=extra)
            return outcome(delivery, f"event {body.get('name')} for {contact_id}")

        return await self._each(list(events), lambda item: item[0], one, done)

    # -- fan-out --------------------------------------------------------------------------

    async def fan_out(self, items: list[T], call: Callable[[T], Awaitable[None]]) -> None:
        """Run `call` on every item with at most `concurrency` in flight."""
        await fan_out(self.settings.concurrency, items, call)

    async def _each(self, items: list[T], key: Callable[[T], K],
                    call: Callable[[T], Awaitable[Result]], done: Done[K]) -> dict[K, Result]:
        """One call per item; each outcome is told to `done` as soon as it is known."""
        results: dict[K, Result] = {}

        async def one(item: T) -> None:
            result = await call(item)
            results[key(item)] = result
            if done is not None:
                done({key(item): result})

        await self.fan_out(items, one)
        return results


async def fan_out(concurrency: int, items: list[T],
                  call: Callable[[T], Awaitable[None]]) -> None:
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            await call(item)

    await _gather([worker() for _ in range(min(concurrency, len(items)))])


def _default_transport(settings: config.Wiraya) -> Transport:
    """Keep-alive lanes, made at the first request; the proxy is decided now, so that a bad
    proxy setting fails at start."""
    proxy = proxy_for(settings.base_url)
    if proxy is not None:
        log.info("calls to %s go through the proxy %s (%s)",
                 urlsplit(settings.base_url).hostname, proxy.url, proxy.source)
    tls = urlsplit(settings.base_url).scheme == "https" or (
        proxy is not None and urlsplit(proxy.url).scheme == "https")

    def lanes() -> Transport:
        from connector.lanes import Lanes

        return Lanes(settings.concurrency, settings.timeout.total_seconds(), proxy, tls=tls)

    return OnFirstUse(lanes)


_HEADERS = (("Content-Type", "application/json; charset=utf-8"),
            ("Accept", "application/json"), ("User-Agent", "wiraya-connector"))
ROUTE_PATHS: dict[Route, str] = {
    "auth": TOKEN_PATH, "contact": "/api/Contact/{id}", "contacts-bulk": "/api/contact/_bulk",
    "campaigns": "/api/Contact/{id}/campaigns", "campaigns-bulk": "/api/contact/campaigns/_bulk",
    "events": "/api/Contact/{id}/events"}


async def _gather(coroutines: Iterable[Awaitable[None]]) -> None:
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.gather(*tasks)
    except WirayaError:
        # The API failed as a whole (a hold past max_hold, a refused key): the other workers
        # meet the same at their next call, so let the requests in flight finish and be
        # heard (cancelled, they may have arrived yet be sent again by the next pass).
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
