"""The loopback HTTP server the sandbox listens with."""

from __future__ import annotations

import contextlib
import selectors
import socket
import socketserver
import sys
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from connector.sandbox.api import Api
from connector.sandbox.handler import Handler


class Listener(ThreadingHTTPServer):
    """The listening socket: accepts connections, one handler thread each, and closes them all
    at once when the sandbox stops."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: Api) -> None:
        self.api = api
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.loop_done = threading.Event()
        self._halted = False
        self._wake_r, self._wake_w = socket.socketpair()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        try:
            super().__init__(address, Handler)
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
