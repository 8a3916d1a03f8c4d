"""The Wiraya API client: token, pacing, concurrency, bulk calls and retries.

One client serves every stream of a process, so the rate limit, the concurrency bound and a
`Retry-After` hold apply to all of them at once. Calls that concern one row return a
`Result` (accepted, or refused with a reason and whether a later retry may help); only a
failure of the API as a whole raises (`AuthError`, `ApiUnavailable`).

    rows -> N workers -> [a lane: one keep-alive connection] -> [pace: hold for
             Retry-After, then the rate limit] -> the request
             5xx / timeout / dropped connection: backoff with jitter, up to max_attempts
             429: every worker holds back; does not count as an attempt
             401: fetch a new token once, then retry
             400: refused for good, with the reply
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpcore
import httpx

from connector import config, logs, metrics
from connector.errors import ApiUnavailable, AuthError

log = logging.getLogger("connector.wiraya")

TOKEN_PATH = "/auth/token/apikey"  # noqa: S105 - a route, not a secret
MAX_REPLY_BYTES = 1 << 20  # a reply larger than this is not read (hostile or broken server)
MAX_HOLDS = 1000  # consecutive 429s for one request before it counts as a failed attempt

T = TypeVar("T")
K = TypeVar("K")
Done = Callable[[dict[K, "Result"]], None] | None  # hears outcomes as replies come


@dataclass(frozen=True)
class Result:
    """What became of one item: accepted, or refused with a reason."""

    ok: bool
    reason: str = ""
    retriable: bool = False
    status: int = 200

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

    @property
    def transient(self) -> bool:
        return self.status == 0 or self.status >= 500 or self.status == 408


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


class Pacer:
    """A shared rate limit (GCRA with a small burst) and a shared `Retry-After` hold."""

    def __init__(self, rate: float | None, burst: int) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.burst = max(1, burst)
        self._tat = 0.0  # theoretical arrival time of the next request
        self.hold_until = 0.0

    def hold(self, seconds: float) -> None:
        self.hold_until = max(self.hold_until, time.monotonic() + seconds)

    async def wait_hold(self) -> None:
        while (left := self.hold_until - time.monotonic()) > 0:
            await asyncio.sleep(left)

    async def ready(self) -> None:
        """Return when a request may be sent now."""
        while True:
            await self.wait_hold()
            if self.interval:
                now = time.monotonic()
                start = max(self._tat, now - (self.burst - 1) * self.interval)
                self._tat = start + self.interval
                if start > now:
                    await asyncio.sleep(start - now)
            if time.monotonic() >= self.hold_until:
                return


class Wiraya:
    """An async client for one API key. Use as `async with Wiraya(settings) as api:`."""

    def __init__(self, settings: config.Wiraya) -> None:
        self.settings = settings
        self.bulk_size = settings.bulk_size
        self.bulk_routes = {"contacts": settings.bulk_size > 1, "campaigns": settings.bulk_size > 1}
        self._lanes = _Lanes(settings.concurrency)
        seconds = settings.timeout.total_seconds()
        self._timeouts = {"timeout": {"connect": seconds, "read": seconds, "write": seconds,
                                      "pool": seconds}}
        self.pacer = Pacer(settings.rate_limit, burst=min(settings.concurrency,
                                                          int(settings.rate_limit or 1) or 1))
        self._token: str | None = None
        self._refresh_at = 0.0
        self._token_lock = asyncio.Lock()
        self._warned: set[str] = set()
        self._bulk_seen: set[str] = set()
        self.requests = 0
        logs.register_secret(settings.api_key.get_secret_value())

    async def __aenter__(self) -> Wiraya:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._lanes.close()

    # -- token --------------------------------------------------------------------------

    async def login(self) -> None:
        """Fetch a token now; a refused key raises `AuthError`, never showing the key."""
        body = {"key": self.settings.api_key.get_secret_value()}
        reply: Reply | None = None
        for attempt in range(1, self.settings.max_attempts + 1):
            reply = await self._send("POST", TOKEN_PATH, body, token=None)
            if not reply.transient and reply.status != 429:
                break
            if reply.status == 429:
                continue
            if attempt < self.settings.max_attempts:
                await asyncio.sleep(self._backoff(attempt))
        assert reply is not None
        data = reply.data if isinstance(reply.data, dict) else {}
        if reply.status in (401, 403) or (reply.status == 200
                                          and data.get("authenticated") is False):
            raise AuthError(f"Wiraya refused the API key ({reply.status} from "
                            f"{self.settings.base_url}{TOKEN_PATH}); check wiraya.api_key")
        token = data.get("token")
        if reply.status != 200 or not isinstance(token, str) or not token:
            raise ApiUnavailable(f"cannot get a token from {self.settings.base_url}{TOKEN_PATH}: "
                                 f"{_describe(reply)}")
        logs.register_secret(token)
        expires = parse_expiry(data.get("tokenExpires"))
        lifetime = (expires - datetime.now(UTC)).total_seconds() if expires else 0.0
        if lifetime <= 0:
            self._warn("expiry", "the token reply has no usable tokenExpires; the token is "
                                 "refreshed every 60 s and whenever a call answers 401")
            lifetime = 60.0
        margin = min(self.settings.token_refresh_margin.total_seconds(), lifetime * 0.2)
        self._token = token
        self._refresh_at = time.monotonic() + lifetime - margin

    async def _current_token(self) -> str:
        if self._token is None or time.monotonic() >= self._refresh_at:
            async with self._token_lock:
                if self._token is None or time.monotonic() >= self._refresh_at:
                    await self.login()
        assert self._token is not None
        return self._token

    async def _drop_token(self, used: str) -> None:
        async with self._token_lock:
            if self._token == used:  # nobody has replaced it yet
                self._token = None

    # -- one request ----------------------------------------------------------------------

    async def _send(self, method: str, path: str, body: Any, token: str | None,
                    route: str = "auth") -> Reply:
        """One HTTP exchange, paced; never raises for HTTP or network trouble."""
        headers = list(_HEADERS)
        if token is not None:
            headers.append((b"Authorization", b"Bearer " + token.encode()))
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        url = self.settings.base_url + path
        async with self._lanes.lane() as lane:
            # Paced once a connection is in hand: nothing waits between the pacer's "go"
            # and the request leaving, so a Retry-After hold is never overtaken.
            await self.pacer.ready()
            started = time.monotonic()
            self.requests += 1
            try:
                async with lane.stream(method, url, headers=headers, content=content,
                                       extensions=self._timeouts) as response:
                    status = response.status
                    found = _headers(response.headers)
                    raw = await _read_capped(response, found.get("content-length"))
            except httpcore.TimeoutException:
                return self._record(route, started,
                                    Reply(0, None, "no reply within the timeout"))
            except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
                return self._record(route, started,
                                    Reply(0, None, f"connection failed ({type(exc).__name__})"))
            except ReplyTooLarge:
                return self._record(route, started, Reply(
                    502, None, f"reply larger than {MAX_REPLY_BYTES} bytes"))
        data: Any = None
        text = ""
        if raw:
            try:
                data = json.loads(raw)
            except ValueError:
                text = "reply is not JSON"
            else:
                if not 200 <= status < 300:  # the excerpt is for messages only
                    text = raw[:300].decode("utf-8", "replace")
        if 300 <= status < 400:
            host = urlsplit(found.get("location", "")).hostname or "an unnamed place"
            text = f"redirect to {host} (not followed: the API must answer directly)"
        return self._record(route, started, Reply(status, data, text,
                                                  _retry_after(found.get("retry-after"))))

    def _record(self, route: str, started: float, reply: Reply) -> Reply:
        metrics.API_LATENCY.labels(route).observe(time.monotonic() - started)
        metrics.API_REQUESTS.labels(route, str(reply.status)).inc()
        return reply

    async def _call(self, method: str, path: str, body: Any, route: str) -> Reply:
        """A call with a token: 401 refreshes once, 429 holds every worker; no other retry."""
        refreshed = False
        holds = 0
        while True:
            token = await self._current_token()
            reply = await self._send(method, path, body, token, route)
            if reply.status == 401:
                if refreshed:
                    raise AuthError(f"Wiraya refused a fresh token on {method} {route} (401); "
                                    "check that the API key may use this API")
                refreshed = True
                await self._drop_token(token)
                continue
            if reply.status == 429 and holds < MAX_HOLDS:
                holds += 1
                metrics.API_RATE_LIMITED.inc()
                wait = reply.retry_after if reply.retry_after is not None else 1.0
                self.pacer.hold(wait)
                log.info("rate limited on %s: every call waits %.1f s (Retry-After)", route, wait)
                continue
            return reply

    async def _deliver(self, method: str, path: str, body: Any, route: str) -> Reply:
        """A call retried on transient failures with exponential backoff and jitter."""
        reply = Reply(0, None, "not sent")
        for attempt in range(1, self.settings.max_attempts + 1):
            reply = await self._call(method, path, body, route)
            if not reply.transient:
                return reply
            if attempt < self.settings.max_attempts:
                await asyncio.sleep(self._backoff(attempt))
        return reply

    def _backoff(self, attempt: int) -> float:
        """Full jitter: a random wait up to base * 2^(attempt-1), capped."""
        ceiling = min(self.settings.backoff_max.total_seconds(),
                      self.settings.backoff.total_seconds() * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)

    def _outcome(self, reply: Reply, what: str) -> Result:
        if 200 <= reply.status < 300:
            data = reply.data
            if isinstance(data, dict) and data.get("error") is True and not data.get("failures"):
                return Result(False, f"{what}: Wiraya answered error: {reply.text}", True,
                              reply.status)
            if data is None and reply.status != 204:
                self._warn("unreadable", f"a {reply.status} reply to {what} was not JSON; "
                                         "counted as accepted, as its status says")
            return Result.accepted()
        if reply.transient or reply.status == 429:
            return Result(False, f"{what}: gave up after {self.settings.max_attempts} attempts: "
                                 f"{_describe(reply)}", True, reply.status)
        if 300 <= reply.status < 400:
            return Result(False, f"{what}: {_describe(reply)}", True, reply.status)
        return Result(False, f"{what}: {_describe(reply)}", False, reply.status)

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
        if self.bulk_size > 1 and self.bulk_routes["contacts"]:
            return await self._bulk("contacts", "PUT", "/api/contact/_bulk", contacts,
                                    self._upsert_one, done)
        return await self._each(list(contacts.items()), lambda item: item[0],
                                lambda item: self._upsert_one(*item), done)

    async def _upsert_one(self, contact_id: str, payload: dict[str, Any]) -> Result:
        reply = await self._deliver("PUT", contact_path(contact_id), payload, "contact")
        return self._outcome(reply, f"PUT contact {contact_id}")

    async def link_contacts(self, links: Sequence[tuple[str, dict[str, Any]]],
                            done: Done[int] = None) -> list[Result]:
        """Link each `(contact id, {"campaign", "iteration"})`; results in the same order,
        and `done` hears them by index."""
        if not links:
            return []
        if not (self.bulk_size > 1 and self.bulk_routes["campaigns"]):
            outcome = await self._each(list(enumerate(links)), lambda item: item[0],
                                       lambda item: self._link_one(*item[1]), done)
            return [outcome[index] for index in range(len(links))]
        results: dict[int, Result] = {}
        # A bulk body is keyed by contact id: a contact's second link goes in a later round.
        pending = list(range(len(links)))
        while pending:
            round_items: dict[str, int] = {}
            later = []
            for index in pending:
                contact_id = links[index][0]
                if contact_id in round_items:
                    later.append(index)
                else:
                    round_items[contact_id] = index

            def by_index(found: dict[str, Result],
                         round_items: dict[str, int] = round_items) -> None:
                if done is not None:
                    done({round_items[cid]: result for cid, result in found.items()})

            bodies = {cid: links[index][1] for cid, index in round_items.items()}
            found = await self._bulk("campaigns", "POST", "/api/contact/campaigns/_bulk",
                                     bodies, self._link_one, by_index)
            results.update((round_items[cid], result) for cid, result in found.items())
            pending = later
        return [results[index] for index in range(len(links))]

    async def _link_one(self, contact_id: str, body: dict[str, Any]) -> Result:
        reply = await self._deliver("POST", contact_path(contact_id, "/campaigns"), body,
                                    "campaigns")
        return self._outcome(reply, f"link {contact_id} to {body.get('campaign')}")

    async def send_events(self, events: Sequence[tuple[str, str, dict[str, Any]]],
                          done: Done[str] = None) -> dict[str, Result]:
        """Send each `(row key, contact id, body)`; there is no bulk route for events."""
        async def one(item: tuple[str, str, dict[str, Any]]) -> Result:
            _key, contact_id, body = item
            reply = await self._deliver("POST", contact_path(contact_id, "/events"), body,
                                        "events")
            return self._outcome(reply, f"event {body.get('name')} for {contact_id}")

        return await self._each(list(events), lambda item: item[0], one, done)

    # -- fan-out --------------------------------------------------------------------------

    async def _fan_out(self, items: list[T], call: Callable[[T], Awaitable[None]]) -> None:
        """Run `call` on every item with at most `concurrency` in flight."""
        queue = iter(items)

        async def worker() -> None:
            for item in queue:
                await call(item)

        await _gather([worker() for _ in range(min(self.settings.concurrency, len(items)))])

    async def _each(self, items: list[T], key: Callable[[T], K],
                    call: Callable[[T], Awaitable[Result]], done: Done[K]) -> dict[K, Result]:
        """One call per item; each outcome is told to `done` as soon as it is known."""
        results: dict[K, Result] = {}

        async def one(item: T) -> None:
            result = await call(item)
            results[key(item)] = result
            if done is not None:
                done({key(item): result})

        await self._fan_out(items, one)
        return results

    async def _bulk(self, kind: str, method: str, path: str, items: dict[str, dict[str, Any]],
                    single: Callable[[str, dict[str, Any]], Awaitable[Result]],
                    done: Done[str]) -> dict[str, Result]:
        """Bulk calls of up to `bulk_size` items; per-item retries; falls back when needed."""
        results: dict[str, Result] = {}
        attempts: dict[str, int] = dict.fromkeys(items, 0)
        todo = list(items)
        while todo:
            size = self.bulk_size
            batches = [todo[start:start + size] for start in range(0, len(todo), size)]
            retry: list[str] = []

            async def run(batch: list[str], retry: list[str] = retry) -> None:
                for cid in batch:
                    attempts[cid] += 1
                outcome = await self._bulk_once(kind, method, path,
                                                {cid: items[cid] for cid in batch}, single)
                final: dict[str, Result] = {}
                for cid, result in outcome.items():
                    if result.ok or not result.retriable or result.status != -1:
                        final[cid] = result
                    elif attempts[cid] >= self.settings.max_attempts:
                        why = "Wiraya asked for a retry" if result.reason == "retry" \
                            else result.reason
                        final[cid] = Result(False, f"{kind} {cid}: {why}, {attempts[cid]} "
                                                   "times; giving up for now", True, 200)
                    else:
                        retry.append(cid)
                results.update(final)
                if done is not None and final:
                    done(final)

            if kind not in self._bulk_seen and len(batches) > 1:
                # The first bulk call of a kind goes alone: if the route is missing, the
                # fallback is known before the other batches go out.
                await run(batches.pop(0))
                self._bulk_seen.add(kind)
            await self._fan_out(batches, run)
            if retry:
                await asyncio.sleep(self._backoff(max(attempts[cid] for cid in retry)))
            todo = retry
        return results

    async def _bulk_once(self, kind: str, method: str, path: str, batch: dict[str, dict[str, Any]],
                         single: Callable[[str, dict[str, Any]], Awaitable[Result]]
                         ) -> dict[str, Result]:
        """One bulk body. Items Wiraya asks to retry come back with `status == -1`."""
        if not self.bulk_routes[kind] or len(batch) == 1:
            return await self._singles(batch, single)
        reply = await self._deliver(method, path, batch, f"{kind}-bulk")
        data = reply.data if isinstance(reply.data, dict) else None
        if reply.status in (400, 413) and (reply.status == 413 or (data or {}).get(
                "bulkItemLimitExceeded")):
            smaller = max(1, len(batch) // 2)
            if smaller < self.bulk_size:
                self.bulk_size = smaller
                log.warning("Wiraya refused %d items in one bulk call; sending at most %d from "
                            "now on (lower wiraya.bulk_size to skip this)", len(batch), smaller)
            halves = list(batch.items())
            first = dict(halves[:smaller])
            second = dict(halves[smaller:])
            done = await self._bulk_once(kind, method, path, first, single)
            done.update(await self._bulk_once(kind, method, path, second, single))
            return done
        if reply.status in (404, 405):
            if self.bulk_routes[kind]:
                self.bulk_routes[kind] = False
                log.warning("the bulk route %s answered %d: sending %s one call at a time",
                            path, reply.status, kind)
            return await self._singles(batch, single)
        if reply.status == 400:
            # One bad item can make a whole body unreadable: find it with single calls.
            return await self._singles(batch, single)
        if not 200 <= reply.status < 300:
            outcome = self._outcome(reply, f"bulk {kind}")
            return dict.fromkeys(batch, outcome)
        failures = data.get("failures") if data else None
        if data is None or not isinstance(failures, dict | type(None)):
            # A 2xx whose per-item outcome we cannot read: nothing is known to be accepted.
            self._warn("bulk-shape", f"a bulk reply from {path} could not be read "
                                     f"({reply.text[:80] or 'empty'}); those items are retried")
            return dict.fromkeys(batch, Result(
                False, f"unreadable bulk reply ({reply.text[:60] or 'empty'})", True, -1))
        results: dict[str, Result] = {}
        for cid in batch:
            failure = failures.get(cid) if failures else None
            if failure is None:
                results[cid] = _ACCEPTED
            elif isinstance(failure, dict) and failure.get("retry") is True:
                results[cid] = Result(False, "retry", True, -1)
            else:
                detail = json.dumps(failure)[:200]
                results[cid] = Result(False, f"bulk {kind} {cid} refused: {detail}", False, 200)
        return results

    async def _singles(self, batch: dict[str, dict[str, Any]],
                       single: Callable[[str, dict[str, Any]], Awaitable[Result]]
                       ) -> dict[str, Result]:
        results: dict[str, Result] = {}
        for cid, body in batch.items():
            results[cid] = await single(cid, body)
        return results

    def hold_remaining(self) -> float:
        """Seconds left of a `Retry-After` hold (0 when none); safe to read from any thread."""
        return max(0.0, self.pacer.hold_until - time.monotonic())


class ReplyTooLarge(Exception):
    pass


class _Lanes:
    """`concurrency` lanes, each one keep-alive connection.

    httpcore (httpx's own transport) is used directly, one single-connection pool per lane:
    a shared pool looks at every connection on every request, which on a 2-core machine cost
    more than half of the client's time at concurrency 16 (bench/delivery.py).
    """

    def __init__(self, count: int) -> None:
        context = httpx.create_ssl_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._all = [httpcore.AsyncConnectionPool(ssl_context=context, max_connections=1,
                                                  max_keepalive_connections=1,
                                                  keepalive_expiry=60.0)
                     for _ in range(count)]
        self._free: asyncio.Queue[httpcore.AsyncConnectionPool] = asyncio.Queue()
        for lane in self._all:
            self._free.put_nowait(lane)

    @asynccontextmanager
    async def lane(self) -> AsyncIterator[httpcore.AsyncConnectionPool]:
        lane = await self._free.get()
        try:
            yield lane
        finally:
            self._free.put_nowait(lane)

    async def close(self) -> None:
        for lane in self._all:
            await lane.aclose()


_HEADERS = [(b"Content-Type", b"application/json; charset=utf-8"),
            (b"Accept", b"application/json"), (b"User-Agent", b"wiraya-connector")]
_WANTED = {b"content-length", b"retry-after", b"location"}


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in raw if name.lower() in _WANTED}


async def _read_capped(response: httpcore.Response, declared: str | None) -> bytes:
    if declared and declared.isdigit() and int(declared) > MAX_REPLY_BYTES:
        raise ReplyTooLarge
    chunks = []
    size = 0
    async for chunk in response.aiter_stream():
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            raise ReplyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = datetime.strptime(value, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=UTC)
        except ValueError:
            return None
        seconds = (moment - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), 3600.0)


def _describe(reply: Reply) -> str:
    if reply.status == 0:
        return reply.text
    return f"{reply.status} {reply.text}".strip()


async def _gather(coroutines: Iterable[Awaitable[None]]) -> None:
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
