"""Liveness and readiness of the daemon, over HTTP, on PostgreSQL and the sandbox."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from connector.sandbox import Sandbox
from tests.conftest import CUSTOMERS, Database, add_customers, cli, customers_stream
from tests.daemons import Daemon, daemons_fixture, wait_for  # noqa: F401 - a fixture
from tests.pgserver import PgServer
from tests.ports import free_port

pytestmark = pytest.mark.slow


class Probe:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> tuple[int, Any]:
        try:
            reply = httpx.get(self.base + path, timeout=5)
        except httpx.TransportError:
            return 0, None
        return reply.status_code, reply.json() if path != "/metrics" else reply.text

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def unready(self) -> bool:
        return self.get("/readyz")[0] == 503


def start(write_config: Any, daemons: list[Daemon], **config: Any) -> Probe:
    port = free_port()
    path = write_config(metrics={"listen": f"127.0.0.1:{port}"}, **config)
    daemons.append(Daemon(path))
    return Probe(port)


def test_a_database_outage_makes_the_daemon_unready_and_recovery_ready_again(
        db: Database, api: Sandbox, write_config, daemons: list[Daemon],
        pg_server: PgServer) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 10)
    probe = start(write_config, daemons, contacts={"customers": customers_stream(every="1s")})
    wait_for(lambda: len(api.contacts) == 10, 30, "the first pass")
    wait_for(probe.ready, 10, "ready")

    pg_server.pause()
    try:
        wait_for(probe.unready, 30, "not ready while the database is down")
        _status, body = probe.get("/readyz")
        stream = body["streams"]["customers"]
        assert stream["ready"] is False
        assert stream["consecutive_failures"] >= 2
        assert stream["reason"].startswith("the last ")
        assert "passes failed: customers: reading pg_class failed: connection failed: " \
               in stream["reason"]
        assert body["reasons"] == [f"customers: {stream['reason']}"]
        assert body["api"]["ready"] is True and body["state"]["ready"] is True
        # Liveness stays: restarting the process would not bring the database back.
        live_status, live = probe.get("/livez")
        assert (live_status, live["status"]) == (200, "ok")
        assert probe.get("/healthz")[0] == 200
        metrics = probe.get("/metrics")[1]
        assert "connector_ready 0.0" in metrics
        assert 'connector_stream_consecutive_failures{stream="customers"} ' in metrics
    finally:
        pg_server.resume()
    wait_for(probe.ready, 30, "ready again once the database is back")
    body = probe.get("/readyz")[1]
    assert body == {"ready": True, "reasons": [], "streams": {"customers": {
        "ready": True, "reason": None, "outcome": "ok", "consecutive_failures": 0}},
        "api": {"ready": True, "reason": None, "hold_seconds": 0.0, "max_hold_seconds": 300.0},
        "state": {"ready": True, "reason": None}}
    assert daemons[0].stop() == 0


def test_a_refused_api_key_makes_the_daemon_unready_at_the_first_failed_pass(
        db: Database, api: Sandbox, write_config, daemons: list[Daemon]) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 10)
    probe = start(write_config, daemons, contacts={"customers": customers_stream(every="1s")},
                  wiraya={"api_key": "a-revoked-key-0000"}, daemon={"unready_after_failures": 5})
    wait_for(probe.unready, 30, "not ready with the key refused")
    body = probe.get("/readyz")[1]
    stream = body["streams"]["customers"]
    assert stream["consecutive_failures"] < 5  # not the count: a refused key is fatal at once
    assert stream["reason"].startswith("the last pass failed and needs a config change: ")
    assert "Wiraya refused the API key (401" in stream["reason"]
    assert "a-revoked-key-0000" not in json.dumps(body)
    assert probe.get("/livez")[0] == 200
    assert daemons[0].stop() == 0


def test_a_long_retry_after_hold_makes_the_daemon_unready(
        db: Database, api: Sandbox, write_config, daemons: list[Daemon]) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 20)
    api.faults.rate_limit = 0.001  # one call, then 429 with Retry-After: 3600
    api.faults.retry_after = 3600
    probe = start(write_config, daemons, contacts={"customers": customers_stream(every="1s")},
                  daemon={"stop_timeout": "2s"})
    wait_for(probe.unready, 30, "not ready during an hour-long hold")
    body = probe.get("/readyz")[1]
    assert body["api"]["ready"] is False
    assert body["api"]["hold_seconds"] > 3000
    assert body["api"]["reason"].startswith("Wiraya asked every call to wait ")
    assert "longer than wiraya.max_hold (300 s)" in body["api"]["reason"]
    assert "connector_api_hold_seconds 3" in probe.get("/metrics")[1]  # 3xxx seconds

    # Passes do not sit in an hour-long hold: each stops at once with one clear line.
    daemon = daemons[0]
    assert daemon.stop() == 0
    log = daemon.log()
    assert "longer than wiraya.max_hold (5m); the pass stops and the next one starts from " \
           "the same place" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_a_stop_during_a_hold_is_bounded(
        db: Database, api: Sandbox, write_config, daemons: list[Daemon]) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 20)
    api.faults.rate_limit = 0.001  # one call, then 429 with Retry-After: 60 (within max_hold)
    api.faults.retry_after = 60
    probe = start(write_config, daemons, contacts={"customers": customers_stream(every="1s")},
                  daemon={"stop_timeout": "2s"})
    def holding() -> bool:
        body = probe.get("/readyz")[1] or {}
        return bool(body.get("api", {}).get("hold_seconds", 0) > 30)

    wait_for(holding, 30, "a hold of a minute")
    assert probe.get("/readyz")[1]["api"]["ready"] is True  # within wiraya.max_hold

    # The pass waits in the hold; a stop waits for it at most daemon.stop_timeout.
    daemon = daemons[0]
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 15
    log = daemon.log()
    assert "stopped before the pass of customers finished its page (daemon.stop_timeout 2s)" \
        in log
    assert "Traceback" not in log
    status = json.loads(cli("--config", str(daemon.config), "status", "--json").stdout)
    assert status[0]["last_run"]["outcome"] == "stopped"
    assert status[0]["last_run"]["error"] == \
        "cut short at stop: the page in flight was not recorded"
