"""What the sandbox received and applied, kept in memory for assertions."""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from typing import Any

from connector.sandbox.wire import AUTH_PATH

SEQUENCE_START = 4_958_000_000_000


@dataclass(frozen=True)
class RequestRecord:
    """One request the sandbox received (admin routes are never recorded)."""

    at: float  # time.monotonic() when the request line was read
    method: str
    path: str  # as sent (not lower-cased), without query
    status: int  # what was answered (0 if dropped, hung, or closed after applying)
    items: int  # items in a bulk body, 1 for single calls, 0 for auth and others
    # True when the call took effect: a contact stored, a link or an event recorded, at least
    # one bulk item accepted (whether or not a reply then reached the client).
    applied: bool = False


def _merge(windows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


class Received:
    """The sandbox's memory. Thread-safe: every change and every copy holds `lock`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.contacts: dict[str, dict[str, Any]] = {}
        self.writes: Counter[str] = Counter()
        self.links: list[tuple[str, str, str | None]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.requests: list[RequestRecord] = []
        self.holdbacks: list[tuple[float, float]] = []
        self._seq = SEQUENCE_START
        # Wall-clock arrival times (time.time()), for freshness measurements: the last write
        # of each contact, and one per applied event (in the order of `events`).
        self.contact_arrivals: dict[str, float] = {}
        self.event_arrivals: list[float] = []

    def clear(self) -> None:  # call with lock held
        self.contacts.clear()
        self.writes.clear()
        self.links.clear()
        self.events.clear()
        self.requests.clear()
        self.holdbacks.clear()
        self.contact_arrivals.clear()
        self.event_arrivals.clear()

    def next_seq(self) -> str:  # call with lock held
        self._seq += 1
        return str(self._seq)

    # --- applying (call with lock held) ---

    def store_contact(self, cid: str, body: dict[str, Any]) -> str:
        self.contacts[cid] = body
        self.writes[cid] += 1
        self.contact_arrivals[cid] = time.time()
        return self.next_seq()

    def add_link(self, cid: str, body: dict[str, Any]) -> str:
        self.links.append((cid, body["campaign"], body.get("iteration")))
        return self.next_seq()

    def add_event(self, cid: str, body: dict[str, Any]) -> str:
        # Every applied event is kept, duplicates too: tests count events per order.
        self.events.append((cid, body))
        self.event_arrivals.append(time.time())
        return self.next_seq()

    def record(self, rec: RequestRecord) -> None:
        with self.lock:
            self.requests.append(rec)

    # --- reading ---

    def requests_during_holdback(self, grace: float = 0.05) -> list[RequestRecord]:
        """/api and auth requests that arrived more than `grace` s after a 429 was sent and
        before the window its Retry-After announced had ended."""
        with self.lock:
            records = list(self.requests)
            windows = [(s + grace, e) for s, e in self.holdbacks if e > s + grace]
        if not windows:
            return []
        merged = _merge(windows)
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
        with self.lock:
            by_status = Counter(str(r.status) for r in self.requests)
            out: dict[str, Any] = {
                "contacts": len(self.contacts),
                "contact_writes": sum(self.writes.values()),
                "links": len(self.links),
                "events": len(self.events),
                "requests": len(self.requests),
                "requests_by_status": dict(sorted(by_status.items())),
                "holdbacks": len(self.holdbacks),
            }
        out["holdback_violations"] = len(self.requests_during_holdback())
        return out
