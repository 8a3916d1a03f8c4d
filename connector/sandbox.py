"""A local fake of the Wiraya ingest API, for tests, benchmarks and the demo.

It follows the contract in the project's API notes (auth, contact upsert, bulk upsert, campaign
links, events, 429 with Retry-After) and serves real HTTP/1.1 with keep-alive on a loopback
port. Fault knobs (`Faults`) can be turned while it serves: token lifetime, latency, 503s,
dropped connections, rate limiting, bulk item limit, per-item bulk failures, refused contact
ids, no bulk routes, a 200-variant of a bad key, strict upsert-before-link order and a few
hostile behaviours (bad JSON, wrong types, huge bodies, redirects, hung connections).

What it received is kept in memory for assertions: `contacts`, `contact_writes`, `links`,
`events`, `requests`, `holdbacks`, `requests_during_holdback()` and `summary()`.

This module imports nothing from the rest of the package: stdlib only.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import secrets
import selectors
import socket
import socketserver
import sys
import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from random import Random
from types import TracebackType
from typing import Any, cast
from urllib.parse import unquote

__all__ = ["MISBEHAVIOURS", "Faults", "RequestRecord", "Sandbox"]

AUTH_PATH = "/auth/token/apikey"
ADMIN_PREFIX = "/_sandbox/"
MISBEHAVIOURS = frozenset({"malformed_json", "wrong_types", "huge_body", "redirect", "hang"})
REDIRECT_LOCATION = "http://203.0.113.1/elsewhere"
HUGE_BODY_BYTES = 20 * 1024 * 1024
MAX_REQUEST_BODY = 64 * 1024 * 1024
MAX_LINE = 65536
MAX_HEADERS = 100
TIMESTAMP_KEYS = frozenset({"timeOfRegistration", "latestClientDetailUpdate", "latestLogin"})
SEQUENCE_START = 4_958_000_000_000

_TIMESTAMP_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?Z", re.ASCII)
_DATE_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)

# Statuses with special handling instead of a reply.
_DROP = -1  # close the connection without any reply
_HANG = -2  # hold the connection, never answer, until the server stops

_CONTACT = "contact"
_CONTACTS_BULK = "contacts_bulk"
_LINK = "link"
_LINKS_BULK = "links_bulk"
_EVENT = "event"
_BULK_KINDS = frozenset({_CONTACTS_BULK, _LINKS_BULK})

_JSON_TYPE = "application/json; charset=utf-8"
_Headers = list[tuple[str, str]]
_Reply = tuple[int, bytes, _Headers]
_NO_HEADERS: _Headers = []


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _dumps(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode()


_REASONS = {code: phrase for code, (phrase, _) in BaseHTTPRequestHandler.responses.items()}
_OK_EMPTY_FAILURES = b'"error":false,"failures":{}}'
_UNAUTHORIZED = _dumps({"error": "unauthorized"})
_NO_ROUTE = _dumps({"error": "no such route"})
_NOT_ALLOWED = _dumps({"error": "method not allowed"})
_UNAVAILABLE = _dumps({"error": True})
_CONTACT_NOT_FOUND = _dumps({"error": "contact not found"})
_ITEM_LIMIT = _dumps({"bulkItemLimitExceeded": True})
_NOT_AUTHENTICATED = _dumps({"authenticated": False})
_MALFORMED = b'{"id": ["1"], "error": fals'
_WRONG_TYPES = _dumps({"id": 5, "error": "yes", "failures": []})
_huge_body: bytes | None = None


def _huge() -> bytes:
    global _huge_body
    if _huge_body is None:
        head = b'{"id":["1"],"error":false,"failures":{},"padding":"'
        _huge_body = head + b"x" * (HUGE_BODY_BYTES - len(head) - 2) + b'"}'
    return _huge_body


@dataclass
class Faults:
    """Fault knobs. Mutable: a test may change them while the sandbox serves."""

    token_lifetime: float = 300.0  # seconds a token lives
    latency: float = 0.0  # seconds slept before answering each /api call
    error_rate: float = 0.0  # share of /api calls answered 503 {"error": true}
    drop_rate: float = 0.0  # share of /api calls whose connection is closed with no reply
    rate_limit: float | None = None  # /api requests per second (token bucket); beyond: 429
    retry_after: int = 1  # seconds in the Retry-After header of a 429
    bulk_item_limit: int | None = None  # more items in one bulk body -> 400
    bulk_retry_rate: float = 0.0  # share of bulk items failed with {"retry": true}
    bulk_reject_rate: float = 0.0  # share of bulk items failed permanently
    reject_ids: set[str] = field(default_factory=set)  # contact ids whose upsert is refused
    bulk_routes: bool = True  # False -> bulk routes answer 404
    bad_key_status: int = 401  # 401, or 200 with {"authenticated": false}
    strict_order: bool = True  # link/event for a never-upserted contact -> 404
    seed: int = 0  # faults are drawn from random.Random(seed)
    misbehave: str | None = None  # one of MISBEHAVIOURS, applied to /api calls
    event_names: set[str] | None = None  # accepted event names (case-sensitive); None: any


_RATE_FIELDS = frozenset({"error_rate", "drop_rate", "bulk_retry_rate", "bulk_reject_rate"})
_NON_NEGATIVE_FIELDS = frozenset({"token_lifetime", "latency"})


def _faults_json(faults: Faults) -> dict[str, Any]:
    out = asdict(faults)
    out["reject_ids"] = sorted(faults.reject_ids)
    out["event_names"] = None if faults.event_names is None else sorted(faults.event_names)
    return out


def _coerce_fault(name: str, value: Any) -> Any:
    """Check one Faults field given as JSON; return the value to set or raise ValueError."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    integer = isinstance(value, int) and not isinstance(value, bool)
    if name in _RATE_FIELDS:
        if not number or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}: must be a number from 0 to 1")
        return float(value)
    if name in _NON_NEGATIVE_FIELDS:
        if not number or value < 0 or not math.isfinite(value):
            raise ValueError(f"{name}: must be a number >= 0")
        return float(value)
    if name == "rate_limit":
        if value is None:
            return None
        if not number or value < 0 or not math.isfinite(value):
            raise ValueError("rate_limit: must be null or a number >= 0")
        return float(value)
    if name in ("retry_after", "seed"):
        if not integer or (name == "retry_after" and value < 0):
            raise ValueError(f"{name}: must be an integer" + (" >= 0" if name != "seed" else ""))
        return value
    if name == "bulk_item_limit":
        if value is None:
            return None
        if not integer or value < 0:
            raise ValueError("bulk_item_limit: must be null or an integer >= 0")
        return value
    if name == "bad_key_status":
        if not integer or not 200 <= value <= 599:
            raise ValueError("bad_key_status: must be an HTTP status such as 401 or 200")
        return value
    if name in ("bulk_routes", "strict_order"):
        if not isinstance(value, bool):
            raise ValueError(f"{name}: must be true or false")
        return value
    if name == "reject_ids":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("reject_ids: must be a list of strings")
        return set(value)
    if name == "event_names":
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("event_names: must be null or a list of strings")
        return set(value)
    if name == "misbehave":
        if value is not None and value not in MISBEHAVIOURS:
            raise ValueError(f"misbehave: must be null or one of {sorted(MISBEHAVIOURS)}")
        return value
    raise ValueError(f"{name}: no such fault")


_FAULT_NAMES = frozenset(f.name for f in fields(Faults))


@dataclass(frozen=True)
class RequestRecord:
    """One request the sandbox received (admin routes are never recorded)."""

    at: float  # time.monotonic() when the request line was read
    method: str
    path: str  # as sent (not lower-cased), without query
    status: int  # what was answered (0 if dropped or hung)
    items: int  # items in a bulk body, 1 for single calls, 0 for auth and others


# --- validation -------------------------------------------------------------------------------


def _is_timestamp(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    m = _TIMESTAMP_RE.fullmatch(value)
    if m is None:
        return False
    try:
        datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6]))
    except ValueError:
        return False
    return True


def _is_date(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    m = _DATE_RE.fullmatch(value)
    if m is None:
        return False
    try:
        date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return False
    return True


def _is_phone(value: Any) -> bool:
    return (
        isinstance(value, str)
        and 7 <= len(value) <= 15
        and value.isascii()
        and value.isdigit()
        and value[0] != "0"
    )


def _check_contact(body: Any) -> str | None:
    """Why a contact body is invalid, or None when it is valid."""
    if not isinstance(body, dict):
        return "contact body must be a JSON object"
    schema = body.get("schema")
    if type(schema) is not int or schema != 1:
        return "schema: must be 1"
    for section in ("personal", "general"):
        if section not in body:
            continue
        part = body[section]
        if not isinstance(part, dict):
            return f"{section}: must be an object"
        for key, value in part.items():
            if isinstance(value, dict | list):
                return f"{section}.{key}: must be a string, number, boolean or null"
            if key in TIMESTAMP_KEYS and not _is_timestamp(value):
                return f"{section}.{key}: must be a UTC timestamp like 2018-03-30T16:43:11Z"
    personal = body.get("personal")
    if personal:
        if "phoneNumber" in personal and not _is_phone(personal["phoneNumber"]):
            return (
                "personal.phoneNumber: must be a string of 7 to 15 digits with country code,"
                " no '+' and no leading 0"
            )
        if "birthDate" in personal and not _is_date(personal["birthDate"]):
            return "personal.birthDate: must be a real date as YYYY-MM-DD"
    return None


def _check_link(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "link body must be a JSON object"
    campaign = body.get("campaign")
    if not isinstance(campaign, str) or not campaign:
        return "campaign: required non-empty string"
    iteration = body.get("iteration")
    if iteration is not None and not isinstance(iteration, str):
        return "iteration: must be a string or null"
    return None


def _check_event(body: dict[str, Any]) -> str | None:
    if not _is_timestamp(body.get("at")):
        return "at: required UTC timestamp like 2017-01-02T03:04:05Z"
    name = body.get("name")
    if not isinstance(name, str) or not name:
        return "name: required non-empty string"
    schema = body.get("schema")
    if type(schema) is not int or schema != 1:
        return "schema: must be 1"
    for key, value in body.items():
        if isinstance(value, dict | list):
            return f"{key}: extra event fields must be a string, number, boolean or null"
    return None


def _dotnet_utc(epoch_ns: int) -> str:
    """UTC ISO 8601 with exactly 7 fractional digits and Z, as .NET writes it."""
    secs, rem = divmod(epoch_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rem // 100:07d}Z"


def _route(path: str) -> tuple[str, str, str] | None:
    """(kind, contact id, method) for an /api path, or None when no route matches."""
    segs = path.split("/")
    n = len(segs)
    if n < 4 or n > 5 or segs[0] or segs[1].lower() != "api" or segs[2].lower() != "contact":
        return None
    third = segs[3]
    if n == 4:
        if third.lower() == "_bulk":
            return (_CONTACTS_BULK, "", "PUT")
        return (_CONTACT, unquote(third), "PUT") if third else None
    last = segs[4].lower()
    if third.lower() == "campaigns" and last == "_bulk":
        return (_LINKS_BULK, "", "POST")
    if not third:
        return None
    if last == "campaigns":
        return (_LINK, unquote(third), "POST")
    if last == "events":
        return (_EVENT, unquote(third), "POST")
    return None


def _error(message: str, status: int = 400) -> _Reply:
    return (status, _dumps({"error": True, "message": message}), _NO_HEADERS)


def _parse_json(headers: dict[str, str], body: bytes) -> tuple[Any, str | None]:
    ctype = headers.get("content-type", "")
    mtype, _, params = ctype.partition(";")
    if mtype.strip().lower() != "application/json":
        return None, f"Content-Type must be application/json, got {ctype!r}"
    if params:
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
                "utf-8",
                "utf8",
            ):
                return None, f"charset must be utf-8, got {value.strip()!r}"
    try:
        data = _DECODER.decode(body.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None, f"body is not valid UTF-8 JSON: {exc}"
    if not isinstance(data, dict):
        return None, "body must be a JSON object"
    return data, None


# --- the sandbox ------------------------------------------------------------------------------


class Sandbox:
    """A fake Wiraya API on a loopback port. Use `with Sandbox() as sb:` or start()/stop()."""

    def __init__(
        self,
        api_keys: Iterable[str] = ("sandbox-key",),
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.faults = faults if faults is not None else Faults()
        self.url = ""
        self._api_keys = frozenset(api_keys)
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._life_lock = threading.Lock()
        self._tokens: dict[str, float] = {}
        self._contacts: dict[str, dict[str, Any]] = {}
        self._writes: Counter[str] = Counter()
        self._links: list[tuple[str, str, str | None]] = []
        self._events: list[tuple[str, dict[str, Any]]] = []
        self._requests: list[RequestRecord] = []
        self._holdbacks: list[tuple[float, float]] = []
        self._holdback_until = 0.0
        self._bucket: float | None = None
        self._bucket_at = 0.0
        self._seq = SEQUENCE_START
        self._rng_seed = self.faults.seed
        self._rng = Random(self._rng_seed)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._loop_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopped = False

    # --- life cycle ---

    def _bind(self) -> _Server:
        with self._life_lock:
            if self._stopped:
                raise RuntimeError("this sandbox was stopped; make a new one")
            if self._server is None:
                server = _Server((self._host, self._port), self)
                host, port = str(server.server_address[0]), server.server_address[1]
                shown = f"[{host}]" if ":" in host else host
                self.url = f"http://{shown}:{port}"
                self._server = server
            return self._server

    def start(self) -> Sandbox:
        """Serve in a background daemon thread; returns self."""
        server = self._bind()
        with self._life_lock:
            if self._loop_thread is not None:
                return self
            thread = threading.Thread(
                target=server.serve,
                name=f"wiraya-sandbox-{server.server_address[1]}",
                daemon=True,
            )
            self._thread = self._loop_thread = thread
        thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until KeyboardInterrupt or stop()."""
        server = self._bind()
        with self._life_lock:
            if self._loop_thread is not None:
                raise RuntimeError("this sandbox is already serving")
            self._loop_thread = threading.current_thread()
        try:
            server.serve()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Shut down and close every connection. Idempotent; never waits on hung requests."""
        with self._life_lock:
            server = self._server
            if server is None or self._stopped:
                return
            self._stopped = True
            loop = self._loop_thread
        self._stopping.set()
        me = threading.current_thread()
        server.halt()
        if loop is not None and loop is not me:
            server.loop_done.wait(5.0)
        server.server_close()
        server.close_connections()
        if self._thread is not None and self._thread is not me:
            self._thread.join(timeout=5.0)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget contacts, links, events, requests and rate-limit state; keep faults, tokens."""
        with self._lock:
            self._contacts.clear()
            self._writes.clear()
            self._links.clear()
            self._events.clear()
            self._requests.clear()
            self._holdbacks.clear()
            self._holdback_until = 0.0
            self._bucket = None
            self._rng_seed = self.faults.seed
            self._rng = Random(self._rng_seed)

    # --- what it received ---

    @property
    def contacts(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._contacts)

    @property
    def contact_writes(self) -> Counter[str]:
        with self._lock:
            return Counter(self._writes)

    @property
    def links(self) -> list[tuple[str, str, str | None]]:
        with self._lock:
            return list(self._links)

    @property
    def events(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return list(self._events)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    @property
    def holdbacks(self) -> list[tuple[float, float]]:
        with self._lock:
            return list(self._holdbacks)

    def requests_during_holdback(self, grace: float = 0.05) -> list[RequestRecord]:
        """/api and auth requests that arrived more than `grace` s after a 429 was sent and
        before the window its Retry-After announced had ended."""
        with self._lock:
            records = list(self._requests)
            windows = sorted((s + grace, e) for s, e in self._holdbacks if e > s + grace)
        if not windows:
            return []
        merged: list[tuple[float, float]] = []
        for start, end in windows:
            if merged and start <= merged[-1][1]:
                if end > merged[-1][1]:
                    merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        starts = [s for s, _ in merged]
        out = []
        for rec in records:
            lower = rec.path.lower()
            if not (lower.startswith("/api/") or lower == AUTH_PATH):
                continue
            i = bisect_left(starts, rec.at) - 1  # last window starting strictly before rec.at
            if i >= 0 and rec.at < merged[i][1]:
                out.append(rec)
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-able counts of what the sandbox received."""
        with self._lock:
            by_status = Counter(str(r.status) for r in self._requests)
            out: dict[str, Any] = {
                "contacts": len(self._contacts),
                "contact_writes": sum(self._writes.values()),
                "links": len(self._links),
                "events": len(self._events),
                "requests": len(self._requests),
                "requests_by_status": dict(sorted(by_status.items())),
                "holdbacks": len(self._holdbacks),
            }
        out["holdback_violations"] = len(self.requests_during_holdback())
        return out

    # --- request handling (called from handler threads) ---

    def _next_seq(self) -> str:  # call with self._lock held
        self._seq += 1
        return str(self._seq)

    def _random(self) -> Random:  # call with self._lock held
        seed = self.faults.seed
        if seed != self._rng_seed:
            self._rng_seed = seed
            self._rng = Random(seed)
        return self._rng

    def _draw(self) -> float:
        with self._lock:
            return self._random().random()

    def _record(self, at: float, method: str, path: str, status: int, items: int) -> None:
        rec = RequestRecord(at, method, path, max(status, 0), items)
        with self._lock:
            self._requests.append(rec)

    def _respond(
        self, at: float, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> _Reply:
        """Answer one request (`path` raw, without query): (status, body, extra headers).
        Status _DROP or _HANG asks the handler to drop or to hold the connection."""
        lower = path.lower()
        if lower.startswith(ADMIN_PREFIX):
            return self._admin(method, lower, body)
        if lower.startswith("/api/"):
            reply, items = self._api(method, path, headers, body)
        elif lower == AUTH_PATH:
            reply, items = self._auth(method, headers, body), 0
        else:
            reply, items = (404, _NO_ROUTE, _NO_HEADERS), 0
        self._record(at, method, path, reply[0] if reply[0] > 0 else 0, items)
        return reply

    def _auth(self, method: str, headers: dict[str, str], body: bytes) -> _Reply:
        if method != "POST":
            return (405, _NOT_ALLOWED, [("Allow", "POST")])
        data, problem = _parse_json(headers, body)
        if problem is not None:
            return _error(problem)
        key = data.get("key")
        if not isinstance(key, str):
            return _error("key: required string")
        if key not in self._api_keys:
            return (self.faults.bad_key_status, _NOT_AUTHENTICATED, _NO_HEADERS)
        lifetime = self.faults.token_lifetime
        token = secrets.token_urlsafe(24)
        expires = _dotnet_utc(time.time_ns() + int(lifetime * 1e9))
        with self._lock:
            self._tokens[token] = time.monotonic() + lifetime
        reply = {"authenticated": True, "token": token, "tokenExpires": expires}
        return (200, _dumps(reply), _NO_HEADERS)

    def _rate_limited(self, rate: float, retry_after: int) -> _Reply | None:
        with self._lock:
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
            self._holdbacks.append((now, now + wait))
        body = _dumps({"error": True, "message": "too many requests"})
        return (429, body, [("Retry-After", str(wait))])

    def _api(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[_Reply, int]:
        route = _route(path)
        kind = route[0] if route is not None else ""
        items = 1 if route is not None and kind not in _BULK_KINDS else 0
        f = self.faults

        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        expires = self._tokens.get(token)
        if expires is None or time.monotonic() >= expires:
            return (401, _UNAUTHORIZED, _NO_HEADERS), _count_items(kind, body, items)

        if f.rate_limit is not None:
            limited = self._rate_limited(f.rate_limit, f.retry_after)
            if limited is not None:
                return limited, _count_items(kind, body, items)
        if f.drop_rate and self._draw() < f.drop_rate:
            return (_DROP, b"", _NO_HEADERS), _count_items(kind, body, items)
        if f.error_rate and self._draw() < f.error_rate:
            return (503, _UNAVAILABLE, _NO_HEADERS), _count_items(kind, body, items)
        if f.latency > 0:
            self._stopping.wait(f.latency)
        if f.misbehave:
            return self._misbehave(f.misbehave), _count_items(kind, body, items)

        if route is None or (kind in _BULK_KINDS and not f.bulk_routes):
            return (404, _NO_ROUTE, _NO_HEADERS), 0
        _, cid, want = route
        if method != want:
            return (405, _NOT_ALLOWED, [("Allow", want)]), items
        data, problem = _parse_json(headers, body)
        if problem is not None:
            return _error(problem), items
        if kind == _CONTACT:
            return self._contact(cid, data, f), 1
        if kind == _EVENT:
            return self._event(cid, data, f), 1
        if kind == _LINK:
            return self._link(cid, data, f), 1
        if not data:
            return _error("bulk body must hold at least one item"), 0
        if f.bulk_item_limit is not None and len(data) > f.bulk_item_limit:
            return (400, _ITEM_LIMIT, _NO_HEADERS), len(data)
        if kind == _CONTACTS_BULK:
            return self._contacts_bulk(data, f), len(data)
        return self._links_bulk(data, f), len(data)

    def _misbehave(self, mode: str) -> _Reply:
        if mode == "hang":
            return (_HANG, b"", _NO_HEADERS)
        if mode == "malformed_json":
            return (200, _MALFORMED, _NO_HEADERS)
        if mode == "wrong_types":
            return (200, _WRONG_TYPES, _NO_HEADERS)
        if mode == "huge_body":
            return (200, _huge(), _NO_HEADERS)
        if mode == "redirect":
            body = _dumps({"error": True, "message": "moved"})
            return (307, body, [("Location", REDIRECT_LOCATION)])
        return _error(f"unknown misbehave mode {mode!r}", 500)

    def _contact(self, cid: str, data: dict[str, Any], f: Faults) -> _Reply:
        problem = _check_contact(data)
        if problem is not None:
            return _error(problem)
        if cid in f.reject_ids:
            return _error(f"contact {cid!r} is refused (reject_ids)")
        with self._lock:
            seq = self._next_seq()
            self._contacts[cid] = data
            self._writes[cid] += 1
        return (200, b'{"id":["' + seq.encode() + b'"],' + _OK_EMPTY_FAILURES, _NO_HEADERS)

    def _link(self, cid: str, data: dict[str, Any], f: Faults) -> _Reply:
        problem = _check_link(data)
        if problem is not None:
            return _error(problem)
        with self._lock:
            if f.strict_order and cid not in self._contacts:
                return (404, _CONTACT_NOT_FOUND, _NO_HEADERS)
            seq = self._next_seq()
            self._links.append((cid, data["campaign"], data.get("iteration")))
        return (200, _dumps({"id": seq}), _NO_HEADERS)

    def _event(self, cid: str, data: dict[str, Any], f: Faults) -> _Reply:
        problem = _check_event(data)
        if problem is None and f.event_names is not None and data["name"] not in f.event_names:
            problem = f"name: unknown event name {data['name']!r} (names are case-sensitive)"
        if problem is not None:
            return _error(problem)
        with self._lock:
            if f.strict_order and cid not in self._contacts:
                return (404, _CONTACT_NOT_FOUND, _NO_HEADERS)
            seq = self._next_seq()
            self._events.append((cid, data))
        return (200, b'{"id":["' + seq.encode() + b'"],' + _OK_EMPTY_FAILURES, _NO_HEADERS)

    def _bulk_fate(self, rng: Random, f: Faults) -> dict[str, Any] | None:
        """Random per-item failure (call with the lock held), or None to accept the item."""
        if f.bulk_reject_rate and rng.random() < f.bulk_reject_rate:
            return {"retry": False, "reason": "rejected (bulk_reject_rate)"}
        if f.bulk_retry_rate and rng.random() < f.bulk_retry_rate:
            return {"retry": True}
        return None

    def _contacts_bulk(self, data: dict[str, Any], f: Faults) -> _Reply:
        reject = f.reject_ids
        checked = []
        for cid, body in data.items():
            problem = _check_contact(body)
            if problem is None and cid in reject:
                problem = "refused (reject_ids)"
            checked.append((cid, body, problem))
        ids: list[str | None] = []
        failures: dict[str, Any] = {}
        with self._lock:
            rng = self._random()
            for cid, body, problem in checked:
                fate = {"retry": False, "reason": problem} if problem else self._bulk_fate(rng, f)
                if fate is not None:
                    failures[cid] = fate
                    ids.append(None)
                    continue
                ids.append(self._next_seq())
                self._contacts[cid] = body
                self._writes[cid] += 1
        reply = {"id": ids, "error": bool(failures), "failures": failures}
        return (200, _dumps(reply), _NO_HEADERS)

    def _links_bulk(self, data: dict[str, Any], f: Faults) -> _Reply:
        checked = [(cid, body, _check_link(body)) for cid, body in data.items()]
        ids: list[str | None] = []
        failures: dict[str, Any] = {}
        with self._lock:
            rng = self._random()
            for cid, body, problem in checked:
                if problem is None and f.strict_order and cid not in self._contacts:
                    problem = "contact not found"
                fate = {"retry": False, "reason": problem} if problem else self._bulk_fate(rng, f)
                if fate is not None:
                    failures[cid] = fate
                    ids.append(None)
                    continue
                ids.append(self._next_seq())
                self._links.append((cid, body["campaign"], body.get("iteration")))
        reply = {"id": ids, "error": bool(failures), "failures": failures}
        return (200, _dumps(reply), _NO_HEADERS)

    # --- admin routes: no auth, no faults, not recorded ---

    def _admin(self, method: str, lower: str, body: bytes) -> _Reply:
        name = lower[len(ADMIN_PREFIX) :]
        getters: dict[str, Callable[[], Any]] = {
            "summary": self.summary,
            "contacts": lambda: self.contacts,
            "events": lambda: [{"contactId": c, "event": e} for c, e in self.events],
            "links": lambda: [
                {"contactId": c, "campaign": k, "iteration": i} for c, k, i in self.links
            ],
            "faults": lambda: _faults_json(self.faults),
        }
        if name in getters and method == "GET":
            return (200, _dumps(getters[name]()), _NO_HEADERS)
        if name == "faults" and method == "POST":
            return self._set_faults(body)
        if name == "reset" and method == "POST":
            self.reset()
            return (200, _dumps({"reset": True}), _NO_HEADERS)
        if name in getters or name == "reset":
            allow = "GET, POST" if name == "faults" else ("POST" if name == "reset" else "GET")
            return (405, _NOT_ALLOWED, [("Allow", allow)])
        return (404, _NO_ROUTE, _NO_HEADERS)

    def _set_faults(self, body: bytes) -> _Reply:
        try:
            changes = _DECODER.decode(body.decode("utf-8")) if body.strip() else {}
        except ValueError as exc:
            return _error(f"body is not valid JSON: {exc}")
        if not isinstance(changes, dict):
            return _error("body must be a JSON object of Faults fields")
        values = {}
        try:
            for name, value in changes.items():
                if name not in _FAULT_NAMES:
                    raise ValueError(f"{name}: no such fault")
                values[name] = _coerce_fault(name, value)
        except ValueError as exc:
            return _error(str(exc))
        for name, value in values.items():
            setattr(self.faults, name, value)
        return (200, _dumps(_faults_json(self.faults)), _NO_HEADERS)


def _count_items(kind: str, body: bytes, single: int) -> int:
    """Items in a request that was refused before its body was read as a route body."""
    if kind not in _BULK_KINDS:
        return single
    try:
        data = json.loads(body)
    except ValueError:
        return 0
    return len(data) if isinstance(data, dict) else 0


# --- HTTP plumbing ------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.loop_done = threading.Event()
        self._halted = False
        self._wake_r, self._wake_w = socket.socketpair()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        try:
            super().__init__(address, _Handler)
        except BaseException:
            self._wake_r.close()
            self._wake_w.close()
            raise

    def serve(self) -> None:
        """Accept connections until halt(). Unlike serve_forever() it wakes up at once."""
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.socket, selectors.EVENT_READ, True)
                selector.register(self._wake_r, selectors.EVENT_READ, False)
                while not self._halted:
                    for key, _ in selector.select():
                        if key.data and not self._halted:
                            self._accept()
        finally:
            self.loop_done.set()

    def _accept(self) -> None:
        try:
            request, client_address = self.get_request()
        except OSError:
            return
        try:
            self.process_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)

    def halt(self) -> None:
        self._halted = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def server_bind(self) -> None:
        # HTTPServer.server_bind would call socket.getfqdn(), which may wait on DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # the client went away: nothing worth printing
        super().handle_error(request, client_address)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self.connections_lock:
            if not add:
                self.connections.discard(conn)
            elif self._halted:  # accepted just as the sandbox stopped: close it at once
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            else:
                self.connections.add(conn)

    def close_connections(self) -> None:
        with self.connections_lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self._server = cast(_Server, self.server)
        self._server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _write(self, status: int, body: bytes, extra: _Headers, length: int = -1) -> None:
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: {_JSON_TYPE}\r\n"
            f"Content-Length: {len(body) if length < 0 else length}\r\n"
        ]
        for name, value in extra:
            head.append(f"{name}: {value}\r\n")
        if self.close_connection:
            head.append("Connection: close\r\n")
        head.append("\r\n")
        data = "".join(head).encode("latin-1")
        if len(body) > 65536:
            self.wfile.write(data)
            self.wfile.write(body)
        else:
            self.wfile.write(data + body)

    def _fail(self, status: int, message: str) -> None:
        self.close_connection = True
        self._write(status, _dumps({"error": True, "message": message}), _NO_HEADERS)

    def handle_one_request(self) -> None:
        self.close_connection = True
        rfile = self.rfile
        line = rfile.readline(MAX_LINE + 1)
        if not line:
            return
        at = time.monotonic()
        if len(line) > MAX_LINE:
            self._fail(414, "request line too long")
            return
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self._fail(400, "bad request line")
            return
        method, target, version = parts
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            hline = rfile.readline(MAX_LINE + 1)
            if hline in (b"\r\n", b"\n", b""):
                break
            name, sep, value = hline.decode("latin-1").partition(":")
            if not sep:
                self._fail(400, "bad header line")
                return
            headers[name.strip().lower()] = value.strip()
        else:
            self._fail(431, "too many headers")
            return
        conn = headers.get("connection", "").lower()
        keep_alive = "close" not in conn if version == "HTTP/1.1" else "keep-alive" in conn
        if headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._read_chunked()
            if body is None:
                return
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                self._fail(400, "bad Content-Length")
                return
            if length < 0 or length > MAX_REQUEST_BODY:
                self._fail(413, "body too large")
                return
            body = rfile.read(length) if length else b""
            if len(body) != length:
                return  # the client went away mid-body
        if target.startswith(("http://", "https://")):  # absolute-form request target
            slash = target.find("/", target.find("//") + 2)
            target = target[slash:] if slash >= 0 else "/"
        path = target.split("?", 1)[0]

        sandbox = self._server.sandbox
        try:
            status, payload, extra = sandbox._respond(at, method, path, headers, body)
        except Exception as exc:
            self._fail(500, f"sandbox bug: {exc!r}")
            raise
        if status == _DROP:
            return
        if status == _HANG:
            sandbox._stopping.wait()
            return
        self.close_connection = not keep_alive
        self._write(status, b"" if method == "HEAD" else payload, extra, len(payload))

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        rfile = self.rfile
        while True:
            line = rfile.readline(MAX_LINE + 1)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._fail(400, "bad chunk size")
                return None
            if size == 0:
                while rfile.readline(MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > MAX_REQUEST_BODY:
                self._fail(413, "body too large")
                return None
            chunk = rfile.read(size)
            if len(chunk) != size:
                return None
            parts.append(chunk)
            rfile.readline(MAX_LINE + 1)
