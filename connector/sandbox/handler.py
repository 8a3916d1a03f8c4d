"""HTTP/1.1 on one connection: read a request, hand it to the Api, write the reply.

A small parser of its own rather than BaseHTTPRequestHandler's: it is faster for many small
calls, and it answers bad input with the sandbox's JSON errors."""

from __future__ import annotations

import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, NamedTuple, Protocol, cast

from connector.sandbox.api import Api
from connector.sandbox.wire import DROP, HANG, JSON_TYPE, NO_HEADERS, REASONS, Headers, dumps

MAX_REQUEST_BODY = 64 * 1024 * 1024
MAX_LINE = 65536
MAX_HEADERS = 100


class _Serving(Protocol):
    """What the handler needs of the server that made it."""

    api: Api

    def track(self, conn: socket.socket, add: bool) -> None: ...


class _Head(NamedTuple):
    at: float  # time.monotonic() when the request line was read
    method: str
    target: str
    keep_alive: bool
    headers: dict[str, str]  # names lower-cased


def _path(target: str) -> str:
    """The path of a request target, without query; an absolute-form target loses its host."""
    if target.startswith(("http://", "https://")):
        slash = target.find("/", target.find("//") + 2)
        target = target[slash:] if slash >= 0 else "/"
    return target.split("?", 1)[0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self._server = cast(_Serving, self.server)
        self._server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # --- writing ---

    def _write(self, status: int, body: bytes, extra: Headers, length: int = -1) -> None:
        head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"]
        if not any(name.lower() == "content-type" for name, _ in extra):
            head.append(f"Content-Type: {JSON_TYPE}\r\n")
        head.append(f"Content-Length: {len(body) if length < 0 else length}\r\n")
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
        self._write(status, dumps({"error": True, "message": message}), NO_HEADERS)

    # --- one request ---

    def handle_one_request(self) -> None:
        self.close_connection = True
        head = self._read_head()
        if head is None:
            return
        body = self._read_body(head.headers)
        if body is None:
            return
        api = self._server.api
        try:
            status, payload, extra = api.respond(
                head.at, head.method, _path(head.target), head.headers, body
            )
        except Exception as exc:
            self._fail(500, f"sandbox bug: {exc!r}")
            raise
        if status == DROP:
            return
        if status == HANG:
            api.stopping.wait()
            return
        self.close_connection = not head.keep_alive
        self._write(status, b"" if head.method == "HEAD" else payload, extra, len(payload))

    def _read_head(self) -> _Head | None:
        """The request line and headers, or None (after answering) when they are bad."""
        line = self.rfile.readline(MAX_LINE + 1)
        if not line:
            return None
        at = time.monotonic()
        if len(line) > MAX_LINE:
            self._fail(414, "request line too long")
            return None
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self._fail(400, "bad request line")
            return None
        method, target, version = parts
        headers = self._read_headers()
        if headers is None:
            return None
        conn = headers.get("connection", "").lower()
        keep_alive = "close" not in conn if version == "HTTP/1.1" else "keep-alive" in conn
        return _Head(at, method, target, keep_alive, headers)

    def _read_headers(self) -> dict[str, str] | None:
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            hline = self.rfile.readline(MAX_LINE + 1)
            if hline in (b"\r\n", b"\n", b""):
                return headers
            name, sep, value = hline.decode("latin-1").partition(":")
            if not sep:
                self._fail(400, "bad header line")
                return None
            headers[name.strip().lower()] = value.strip()
        self._fail(431, "too many headers")
        return None

    def _read_body(self, headers: dict[str, str]) -> bytes | None:
        """The body, or None when it is bad (answered) or the client went away mid-body."""
        if headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            self._fail(400, "bad Content-Length")
            return None
        if length < 0 or length > MAX_REQUEST_BODY:
            self._fail(413, "body too large")
            return None
        body = self.rfile.read(length) if length else b""
        return body if len(body) == length else None

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
