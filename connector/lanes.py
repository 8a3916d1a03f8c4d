"""The default transport: keep-alive lanes through httpcore, the proxy the environment
names, and the one place where httpcore's errors become `TransportError` (transport.py)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpcore

from connector.proxies import Proxy
from connector.transport import (
    MAX_REPLY_BYTES,
    WANTED_HEADERS,
    Ready,
    Request,
    Response,
    TransportError,
)

# Failures before any byte of the request left: safe to send again.
_NOT_SENT: tuple[type[Exception], ...] = (
    httpcore.ConnectError, httpcore.ConnectTimeout, httpcore.PoolTimeout,
    httpcore.ProxyError, httpcore.UnsupportedProtocol, httpcore.LocalProtocolError)


def translate(exc: Exception) -> TransportError:
    """The one place where library errors become ours."""
    name = type(exc).__name__
    if isinstance(exc, _NOT_SENT):
        return TransportError(f"could not connect ({name}); nothing was sent", ambiguous=False)
    if isinstance(exc, httpcore.TimeoutException):
        return TransportError("no reply within the timeout (the request went out: it may "
                              "have arrived)", ambiguous=True)
    return TransportError(f"the connection failed after sending ({name}): it may have "
                          "arrived", ambiguous=True)


class Lanes:
    """`concurrency` lanes, each one keep-alive connection (through the proxy, if any).

    httpcore (httpx's own transport) is used directly, one single-connection pool per lane:
    a shared pool looks at every connection on every request, which on a 2-core machine cost
    more than half of the client's time at concurrency 16 (bench/delivery.py).
    """

    def __init__(self, count: int, timeout: float, proxy: Proxy | None = None,
                 tls: bool = True) -> None:
        # Loading the trusted certificates costs tens of milliseconds: only when some hop
        # speaks TLS (never for a plain-http sandbox on 127.0.0.1).
        context = _tls_context() if tls else None
        self._timeouts = {"timeout": {"connect": timeout, "read": timeout, "write": timeout,
                                      "pool": timeout}}
        self._all = [_lane(context, proxy) for _ in range(count)]
        self._free: asyncio.Queue[httpcore.AsyncConnectionPool] = asyncio.Queue()
        for lane in self._all:
            self._free.put_nowait(lane)

    @asynccontextmanager
    async def _lane(self) -> AsyncIterator[httpcore.AsyncConnectionPool]:
        lane = await self._free.get()
        try:
            yield lane
        finally:
            self._free.put_nowait(lane)

    async def exchange(self, request: Request, ready: Ready) -> Response:
        async with self._lane() as lane:
            await ready()
            try:
                async with lane.stream(request.method, request.url,
                                       headers=list(request.headers), content=request.content,
                                       extensions=self._timeouts) as response:
                    headers = {name.decode("latin-1").lower(): value.decode("latin-1")
                               for name, value in response.headers
                               if name.decode("latin-1").lower() in WANTED_HEADERS}
                    body = await _read_capped(response, headers.get("content-length"))
            except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException,
                    httpcore.ProxyError, httpcore.UnsupportedProtocol, OSError) as exc:
                raise translate(exc) from None
        if body is None:
            return Response(response.status, headers, b"", too_large=True)
        return Response(response.status, headers, body)

    async def aclose(self) -> None:
        for lane in self._all:
            # A lane that never connected has nothing to close; closing it would load
            # anyio's backend, a cost a pass that sent nothing should not pay.
            if lane.connections:
                await lane.aclose()


def _tls_context() -> ssl.SSLContext:
    import httpx  # its context honours SSL_CERT_FILE / SSL_CERT_DIR, as operators expect

    context = httpx.create_ssl_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _lane(context: ssl.SSLContext | None, proxy: Proxy | None
          ) -> httpcore.AsyncConnectionPool:
    if proxy is None:
        return httpcore.AsyncConnectionPool(ssl_context=context, max_connections=1,
                                            max_keepalive_connections=1, keepalive_expiry=60.0)
    return httpcore.AsyncHTTPProxy(proxy_url=proxy.url, proxy_auth=proxy.auth,
                                   ssl_context=context,
                                   proxy_ssl_context=context if proxy.url.startswith(
                                       "https:") else None,
                                   max_connections=1,
                                   max_keepalive_connections=1, keepalive_expiry=60.0)


async def _read_capped(response: httpcore.Response, declared: str | None) -> bytes | None:
    """The body, or None when it is larger than MAX_REPLY_BYTES (then it is not read)."""
    if declared and declared.isdigit() and int(declared) > MAX_REPLY_BYTES:
        return None
    chunks = []
    size = 0
    async for chunk in response.aiter_stream():
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
