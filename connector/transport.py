"""The HTTP edge: one exchange in, one reply (or a `TransportError`) out.

The client depends only on the `Transport` protocol, so tests can hand it scripted replies
(httpx's injectable-transport seam). The default, `lanes.Lanes`, keeps `concurrency`
keep-alive connections through httpcore and goes through the proxy the environment names;
it is made when the first request goes out (`OnFirstUse`), so that a pass with nothing to
send never imports httpcore.

Every library error is translated, in `lanes.translate` only, into `TransportError`, which
says whether the request may have reached the server:
- certainly not (`ambiguous=False`): the connection, the pool, the name lookup or the
  proxy's CONNECT failed; nothing of the request left;
- maybe (`ambiguous=True`): the request went out and no whole reply came (read timeout,
  reset or close after sending, an incomplete reply). Wiraya may have acted on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

MAX_REPLY_BYTES = 1 << 20  # a reply larger than this is not read (hostile or broken server)

Ready = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    content: bytes


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; only the few the client reads
    body: bytes
    too_large: bool = False  # the body was over MAX_REPLY_BYTES and was not read


class TransportError(Exception):
    """No reply. `ambiguous`: the request went out, so the server may have acted on it."""

    def __init__(self, message: str, *, ambiguous: bool) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


class Transport(Protocol):
    async def exchange(self, request: Request, ready: Ready) -> Response:
        """Send `request` and read the reply. `ready` is awaited just before sending (when a
        connection is in hand), so nothing waits between the pacer's "go" and the send."""
        ...

    async def aclose(self) -> None: ...


WANTED_HEADERS = frozenset({"content-length", "content-type", "retry-after", "location"})


class OnFirstUse:
    """A transport made by `make` when the first request goes out. httpcore and its
    asyncio backend cost about 45 ms to import, a third of what a short `connector sync`
    that finds nothing to send does besides importing SQLAlchemy and pydantic."""

    def __init__(self, make: Callable[[], Transport]) -> None:
        self._make = make
        self._made: Transport | None = None

    async def exchange(self, request: Request, ready: Ready) -> Response:
        if self._made is None:
            self._made = self._make()
        return await self._made.exchange(request, ready)

    async def aclose(self) -> None:
        if self._made is not None:
            await self._made.aclose()
