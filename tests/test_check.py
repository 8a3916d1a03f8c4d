"""`connector check` on what a config cannot show: a standby (the open-transaction guard
cannot see the primary's transactions), a database whose sessions write naive times in
another zone than `source.timezone`, and an API key that logs in but is refused on every
call. Real PostgreSQL servers (a primary and a standby made with `pg_basebackup -R`), the
sandbox, and a small stdlib HTTP server that refuses every /api call."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector import checks, config, report
from connector.sandbox import Sandbox
from connector.source import Source
from tests.conftest import (
    API_KEY,
    CUSTOMERS,
    DB_PASSWORD,
    DB_USER,
    Database,
    add_customers,
    cli,
    customers_stream,
    run_passes,
)
from tests.pgserver import PgServer

GUARD_ACTIVE = ("ok", "open-transaction guard: active (the role sees every session)")


def run_check(path: Path) -> list[tuple[str, str]]:
    return asyncio.run(report.check(config.load(path)))


def assert_no_secret(findings: list[tuple[str, str]]) -> None:
    for _level, message in findings:
        assert API_KEY not in message
        assert DB_PASSWORD not in message


# -- a view ---------------------------------------------------------------------------------


def test_a_stream_over_a_view_is_checked_as_one_and_synced(db: Database, api: Sandbox,
                                                           write_config: Any) -> None:
    """`check` tells a view from a table (a pass need not know); a view has no file node,
    so a pass never takes it for a recreated table and reads on from its watermark."""
    db.execute(CUSTOMERS)
    db.execute("CREATE VIEW active_customers AS SELECT * FROM customers "
               "WHERE status = 'active'")
    add_customers(db, 1, 5)
    tables = write_config(contacts={"customers": customers_stream()})
    assert ("ok", "contacts.customers: public.customers (table), id customer_id, cursor "
                  "updated_at (timestamptz)") in run_check(tables)
    views = write_config(contacts={"customers": customers_stream(
        table="public.active_customers")})
    found = run_check(views)
    assert ("ok", "contacts.customers: public.active_customers (view), id customer_id, "
                  "cursor updated_at (timestamptz)") in found
    assert ("warn", "contacts.customers: public.active_customers is a view; make sure the "
                    "table under it has an index on updated_at") in found

    source = Source(config.load(views).source)
    try:
        bound = source.bind("customers", config.load(views).contacts["customers"], "contacts")
        assert source.table_identity(bound) is None
    finally:
        source.close()
    assert run_passes(views)["customers"].counts.sent == 5
    add_customers(db, 6, 1)
    again = run_passes(views)["customers"]
    assert (again.counts.sent, again.counts.read) == (1, 6)  # the lookback's rows, no restart
    assert len(api.contacts) == 6


# -- a standby ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def standby(pg_server: PgServer) -> Iterator[PgServer]:
    """A hot standby of the suite's server, streaming from it (`pg_basebackup -R`)."""
    replica = pg_server.standby()
    yield replica
    replica.cleanup()


def test_check_on_a_standby_says_the_guard_cannot_work_and_which_lookback_to_use(
        pg_server: PgServer, standby: PgServer, db: Database, write_config: Any) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 3)
    db.execute("CREATE TABLE opt_outs (id bigint PRIMARY KEY, customer_id bigint, "
               "at timestamptz NOT NULL DEFAULT now())")
    standby.wait_for_replay(pg_server)
    streams = {"contacts": {"customers": customers_stream(lookback="3s")},
               "events": {"opt_outs": {"table": "opt_outs", "id": "id", "contact": "customer_id",
                                       "cursor": "id", "at": "at", "name": "OptOut"}}}
    url = standby.url(db.name, DB_USER, DB_PASSWORD)

    findings = run_check(write_config(source={"url": url}, **streams))

    guard = [(level, message) for level, message in findings
             if message.startswith("open-transaction guard")]
    assert len(guard) == 1, findings
    level, message = guard[0]
    assert level == "warn"
    assert message.startswith(
        "open-transaction guard: cannot work here: this database is a standby "
        "(pg_is_in_recovery() is true) and its pg_stat_activity does not show the primary's "
        "transactions, so only the lookback protects rows committed late. Set each stream's "
        "lookback longer than the longest write transaction on the primary plus the "
        "replication lag (replay lag now ")
    assert re.search(r"replay lag now \d+:\d\d:\d\d \(now\(\) - pg_last_xact_replay_timestamp"
                     r"\(\)", message), message
    assert message.endswith("lookbacks now: contacts.customers 0:00:03, "
                            "events.opt_outs 1000 values")
    assert not any("active" in message for _level, message in findings)
    assert not any(level == "fail" for level, _message in findings), findings

    # The same config against the primary: the guard works there, and nothing is said
    # about a standby.
    on_primary = run_check(write_config(**streams))
    assert GUARD_ACTIVE in on_primary
    assert not any("is a standby" in message for _level, message in on_primary), on_primary
    assert_no_secret(findings + on_primary)


def test_a_pass_is_told_once_per_process_that_a_standby_has_no_guard(
        pg_server: PgServer, standby: PgServer, db: Database,
        caplog: pytest.LogCaptureFixture) -> None:
    standby.wait_for_replay(pg_server)
    on_standby = Source(config.Source(url=standby.url(db.name, DB_USER, DB_PASSWORD)))
    on_primary = Source(config.Source(url=db.url))
    try:
        with caplog.at_level(logging.INFO, logger="connector.checks"):
            for _ in range(3):
                checks.note_standby(on_standby)
                checks.note_standby(on_primary)
    finally:
        on_standby.close()
        on_primary.close()
    said = [record for record in caplog.records if record.name == "connector.checks"]
    assert [record.levelno for record in said] == [logging.WARNING]
    assert said[0].getMessage() == (
        f"{on_standby.settings.display_url} is a standby: the open-transaction guard cannot "
        "see the primary's transactions there, so only each stream's lookback protects rows "
        "committed late; see `connector check`")
    assert DB_PASSWORD not in said[0].getMessage()


# -- the time zone a session gets -----------------------------------------------------------


ORDERS = """
CREATE TABLE orders (
    order_id    bigint PRIMARY KEY,
    customer_id bigint NOT NULL,
    created_at  timestamp NOT NULL DEFAULT localtimestamp,
    paid_at     timestamp
)"""

ORDERS_STREAM = {"table": "orders", "id": "order_id", "contact": "customer_id",
                 "cursor": "created_at"}


def test_check_warns_when_the_database_writes_naive_times_in_another_zone(
        db: Database, write_config: Any) -> None:
    db.execute(CUSTOMERS)  # timestamptz only: its stream is not named
    db.execute(ORDERS)
    db.execute(f"ALTER DATABASE \"{db.name}\" SET timezone = 'America/Los_Angeles'")
    streams = {"contacts": {"customers": customers_stream()},
               "events": {"orders": ORDERS_STREAM,
                          "paid": {**ORDERS_STREAM, "cursor": "order_id", "at": "paid_at"}}}

    findings = run_check(write_config(source={"timezone": "UTC"}, **streams))

    zone = [(level, message) for level, message in findings
            if "time zone" in message or "TimeZone" in message]
    assert [level for level, _message in zone] == ["warn", "warn"], findings
    orders, paid = (message for _level, message in zone)
    assert orders.startswith(
        "events.orders: created_at (cursor, at) is timestamp without time zone, "
        "read in source.timezone UTC, but a session on this database gets TimeZone "
        "America/Los_Angeles, so now() and localtimestamp write them in America/Los_Angeles")
    assert paid.startswith("events.paid: paid_at (at) is timestamp without "
                           "time zone, read in source.timezone UTC, but a session on this "
                           "database gets TimeZone America/Los_Angeles")
    for message in (orders, paid):
        assert message.endswith("Set source.timezone: America/Los_Angeles (unless the "
                                "application that writes these rows sets its own zone)")
    assert not any(message.startswith("contacts.customers") and "time zone" in message
                   for _level, message in findings)
    # The connector's own sessions still read in UTC: only the check's extra session differs.
    assert not any(level == "fail" for level, _message in findings), findings

    # With the fix the check names the match instead.
    fixed = run_check(write_config(source={"timezone": "America/Los_Angeles"}, **streams))
    zone = [(level, message) for level, message in fixed if "time zone" in message]
    assert zone == [("ok", "time zone: a session on this database gets America/Los_Angeles, "
                           "as source.timezone says (2 stream(s) read timestamp without "
                           "time zone)")]


def test_check_takes_two_names_of_one_zone_as_the_same(db: Database, write_config: Any) -> None:
    db.execute(ORDERS)
    db.execute(f"ALTER DATABASE \"{db.name}\" SET timezone = 'Etc/UTC'")
    findings = run_check(write_config(source={"timezone": "UTC"},
                                      events={"orders": ORDERS_STREAM}))
    zone = [(level, message) for level, message in findings if "time zone" in message]
    assert zone == [("ok", "time zone: a session on this database gets Etc/UTC, the same "
                           "offsets as source.timezone UTC (1 stream(s) read timestamp "
                           "without time zone)")]


def test_a_role_setting_counts_as_the_session_zone(db: Database, write_config: Any) -> None:
    db.execute(ORDERS)
    db.execute(f"ALTER ROLE {DB_USER} IN DATABASE \"{db.name}\" SET timezone = 'Asia/Tokyo'")
    try:
        findings = run_check(write_config(source={"timezone": "Europe/Stockholm"},
                                          events={"orders": ORDERS_STREAM}))
    finally:
        db.execute(f"ALTER ROLE {DB_USER} IN DATABASE \"{db.name}\" RESET timezone")
    warned = [message for level, message in findings
              if level == "warn" and message.startswith("events.orders:")
              and "timestamp without time zone" in message]
    assert len(warned) == 1, findings
    assert "read in source.timezone Europe/Stockholm, but a session on this database gets " \
           "TimeZone Asia/Tokyo" in warned[0]
    assert warned[0].endswith("Set source.timezone: Asia/Tokyo (unless the application that "
                              "writes these rows sets its own zone)")


def test_the_zone_of_this_machine_s_pgtz_is_not_taken_for_the_database_s(
        db: Database, write_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # libpq sends $PGTZ with every connection; the rows' writers do not have it.
    db.execute(ORDERS)
    db.execute(f"ALTER DATABASE \"{db.name}\" SET timezone = 'America/Los_Angeles'")
    monkeypatch.setenv("PGTZ", "UTC")
    findings = run_check(write_config(source={"timezone": "UTC"},
                                      events={"orders": ORDERS_STREAM}))
    warned = [message for level, message in findings
              if level == "warn" and "timestamp without time zone" in message]
    assert len(warned) == 1, findings
    assert "gets TimeZone America/Los_Angeles" in warned[0]
    assert os.environ["PGTZ"] == "UTC"  # put back after the check's connection


def test_sqlite_has_no_session_zone_to_compare(tmp_path: Path, api: Sandbox) -> None:
    database = tmp_path / "shop.db"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_id INTEGER, "
                     "created_at TIMESTAMP NOT NULL)")
    path = tmp_path / "connector.yaml"
    path.write_text(yaml.safe_dump({
        "source": {"url": f"sqlite:///{database}", "timezone": "Europe/Stockholm"},
        "wiraya": {"base_url": api.url, "api_key": API_KEY},
        "state": str(tmp_path / "state.db"), "events": {"orders": ORDERS_STREAM}}))
    findings = run_check(path)
    assert ("ok", "events.orders: orders (table), id order_id, cursor created_at "
                  "(timestamp)") in findings
    assert not any("zone" in message or "standby" in message or "guard" in message
                   for _level, message in findings), findings


@pytest.mark.parametrize(("one", "other", "same"), [
    ("UTC", "Etc/UTC", True), ("utc", "UTC", True), ("UTC", "Europe/Stockholm", False),
    ("Europe/Stockholm", "Europe/Helsinki", False), ("UTC", "<+03>-03", False)])
def test_same_zone(one: str, other: str, same: bool) -> None:
    assert checks.same_zone(one, other) is same


# -- a key that logs in but may not call ----------------------------------------------------


class RefusingApi:
    """Gives a token to any key, then answers every /api call with `status`."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.calls: list[tuple[str, str, str, bytes]] = []  # method, path, authorization, body
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self._answer("POST")

            def do_PUT(self) -> None:
                self._answer("PUT")

            def _answer(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.calls.append((method, self.path, self.headers.get("Authorization", ""),
                                    body))
                if self.path.lower() == "/auth/token/apikey":
                    token = f"token-{len(owner.calls)}"
                    status, reply = 200, {"authenticated": True, "token": token,
                                          "tokenExpires": "2099-01-01T00:00:00.0000000Z"}
                else:
                    status, reply = owner.status, {"error": True, "message": "refused"}
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll: shutdown() waits up to one poll interval (0.5 s by default).
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)

    def __enter__(self) -> RefusingApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def wiraya_findings(findings: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(level, message) for level, message in findings if message.startswith("Wiraya")]


@pytest.mark.slow
def test_a_key_refused_on_calls_fails_the_check_naming_the_key_and_route(
        db: Database, write_config: Any) -> None:
    db.execute(CUSTOMERS)
    with RefusingApi(403) as api:
        path = write_config(contacts={"customers": customers_stream()},
                            wiraya={"base_url": api.url})
        result = cli("--config", str(path), "check")
        calls = list(api.calls)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-3:] == [
        f"ok   Wiraya: logged in at {api.url}",
        "FAIL Wiraya: wiraya.api_key logs in but is refused on PUT /api/contact/_bulk (403 "
        "with a fresh token); ask Wiraya to give this key access to the API, or use a key "
        "that has it",
        "1 problem(s), 0 warning(s)"]
    probes = [call for call in calls if call[0] == "PUT"]
    assert len(probes) == 1
    assert probes[0][1] == "/api/contact/_bulk"
    assert probes[0][2].startswith("Bearer token-")
    assert json.loads(probes[0][3]) == {}  # no items: the probe changes nothing
    assert API_KEY not in result.stdout + result.stderr


@pytest.mark.parametrize(("status", "expected"), [
    (401, ("fail", "Wiraya: wiraya.api_key logs in but is refused on PUT /api/contact/_bulk "
                   "(401 with a fresh token); ask Wiraya to give this key access to the API, "
                   "or use a key that has it")),
    (404, ("warn", "Wiraya: could not tell whether the key may call the API: "
                   "PUT /api/contact/_bulk answered 404 (no bulk route to ask)")),
    (405, ("warn", "Wiraya: could not tell whether the key may call the API: "
                   "PUT /api/contact/_bulk answered 405 (no bulk route to ask)")),
    (503, ("warn", "Wiraya: could not tell whether the key may call the API: "
                   "PUT /api/contact/_bulk answered 503")),
])
def test_the_probe_tells_refused_from_unknown(status: int, expected: tuple[str, str],
                                              db: Database, write_config: Any) -> None:
    db.execute(CUSTOMERS)
    with RefusingApi(status) as api:
        findings = run_check(write_config(contacts={"customers": customers_stream()},
                                          wiraya={"base_url": api.url}))
        calls = list(api.calls)
    assert wiraya_findings(findings) == [("ok", f"Wiraya: logged in at {api.url}"), expected]
    puts = [call for call in calls if call[0] == "PUT"]
    # A 401 takes one new token and one more try; nothing else is asked twice.
    assert len(puts) == (2 if status == 401 else 1)
    if status == 401:
        assert puts[0][2] != puts[1][2]
    assert_no_secret(findings)


def test_a_key_that_may_call_passes_the_probe_on_the_sandbox(
        db: Database, api: Sandbox, write_config: Any) -> None:
    db.execute(CUSTOMERS)
    findings = run_check(write_config(contacts={"customers": customers_stream()}))
    assert wiraya_findings(findings) == [
        ("ok", f"Wiraya: logged in at {api.url}"),
        ("ok", "Wiraya: the key may call the API (PUT /api/contact/_bulk with no items: 400)")]
    assert api.contacts == {}
    assert [(r.method, r.path) for r in api.requests if r.path.startswith("/api")] == [
        ("PUT", "/api/contact/_bulk")]
