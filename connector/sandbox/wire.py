"""What goes over the wire: paths and routes, JSON in and out, and the canned reply bodies."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any, NamedTuple
from urllib.parse import unquote

AUTH_PATH = "/auth/token/apikey"
ADMIN_PREFIX = "/_sandbox/"
REDIRECT_LOCATION = "http://203.0.113.1/elsewhere"
HUGE_BODY_BYTES = 20 * 1024 * 1024

# Statuses with special handling instead of a reply.
DROP = -1  # close the connection without any reply
HANG = -2  # hold the connection, never answer, until the server stops

CONTACT = "contact"
CONTACTS_BULK = "contacts_bulk"
LINK = "link"
LINKS_BULK = "links_bulk"
EVENT = "event"
BULK_KINDS = frozenset({CONTACTS_BULK, LINKS_BULK})

JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
Headers = list[tuple[str, str]]
Reply = tuple[int, bytes, Headers]
NO_HEADERS: Headers = []
REASONS = {code: phrase for code, (phrase, _) in BaseHTTPRequestHandler.responses.items()}


class Route(NamedTuple):
    kind: str  # one of CONTACT, CONTACTS_BULK, LINK, LINKS_BULK, EVENT
    contact_id: str  # "" for the bulk routes
    method: str  # the one method the route takes


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def dumps(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode()


OK_EMPTY_FAILURES = b'"error":false,"failures":{}}'
UNAUTHORIZED = dumps({"error": "unauthorized"})
NO_ROUTE = dumps({"error": "no such route"})
NOT_ALLOWED = dumps({"error": "method not allowed"})
UNAVAILABLE = dumps({"error": True})
CONTACT_NOT_FOUND = dumps({"error": "contact not found"})
ITEM_LIMIT = dumps({"bulkItemLimitExceeded": True})
NOT_AUTHENTICATED = dumps({"authenticated": False})
MALFORMED = b'{"id": ["1"], "error": fals'
WRONG_TYPES = dumps({"id": 5, "error": "yes", "failures": []})
# What a reverse proxy shows while the service behind it is down for maintenance.
MAINTENANCE_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Down for maintenance</title></head>\n"
    b"<body><h1>We&rsquo;ll be back soon</h1>\n"
    b"<p>The service is down for scheduled maintenance. Please try again later.</p>\n"
    b"</body></html>\n"
)
_huge_body: bytes | None = None


def huge() -> bytes:
    """A 20 MiB JSON reply, built once on first use."""
    global _huge_body
    if _huge_body is None:
        head = b'{"id":["1"],"error":false,"failures":{},"padding":"'
        _huge_body = head + b"x" * (HUGE_BODY_BYTES - len(head) - 2) + b'"}'
    return _huge_body


def error(message: str, status: int = 400) -> Reply:
    return (status, dumps({"error": True, "message": message}), NO_HEADERS)


def ok_ids(seq: str) -> bytes:
    """The reply to a single contact upsert or event."""
    return b'{"id":["' + seq.encode() + b'"],' + OK_EMPTY_FAILURES


def route(path: str) -> Route | None:
    """The route of an /api path, or None when no route matches."""
    segs = path.split("/")
    n = len(segs)
    if n < 4 or n > 5 or segs[0] or segs[1].lower() != "api" or segs[2].lower() != "contact":
        return None
    third = segs[3]
    if n == 4:
        if third.lower() == "_bulk":
            return Route(CONTACTS_BULK, "", "PUT")
        return Route(CONTACT, unquote(third), "PUT") if third else None
    last = segs[4].lower()
    if third.lower() == "campaigns" and last == "_bulk":
        return Route(LINKS_BULK, "", "POST")
    if not third:
        return None
    if last == "campaigns":
        return Route(LINK, unquote(third), "POST")
    if last == "events":
        return Route(EVENT, unquote(third), "POST")
    return None


def _charset_problem(params: str) -> str | None:
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return f"charset must be utf-8, got {value.strip()!r}"
    return None


def parse_json(headers: dict[str, str], body: bytes) -> tuple[Any, str | None]:
    """(JSON object, None), or (None, why the body is not a JSON object the API takes)."""
    ctype = headers.get("content-type", "")
    mtype, _, params = ctype.partition(";")
    if mtype.strip().lower() != "application/json":
        return None, f"Content-Type must be application/json, got {ctype!r}"
    problem = _charset_problem(params) if params else None
    if problem is not None:
        return None, problem
    try:
        data = DECODER.decode(body.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None, f"body is not valid UTF-8 JSON: {exc}"
    if not isinstance(data, dict):
        return None, "body must be a JSON object"
    return data, None


def count_items(kind: str, body: bytes, single: int) -> int:
    """Items in a request that was refused before its body was read as a route body."""
    if kind not in BULK_KINDS:
        return single
    try:
        data = json.loads(body)
    except ValueError:
        return 0
    return len(data) if isinstance(data, dict) else 0
