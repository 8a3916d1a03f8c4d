"""A fresher daemon, on PostgreSQL and the sandbox: the probe that lets an idle pass read
nothing never hides a change it must see, a stream never runs two passes at once, and
`every: 250ms` really polls four times a second."""

# ruff: noqa: F811 - the fixtures imported below are parameters of the tests
from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector import config, probe, session
from connector.cursor import resolve_lookback
from connector.daemon import _Daemon
from connector.sandbox import Sandbox
from connector.state import DaemonLock
from connector.statefile import StateWatch
from connector.sync import Context, Report, run_pass
from tests.conftest import (
    CUSTOMERS,
    Database,
    add_customers,
    cli,
    connector_statements,
    customers_stream,
)
from tests.daemons import Daemon, daemons_fixture, wait_for  # noqa: F401 - a fixture
from tests.mariadb_fixtures import CUSTOMERS as MARIA_CUSTOMERS
from tests.mariadb_fixtures import (  # noqa: F401 - fixtures
    MariaDatabase,
    maria_config,
    maria_server,
    mdb,
)
from tests.mariadb_fixtures import add_customers as maria_add_customers
from tests.mariadb_fixtures import customers_stream as maria_customers_stream
from tests.ports import free_port


class Passes:
    """One session, as the daemon holds it, in which the test runs passes one at a time."""

    def __init__(self, path: Path) -> None:
        self.settings = config.load(path)
        self.loop = asyncio.new_event_loop()
        self.opened = session.opened(self.settings)
        self.ctx: Context = self.loop.run_until_complete(self.opened.__aenter__())

    def run(self, name: str = "customers") -> Report:
        report = self.loop.run_until_complete(run_pass(self.ctx, name))
        assert report.outcome == "ok", report.error
        return report

    def until_idle(self, name: str = "customers") -> None:
        """Passes until one reads nothing: the probe found the window as it was."""
        for _ in range(4):
            if self.run(name).counts.read == 0:
                return
        raise AssertionError("no pass skipped its read in 4 passes over an unchanged table")

    def close(self) -> None:
        self.loop.run_until_complete(self.opened.__aexit__(None, None, None))
        self.loop.close()


@pytest.fixture
def passes(db: Database, write_config: Any) -> Iterator[Any]:
    """`passes(**stream)`: the customers table (ten rows written a minute ago, inside the
    lookback) and a session with the customers stream."""
    opened: list[Passes] = []

    def start(**stream: Any) -> Passes:
        db.execute(CUSTOMERS)
        add_customers(db, 1, 10, at="now() - interval '1 minute'")
        opened.append(Passes(write_config(contacts={"customers": customers_stream(**stream)})))
        return opened[-1]

    yield start
    for each in opened:
        each.close()


def test_an_idle_pass_reads_nothing_and_every_change_still_arrives(
        passes: Any, db: Database, api: Sandbox) -> None:
    session = passes()
    assert session.run().counts.sent == 10
    session.until_idle()
    assert session.run().counts.read == 0  # still nothing changed: still nothing read

    # An update moves its row's cursor to the newest: the next pass sends it.
    db.execute("UPDATE customers SET city = 'Updated', updated_at = now() "
               "WHERE customer_id = 3")
    assert session.run().counts.sent == 1
    assert api.contacts["3"]["general"]["city"] == "Updated"

    # An insert, once the stream is idle again.
    session.until_idle()
    add_customers(db, 11, 1)
    assert session.run().counts.sent == 1
    assert "11" in api.contacts

    # A row rewritten with an older cursor value than the newest: an update whose
    # transaction began before a later one committed, and commits after it. The row was in
    # the window already, so the count and the highest cursor stay as they were.
    session.until_idle()
    late = db.connect(autocommit=False)
    late.execute("UPDATE customers SET city = 'Late', updated_at = now() "
                 "WHERE customer_id = 5")
    db.execute("UPDATE customers SET city = 'Newer', updated_at = clock_timestamp() "
               "WHERE customer_id = 6")
    assert session.run().counts.sent == 1
    session.until_idle()
    late.commit()
    late.close()
    assert session.run().counts.sent == 1
    assert api.contacts["5"]["general"]["city"] == "Late"

    # A deleted row and an inserted one leave the count as it was; the sum moves.
    session.until_idle()
    db.execute("DELETE FROM customers WHERE customer_id = 1")
    add_customers(db, 12, 1, at="now() - interval '2 minutes'")
    assert session.run().counts.sent == 1
    assert "12" in api.contacts
    assert sum(api.contact_writes.values()) == 10 + 5  # each change sent once


def test_a_change_committed_while_a_pass_reads_is_read_by_the_next(
        passes: Any, db: Database, api: Sandbox) -> None:
    """What a pass remembers is what its probe saw before it read: a row committed while it
    read (here: with an older cursor, so the watermark stays) differs from that."""
    session = passes()
    session.run()
    session.until_idle()
    inserted: list[int] = []

    def meanwhile(_stream: str, _rows: int) -> None:
        if not inserted:
            add_customers(db, 14, 1, at="now() - interval '4 minutes'")
            inserted.append(14)

    add_customers(db, 13, 1, at="now() - interval '3 minutes'")
    session.ctx.on_page = meanwhile
    assert session.run().counts.sent == 1  # row 13; row 14 came after this pass's read
    session.ctx.on_page = None
    assert inserted and "14" not in api.contacts
    assert session.run().counts.sent == 1
    assert "14" in api.contacts


def test_the_blind_spot_is_read_within_reread(passes: Any, db: Database,
                                              api: Sandbox) -> None:
    """A row changed without its cursor moving is what the probe cannot see (probe.py);
    the full read at least every `reread` sends it."""
    session = passes(reread="1s")
    session.run()
    session.until_idle()
    db.execute("UPDATE customers SET city = 'Quiet' WHERE customer_id = 2")
    assert session.run().counts.read == 0  # the blind spot, as documented
    assert api.contacts["2"]["general"]["city"] != "Quiet"
    time.sleep(1.1)  # past `reread`
    report = session.run()
    assert report.counts.read == 10 and report.counts.sent == 1
    assert api.contacts["2"]["general"]["city"] == "Quiet"


@pytest.mark.slow
def test_a_one_shot_sync_reads_its_window_and_takes_no_probe(
        db: Database, api: Sandbox, write_config: Any) -> None:
    """`connector sync` runs one pass per stream and ends: what a probe saw would die with
    it, so it asks for none (the server's own log), and it always reads its window."""
    db.execute(CUSTOMERS)
    add_customers(db, 1, 10, at="now() - interval '1 minute'")
    path = write_config(contacts={"customers": customers_stream()})
    assert cli("-c", str(path), "sync").returncode == 0
    statements = connector_statements(db, lambda: cli("-c", str(path), "sync"))
    reads = [line for line in statements if "ORDER BY" in line]
    assert reads and not [line for line in statements if "sum(" in line], statements
    assert len(api.contacts) == 10


def test_reread_zero_reads_every_pass(passes: Any) -> None:
    session = passes(reread="0s")
    session.run()
    assert [session.run().counts.read for _ in range(3)] == [10, 10, 10]


def test_a_stream_never_runs_two_passes_at_once(db: Database, api: Sandbox, write_config,
                                               tmp_path: Path) -> None:
    """The scheduler's job for a stream returns at once while that stream's pass runs."""
    db.execute(CUSTOMERS)
    add_customers(db, 1, 3)
    api.faults.latency = 0.3  # a slow pass: three contacts, one call each
    settings = config.load(write_config(contacts={"customers": customers_stream()},
                                        wiraya={"concurrency": 1}))

    async def go() -> list[Any]:
        daemon = _Daemon(settings, DaemonLock(settings.state).acquire())
        try:
            async with session.opened(settings) as ctx:
                daemon.ctx = ctx
                daemon.watch = StateWatch(ctx.state)
                await asyncio.gather(daemon._job("customers"), daemon._job("customers"))
                return ctx.state.runs("customers")
        finally:
            daemon.lock.release()

    runs = asyncio.run(go())
    assert len(runs) == 1
    assert sum(api.contact_writes.values()) == 3


@pytest.mark.slow
def test_every_250ms_polls_four_times_a_second(db: Database, api: Sandbox, write_config,
                                               daemons: list[Daemon]) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 10)
    port = free_port()
    path = write_config(contacts={"customers": customers_stream(every="250ms")},
                        metrics={"listen": f"127.0.0.1:{port}"})
    daemon = Daemon(path)
    daemons.append(daemon)
    wait_for(lambda: len(api.contacts) == 10, 30, "the first pass")

    def passes() -> float:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        line = next(line for line in text.splitlines()
                    if line.startswith('connector_passes_total{outcome="ok",stream="customers"}'))
        return float(line.rsplit(" ", 1)[1])

    before, started = passes(), time.monotonic()
    time.sleep(4)
    rate = (passes() - before) / (time.monotonic() - started)
    # 4 a second; a loaded machine may miss a few, a 1-second schedule would give 1.
    assert 2.5 <= rate <= 4.5
    add_customers(db, 11, 1)
    wait_for(lambda: "11" in api.contacts, 5, "a new row")
    assert daemon.stop() == 0


def _a_moved_row_is_seen(session: Passes, api: Sandbox, move: Any) -> None:
    """Row 5 moved to a cursor value still below the newest (count and highest stay)."""
    assert session.run().counts.sent == 10
    session.until_idle()
    move()
    assert session.run().counts.sent == 1
    assert api.contacts["5"]["general"]["city"] == "Moved"
    session.until_idle()


def test_the_probe_on_a_postgresql_date_cursor(db: Database, api: Sandbox,
                                               write_config: Any) -> None:
    """A date cursor is summed as whole days from the window's floor: the probe's own
    branch for dates on PostgreSQL."""
    db.execute(CUSTOMERS)
    add_customers(db, 1, 10)
    db.execute("UPDATE customers SET birth_date = current_date - 20 + customer_id::int")
    session = Passes(write_config(contacts={"customers": customers_stream(
        cursor="birth_date", lookback="30d")}))
    try:
        _a_moved_row_is_seen(session, api, lambda: db.execute(  # a day later, below row 10
            "UPDATE customers SET city = 'Moved', birth_date = birth_date + 1 "
            "WHERE customer_id = 5"))
    finally:
        session.close()


@pytest.mark.slow
def test_the_probe_on_mariadb(mdb: MariaDatabase, maria_config: Any, api: Sandbox) -> None:
    mdb.execute(MARIA_CUSTOMERS)
    maria_add_customers(mdb, 1, 10, at="CURRENT_TIMESTAMP(6) - INTERVAL 60 + i SECOND")
    session = Passes(maria_config(contacts={"customers": maria_customers_stream()}))
    try:
        _a_moved_row_is_seen(session, api, lambda: mdb.execute(
            "UPDATE customers SET city = 'Moved', updated_at = updated_at + INTERVAL 1 SECOND "
            "WHERE customer_id = 5"))
    finally:
        session.close()


def test_the_probe_on_sqlite_text_times(tmp_path: Path, api: Sandbox, write_config: Any
                                        ) -> None:
    path = tmp_path / "app.db"
    start = datetime.now(UTC) - timedelta(minutes=1)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id integer PRIMARY KEY, mobile text, city text, "
                     "updated_at DATETIME)")
        for i in range(1, 11):  # ISO text with Z, a second apart
            at = (start - timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            conn.execute("INSERT INTO users VALUES (?, ?, 'City', ?)",
                         (i, f"+4670100{i:04d}", at))
    stream = {"table": "users", "id": "id", "cursor": "updated_at",
              "personal": {"phoneNumber": {"column": "mobile", "region": "SE"}},
              "general": {"city": "city"}}
    session = Passes(write_config(contacts={"customers": stream},
                                  source={"url": f"sqlite:///{path}"}))

    def move() -> None:  # a millisecond later: still below the newest row
        with sqlite3.connect(path) as conn:
            at = (start - timedelta(seconds=5) + timedelta(milliseconds=1))
            conn.execute("UPDATE users SET city = 'Moved', updated_at = ? WHERE id = 5",
                         (at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),))

    try:
        _a_moved_row_is_seen(session, api, move)
    finally:
        session.close()


def test_a_reread_longer_than_the_lookback_is_refused() -> None:
    from tests.test_config import dump, minimal, problems_of

    document = minimal()
    document["contacts"]["customers"].update(lookback="30s", reread="2m")
    assert problems_of(dump(document)) == [(
        "contacts.customers",
        "reread (0:02:00) is longer than lookback (0:00:30): a change only a full read of "
        "the window sees could leave the window first; make reread shorter")]
    del document["contacts"]["customers"]["reread"]  # left at its default: 1m, cut to 30s
    settings = config.parse(dump(document), env={"DATABASE_URL": "sqlite:///x.db",
                                                 "WIRAYA_API_KEY": "k"})
    assert probe.reread_seconds(settings.contacts["customers"]) == 30


def test_a_reread_is_cut_to_the_lookback_the_pass_uses_when_none_is_written() -> None:
    from tests.test_config import dump, minimal

    document = minimal()
    document["contacts"]["customers"].pop("lookback", None)
    document["contacts"]["customers"]["reread"] = "30m"  # longer than the default 10m
    settings = config.parse(dump(document), env={"DATABASE_URL": "sqlite:///x.db",
                                                 "WIRAYA_API_KEY": "k"})
    stream = settings.contacts["customers"]
    lookback = resolve_lookback("contacts.customers", stream.cursor, "timestamptz",
                                stream.lookback)
    assert lookback == timedelta(minutes=10)
    assert probe.reread_seconds(stream, lookback) == 600
