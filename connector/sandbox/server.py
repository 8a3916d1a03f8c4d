"""The Sandbox: a fake Wiraya API serving on a loopback port, and what it received."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from connector.sandbox.api import Api
from connector.sandbox.faults import Faults
from connector.sandbox.listener import Listener
from connector.sandbox.records import RequestRecord


class Sandbox:
    """A fake Wiraya API on a loopback port. Use `with Sandbox() as sb:` or start()/stop()."""

    def __init__(
        self,
        api_keys: Iterable[str] = ("sandbox-key",),
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.url = ""
        self._api = Api(frozenset(api_keys), faults if faults is not None else Faults())
        self._host = host
        self._port = port
        self._life_lock = threading.Lock()
        self._server: Listener | None = None
        self._thread: threading.Thread | None = None
        self._loop_thread: threading.Thread | None = None
        self._stopped = False

    @property
    def faults(self) -> Faults:
        """The fault knobs in force; change their fields or assign a new Faults."""
        return self._api.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._api.faults = faults

    # --- life cycle ---

    def _bind(self) -> Listener:
        with self._life_lock:
            if self._stopped:
                raise RuntimeError("this sandbox was stopped; make a new one")
            if self._server is None:
                server = Listener((self._host, self._port), self._api)
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
        self._api.stopping.set()
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
        self._api.reset()

    # --- what it received (copies) ---

    @property
    def contacts(self) -> dict[str, dict[str, Any]]:
        with self._api.received.lock:
            return dict(self._api.received.contacts)

    @property
    def contact_writes(self) -> Counter[str]:
        with self._api.received.lock:
            return Counter(self._api.received.writes)

    @property
    def links(self) -> list[tuple[str, str, str | None]]:
        with self._api.received.lock:
            return list(self._api.received.links)

    @property
    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """Every applied event in arrival order, duplicates included."""
        with self._api.received.lock:
            return list(self._api.received.events)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._api.received.lock:
            return list(self._api.received.requests)

    @property
    def holdbacks(self) -> list[tuple[float, float]]:
        with self._api.received.lock:
            return list(self._api.received.holdbacks)

    def requests_during_holdback(self, grace: float = 0.05) -> list[RequestRecord]:
        """/api and auth requests that arrived more than `grace` s after a 429 was sent and
        before the window its Retry-After announced had ended."""
        return self._api.received.requests_during_holdback(grace)

    def summary(self) -> dict[str, Any]:
        """JSON-able counts of what the sandbox received."""
        return self._api.received.summary()
