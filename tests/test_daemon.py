"""The daemon and the backfill command, as child processes on PostgreSQL and the sandbox."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest

from connector import __version__
from connector.sandbox import Sandbox
from tests.conftest import CUSTOMERS, Database, add_customers, cli, customers_stream
from tests.daemons import Daemon, daemons_fixture, wait_for  # noqa: F401 - a fixture
from tests.pgserver import PgServer
from tests.ports import free_port


@pytest.mark.slow
def test_the_daemon_keeps_wiraya_up_to_date(db: Database, api: Sandbox, write_config,
                                            daemons: list[Daemon], pg_server: PgServer) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 100)
    port = free_port()
    path = write_config(contacts={"customers": customers_stream(every="1s")},
                        metrics={"listen": f"127.0.0.1:{port}"}, logging={"format": "json"})
    daemon = Daemon(path)
    daemons.append(daemon)
    wait_for(lambda: len(api.contacts) == 100, 30, "the first pass")

    # Rows inserted and changed while it runs arrive within two intervals.
    add_customers(db, 101, 5)
    db.execute("UPDATE customers SET city = 'Changed', updated_at = now() "
               "WHERE customer_id = 7")
    started = time.monotonic()
    wait_for(lambda: len(api.contacts) == 105
             and api.contacts["7"]["general"]["city"] == "Changed", 10, "the changes")
    assert time.monotonic() - started < 2 * 1.0 + 1.0  # two intervals, and a pass's time

    health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert health.status_code == 200
    assert health.json()["streams"]["customers"]["outcome"] == "ok"

    def metric_text() -> str:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text

    # The counters move when a pass ends, a moment after Wiraya has the rows.
    sent = 'connector_rows_total{outcome="sent",stream="customers"} 106.0'  # 100 + 5 + 1
    wait_for(lambda: sent in metric_text(), 5, "the metrics of the pass")
    text = metric_text()
    assert "connector_watermark_lag_seconds{stream=\"customers\"}" in text
    assert "connector_api_latency_seconds_bucket" in text
    python = ".".join(map(str, sys.version_info[:3]))
    assert f'connector_build_info{{python="{python}",version="{__version__}"}} 1.0' in text
    assert 'connector_pass_duration_seconds_bucket{le="0.05",stream="customers"}' in text
    assert 'connector_pass_duration_seconds_count{stream="customers"}' in text
    assert "_created" not in text
    assert "connector_ready 1.0" in text
    assert "connector_api_hold_seconds 0.0" in text

    status = json.loads(cli("--config", str(path), "status", "--json").stdout)
    assert status[0]["last_run"]["outcome"] == "ok"

    # A second daemon on the same state file is refused with a clear message.
    second = cli("--config", str(path), "run", timeout=30)
    assert second.returncode == 1
    assert "another connector daemon (pid" in second.stderr

    assert daemon.stop() == 0
    lines = [json.loads(line) for line in daemon.log().splitlines() if line.strip()]
    pass_lines = [line for line in lines if line["logger"] == "connector.sync"]
    assert pass_lines and all(line["stream"] == "customers" for line in pass_lines)
    assert any(line["message"] == "daemon stopped" for line in lines)


@pytest.mark.slow
def test_the_daemon_survives_a_database_outage(db: Database, api: Sandbox, write_config,
                                               daemons: list[Daemon],
                                               pg_server: PgServer) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 10)
    path = write_config(contacts={"customers": customers_stream(every="1s")})
    daemon = Daemon(path)
    daemons.append(daemon)
    wait_for(lambda: len(api.contacts) == 10, 30, "the first pass")

    pg_server.pause()
    try:
        wait_for(lambda: daemon.log().count("pass failed") >= 2, 15, "a second failed pass")
    finally:
        pg_server.resume()
    # The second failure is of a pass that started with the database down: one clear line.
    failure = [line for line in daemon.log().splitlines() if "pass failed" in line][1]
    assert "[customers] pass failed: customers: reading pg_class failed: connection failed: " \
           "connection to server at \"127.0.0.1\"" in failure
    assert failure.endswith("Connection refused")
    assert "Traceback" not in daemon.log()
    assert "db-pass" not in daemon.log()

    add_customers(db, 11, 5)
    wait_for(lambda: len(api.contacts) == 15, 30, "the catch-up after the outage")
    assert daemon.process.poll() is None
    assert daemon.stop() == 0


@pytest.mark.slow
def test_backfill_shows_progress_resumes_and_leaves_the_watermark(db: Database, api: Sandbox,
                                                                  write_config) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 200_000, at="'2026-01-01'::timestamptz + i * interval '1 second'")
    path = write_config(contacts={"customers": customers_stream(page_size=5000)},
                        wiraya={"bulk_size": 100, "concurrency": 8})
    state = path.parent / "state" / "connector.db"

    # Interrupted part way (Ctrl-C), it stops after the current page, state committed.
    first = subprocess.Popen(
        [sys.executable, "-m", "connector", "--config", str(path), "backfill", "customers",
         "--until", "2026-01-03T12:00:00Z"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(api.contacts) > 20_000, 60, "the backfill to get going")
    first.send_signal(signal.SIGINT)
    _out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert "stopped, run the same command to resume" in err
    assert "backfill customers" in err and "rows" in err
    part = len(api.contacts)
    assert 20_000 < part < 200_000

    resumed = cli("--config", str(path), "backfill", "customers", "--until",
                  "2026-01-03T12:00:00Z", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    # 2026-01-01 00:00:01 .. 2026-01-03 11:59:59: 215,999 seconds, but only 200,000 rows.
    assert len(api.contacts) == 200_000
    assert sum(api.contact_writes.values()) == 200_000  # every row delivered once
    assert "200000/200000" in resumed.stderr.replace(",", "")
    status = json.loads(cli("--config", str(path), "status", "--json").stdout)
    assert status[0]["watermark"] is None  # no live pass ran, and backfill left it alone
    assert state.exists()


@pytest.mark.slow
def test_a_backfill_beside_the_daemon_sends_each_event_once(db: Database, api: Sandbox,
                                                           write_config,
                                                           daemons: list[Daemon]) -> None:
    from tests.test_events import CONVERSIONS, ORDERS, add_orders

    db.execute(ORDERS)
    add_orders(db, 1, 6_000, customers=500,
               at="'2026-01-01'::timestamptz + i * interval '1 second'")
    api.faults.strict_order = False  # no contact stream: the contacts live elsewhere
    api.faults.latency = 0.001
    path = write_config(events={"conversions": dict(CONVERSIONS, every="1s", page_size=250)},
                        wiraya={"concurrency": 8})
    backfill = subprocess.Popen([sys.executable, "-m", "connector", "--config", str(path),
                                 "backfill", "conversions"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    daemon = Daemon(path)
    daemons.append(daemon)
    _out, err = backfill.communicate(timeout=300)
    assert backfill.returncode == 0, err
    wait_for(lambda: len(api.events) >= 6_000, 120, "every event")
    time.sleep(2.5)  # two more daemon passes: they must add nothing
    assert daemon.stop() == 0
    seen = Counter((cid, body["at"]) for cid, body in api.events)
    assert len(seen) == 6_000
    assert max(seen.values()) == 1  # the two took turns: no event went twice


@pytest.mark.slow
def test_a_deploy_finishes_the_page_in_flight_and_sends_no_event_twice(
        db: Database, api: Sandbox, write_config, daemons: list[Daemon]) -> None:
    """SIGTERM while a page of events is on the wire, again and again: each order's event
    arrives once. Before the fix: 292 duplicates over 38 restarts (about `concurrency`)."""
    from tests.test_events import CONVERSIONS, ORDERS, add_orders

    db.execute(ORDERS)
    add_orders(db, 1, 300, customers=100,
               at="'2026-01-01'::timestamptz + i * interval '1 second'")
    api.faults.strict_order = False  # no contact stream: the contacts live elsewhere
    api.faults.latency = 0.15  # a page of 40 events takes ~0.8 s with 8 workers
    path = write_config(events={"conversions": dict(CONVERSIONS, every="1s", page_size=40)},
                        wiraya={"concurrency": 8})

    def orders_sent() -> int:
        return len({body["at"] for _cid, body in api.events})

    restarts = 0
    while orders_sent() < 300:
        daemon = Daemon(path)
        daemons.append(daemon)
        wanted = len(api.events) + 12
        # SIGTERM while events of a page are on the wire (some arrived, the page not done).
        wait_for(lambda: len(api.events) >= wanted or orders_sent() >= 300,  # noqa: B023
                 60, "events in flight")
        assert daemon.stop() == 0, daemon.log()
        assert "daemon stopped" in daemon.log()
        if orders_sent() < 300:  # stopped mid-pass: the page finished, the run says so
            assert "stopping: finishing the page in flight of conversions" in daemon.log()
            status = json.loads(cli("--config", str(path), "status", "--json").stdout)
            assert status[0]["last_run"]["outcome"] == "stopped"
        restarts += 1
        assert restarts < 40
    seen = Counter(body["at"] for _cid, body in api.events)
    assert restarts >= 3
    assert len(seen) == 300
    duplicates = sum(count - 1 for count in seen.values())
    assert duplicates == 0, f"{duplicates} duplicate events over {restarts} restarts"
