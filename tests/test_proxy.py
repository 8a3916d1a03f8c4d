"""Proxies: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY, through a real proxy process.

The proxy is proxy.py (PyPI), started by the test on a free 127.0.0.1 port with basic auth;
its access log shows which requests went through it. The HTTPS case tunnels (CONNECT) to a
small TLS server whose certificate comes from a throwaway CA (trustme), trusted through
SSL_CERT_FILE as an operator would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from connector import config, logs
from connector.errors import ApiUnavailable, ConfigError
from connector.lanes import Lanes
from connector.proxies import proxy_for
from connector.sandbox import Sandbox
from connector.wiraya import Wiraya

proxy_module = pytest.importorskip("proxy", reason="proxy.py (pip install proxy.py) is needed")
trustme = pytest.importorskip("trustme", reason="trustme (pip install trustme) is needed")

KEY = "proxy-test-key-5d1e"
USER, PASSWORD = "wiraya", "p@ss-9f3k"
PROXY_ENV_NAMES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "https_proxy",
                   "http_proxy", "all_proxy", "no_proxy")


# -- which proxy, from the environment (no network) -----------------------------------

@pytest.mark.parametrize(("url", "env", "expected"), [
    ("https://api.wiraya.ai", {"HTTPS_PROXY": "http://gw:3128"}, "http://gw:3128"),
    ("https://api.wiraya.ai", {"HTTP_PROXY": "http://gw:3128"}, None),  # https needs HTTPS_
    ("http://api.local", {"HTTP_PROXY": "gw:3128"}, "http://gw:3128"),  # no scheme: http
    ("https://api.wiraya.ai", {"ALL_PROXY": "http://all:1"}, "http://all:1"),
    ("https://api.wiraya.ai", {"ALL_PROXY": "http://all:1", "HTTPS_PROXY": "http://s:2"},
     "http://s:2"),
    ("https://api.wiraya.ai", {"https_proxy": "http://low:2", "HTTPS_PROXY": "http://upper:1"},
     "http://low:2"),  # lower-case wins, as in urllib and curl, whatever the order
    ("https://api.wiraya.ai", {"HTTPS_PROXY": "http://gw:1", "NO_PROXY": "api.wiraya.ai"}, None),
    ("https://api.wiraya.ai", {"HTTPS_PROXY": "http://gw:1", "NO_PROXY": "x.org,.wiraya.ai"},
     None),
    ("https://api.wiraya.ai", {"HTTPS_PROXY": "http://gw:1", "no_proxy": "*"}, None),
    ("https://api.wiraya.ai", {"HTTPS_PROXY": "http://gw:1", "NO_PROXY": "wiraya.com"},
     "http://gw:1"),
    ("http://127.0.0.1:8080", {"HTTP_PROXY": "http://gw:1"}, None),  # loopback: never
    ("http://localhost:8080", {"ALL_PROXY": "http://gw:1"}, None),
    ("http://[::1]:8080", {"HTTP_PROXY": "http://gw:1"}, None),
])
def test_the_proxy_is_chosen_as_the_environment_says(url: str, env: dict[str, str],
                                                     expected: str | None) -> None:
    proxy = proxy_for(url, env)
    assert (proxy.url if proxy else None) == expected


def test_credentials_are_taken_out_of_the_proxy_url() -> None:
    proxy = proxy_for("https://api.wiraya.ai",
                      {"HTTPS_PROXY": "http://wiraya:p%40ss-9f3k@gw.example:3128"})
    assert proxy is not None
    assert proxy.url == "http://gw.example:3128" and proxy.source == "HTTPS_PROXY"
    assert proxy.auth == (USER, PASSWORD)
    assert PASSWORD not in repr(proxy)
    # and the log filter masks it, should any message ever carry it
    assert PASSWORD not in logs.mask(f"proxy said: bad password {PASSWORD}")


def test_a_socks_proxy_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="ALL_PROXY: a socks5:// proxy is not supported"):
        proxy_for("https://api.wiraya.ai", {"ALL_PROXY": "socks5://gw:1080"})


def test_the_proxy_is_logged_without_its_credentials(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    clear_proxy_env(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", "http://wiraya:p%40ss-9f3k@gw.example:3128")
    with caplog.at_level(logging.INFO, "connector"):
        Wiraya(settings("https://api.wiraya.test"))
    said = "\n".join(record.getMessage() for record in caplog.records)
    assert said == "calls to api.wiraya.test go through the proxy http://gw.example:3128 " \
                   "(HTTPS_PROXY)"


# -- through a real proxy process -------------------------------------------------------

class ProxyProcess:
    def __init__(self, folder: Path) -> None:
        self.log = folder / "proxy.log"
        port_file = folder / "proxy.port"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", "0",
             "--port-file", str(port_file), "--num-workers", "1", "--num-acceptors", "1",
             "--log-level", "INFO", "--log-file", str(self.log),
             "--basic-auth", f"{USER}:{PASSWORD}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"proxy.py did not start: {self.lines()}")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        self.url = f"http://{USER}:p%40ss-9f3k@127.0.0.1:{self.port}"

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def access(self, since: int = 0) -> list[str]:
        """The access-log lines (one per request or tunnel) after the first `since` lines."""
        time.sleep(0.3)  # proxy.py writes its access line as the connection ends
        return [line for line in self.lines()[since:] if "access_log" in line]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def proxy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    server = ProxyProcess(tmp_path_factory.mktemp("proxy"))
    yield server
    server.stop()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(api_keys=[KEY]) as server:
        yield server


def clear_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def settings(url: str, **extra: Any) -> config.Wiraya:
    return config.Wiraya.model_validate({"base_url": url, "api_key": KEY, "rate_limit": None,
                                         "concurrency": 2, "bulk_size": 1, "max_attempts": 2,
                                         "backoff": "5ms", "timeout": "10s", **extra})


def upsert(api: Wiraya, count: int = 3) -> bool:
    async def go() -> bool:
        async with api:
            results = await api.upsert_contacts({str(n): {"schema": 1, "general": {}}
                                                 for n in range(count)})
            return all(result.ok for result in results.values())
    return asyncio.run(go())


def through(url: str, env: dict[str, str]) -> Wiraya:
    """A client whose lanes use the proxy the environment names, loopback included (the
    test servers are on 127.0.0.1, which the default never proxies)."""
    return Wiraya(settings(url), transport=Lanes(2, 10.0, proxy_for(url, env,
                                                                     bypass_loopback=False)))


def test_plain_http_goes_through_the_proxy(proxy_server: ProxyProcess,
                                           sandbox: Sandbox) -> None:
    before = len(proxy_server.lines())
    assert upsert(through(sandbox.url, {"HTTP_PROXY": proxy_server.url}))
    assert len(sandbox.contacts) == 3
    # proxy.py logs each connection it carried, with its first request
    target = sandbox.url.removeprefix("http://")
    lines = proxy_server.access(before)
    assert lines and all(f" {target}/" in line for line in lines)
    assert any(f"POST {target}/auth/token/apikey - 200" in line for line in lines)
    assert all(PASSWORD not in line for line in proxy_server.lines())

    # The proxy is really in the way: with a wrong password nothing reaches the sandbox.
    seen = len(sandbox.requests)
    wrong = proxy_server.url.replace("p%40ss-9f3k", "wrong")
    with pytest.raises(ApiUnavailable, match="cannot get a token"):
        upsert(through(sandbox.url, {"HTTP_PROXY": wrong}))
    assert len(sandbox.requests) == seen


def test_no_proxy_and_loopback_go_direct(proxy_server: ProxyProcess, sandbox: Sandbox,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    before = len(proxy_server.lines())
    host = sandbox.url.removeprefix("http://").rpartition(":")[0]
    assert upsert(through(sandbox.url, {"HTTP_PROXY": proxy_server.url, "NO_PROXY": host}))
    clear_proxy_env(monkeypatch)  # the default client, with every proxy variable set
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy_server.url)
    assert upsert(Wiraya(settings(sandbox.url)))
    assert proxy_server.access(before) == []
    assert len(sandbox.contacts) == 3


class _Api(BaseHTTPRequestHandler):
    """Just enough of the API over TLS: a token, and 200 to every contact upsert."""

    seen: list[str] = []

    def do_POST(self) -> None:
        self._answer({"authenticated": True, "token": "tls-token",
                      "tokenExpires": "2999-01-01T00:00:00Z"})

    def do_PUT(self) -> None:
        self._answer({"id": ["1"], "error": False, "failures": {}})

    def _answer(self, body: dict[str, Any]) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Api.seen.append(f"{self.command} {self.path}")
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def tls_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    authority = trustme.CA()
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))  # as an operator trusts a private CA
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    # A short poll: shutdown() waits up to one poll interval (0.5 s by default).
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    _Api.seen = []
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_https_is_tunnelled_through_the_proxy_with_connect(proxy_server: ProxyProcess,
                                                           tls_api: str) -> None:
    before = len(proxy_server.lines())
    assert upsert(through(tls_api, {"HTTPS_PROXY": proxy_server.url}))
    target = tls_api.removeprefix("https://")
    lines = proxy_server.access(before)
    assert lines and all(f"CONNECT {target}" in line for line in lines)
    assert sorted(_Api.seen) == ["POST /auth/token/apikey", "PUT /api/Contact/0",
                                 "PUT /api/Contact/1", "PUT /api/Contact/2"]


def test_a_proxy_that_refuses_the_credentials_sends_nothing(proxy_server: ProxyProcess,
                                                            tls_api: str) -> None:
    wrong = proxy_server.url.replace("p%40ss-9f3k", "wrong")
    api = through(tls_api, {"HTTPS_PROXY": wrong})

    async def go() -> None:
        async with api:
            api._token, api._refresh_at = "t", float("inf")
            result = (await api.upsert_contacts({"1": {"schema": 1}}))["1"]
            assert not result.ok and result.retriable and not result.ambiguous
            assert "nothing was sent" in result.reason

    asyncio.run(go())
    assert _Api.seen == []
