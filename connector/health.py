"""What the daemon tells about itself: liveness, readiness and metrics, over HTTP.

    /livez, /healthz  liveness: the process answers and its event loop turns. 200, or 503
                      while stopping or when the loop has not turned for LOOP_STALL seconds.
                      Failing passes do not fail it: restarting the process would not help.
    /readyz           readiness: 200 when the connector is doing its job, else 503 with one
                      reason per problem. Not ready when a stream's last
                      `daemon.unready_after_failures` passes (default 2) failed, at once when a
                      pass failed in a way only a config change fixes (the API key refused),
                      when the state file cannot be written or was lost, or while a Retry-After
                      hold is longer than `wiraya.max_hold`.
    /metrics          Prometheus text.

A stream that has not finished a pass yet does not make the daemon unready: a first pass may
take hours on a large table.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connector import metrics

LOOP_STALL = 60.0  # seconds without a turn of the event loop before liveness fails


@dataclass(frozen=True)
class PassOutcome:
    """What the daemon keeps of a stream's pass."""

    outcome: str  # ok, stopped, failed
    error: str | None = None
    fatal: bool = False  # only a config change fixes it (exit code 2: the key refused)
    read: int = 0
    sent: int = 0


class Health:
    """The daemon's condition, written by the event loop and read by the endpoint's threads."""

    def __init__(self, streams: list[str], unready_after: int = 2,
                 max_hold: float = 300.0) -> None:
        self.started = time.time()
        self.stopping = False
        self.unready_after = unready_after
        self.max_hold = max_hold
        self.hold: Callable[[], float] = lambda: 0.0  # seconds left of a Retry-After hold
        self.state_problem: str | None = None
        self._beat = time.monotonic()
        self._last: dict[str, dict[str, Any]] = {name: {"outcome": "pending"}
                                                 for name in streams}
        self._failures = dict.fromkeys(streams, 0)
        self._fatal: dict[str, str | None] = dict.fromkeys(streams)
        self._lock = threading.Lock()
        for name in streams:
            metrics.CONSECUTIVE_FAILURES.labels(name).set(0)

    def beat(self) -> None:
        """Called by the event loop every second: proof that it turns."""
        self._beat = time.monotonic()

    def record(self, stream: str, seen: PassOutcome) -> None:
        with self._lock:
            self._last[stream] = {
                "outcome": seen.outcome, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "read": seen.read, "sent": seen.sent, "error": seen.error}
            if seen.outcome == "failed":
                self._failures[stream] += 1
                self._fatal[stream] = seen.error if seen.fatal else None
            elif seen.outcome == "ok":
                self._failures[stream] = 0
                self._fatal[stream] = None
            metrics.CONSECUTIVE_FAILURES.labels(stream).set(self._failures[stream])

    # -- what the endpoints answer --------------------------------------------------------

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        quiet = time.monotonic() - self._beat
        status = "stopping" if self.stopping else "stalled" if quiet > LOOP_STALL else "ok"
        with self._lock:
            streams = {name: dict(last) for name, last in self._last.items()}
        return status == "ok", {"status": status,
                                "uptime_seconds": round(time.time() - self.started),
                                "loop_seconds_since_turn": round(quiet, 1),
                                "streams": streams}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        reasons: list[str] = []
        streams: dict[str, Any] = {}
        with self._lock:
            for name, last in self._last.items():
                reason = self._stream_reason(name)
                streams[name] = {"ready": reason is None, "reason": reason,
                                 "outcome": last["outcome"],
                                 "consecutive_failures": self._failures[name]}
                if reason:
                    reasons.append(f"{name}: {reason}")
        hold = self.hold()
        metrics.API_HOLD.set(hold)
        api_reason = None
        if hold > self.max_hold:
            api_reason = (f"Wiraya asked every call to wait {hold:.0f} s more (Retry-After), "
                          f"longer than wiraya.max_hold ({self.max_hold:g} s)")
            reasons.append(f"api: {api_reason}")
        if self.state_problem:
            reasons.append(f"state: {self.state_problem}")
        if self.stopping:
            reasons.append("daemon: stopping")
        ready = not reasons
        metrics.READY.set(1 if ready else 0)
        return ready, {
            "ready": ready, "reasons": reasons, "streams": streams,
            "api": {"ready": api_reason is None, "reason": api_reason,
                    "hold_seconds": round(hold, 1), "max_hold_seconds": self.max_hold},
            "state": {"ready": self.state_problem is None, "reason": self.state_problem}}

    def _stream_reason(self, name: str) -> str | None:  # call with the lock held
        failures = self._failures[name]
        error = self._last[name].get("error")
        if self._fatal[name]:
            return f"the last pass failed and needs a config change: {self._fatal[name]}"
        if failures >= self.unready_after:
            return f"the last {failures} passes failed: {error}"
        return None


class Endpoint:
    """`/livez`, `/healthz`, `/readyz` and `/metrics` on one port, served by threads."""

    def __init__(self, address: tuple[str, int], health: Health) -> None:
        self.server = ThreadingHTTPServer(address, _handler(health))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="health",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(health: Health) -> type[BaseHTTPRequestHandler]:
    answers: dict[str, Callable[[], tuple[bool, dict[str, Any]]]] = {
        "/livez": health.liveness, "/healthz": health.liveness, "/readyz": health.readiness}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                health.readiness()  # refreshes the gauges readiness is made of
                body, kind, status = generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST, 200
            elif path in answers:
                good, document = answers[path]()
                body, kind, status = json.dumps(document).encode(), "application/json", \
                    200 if good else 503
            else:
                body, kind, status = b"not found\n", "text/plain", 404
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
