"""`cursor: none` and reconcile: the whole table compared with the state file, on a real
PostgreSQL server and on SQLite, against the sandbox over HTTP."""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from connector import config, report
from connector.sandbox import Sandbox
from connector.sync import Live, Reconcile
from tests.conftest import CUSTOMERS, Database, add_customers, customers_stream, run_passes

PEOPLE = """
CREATE TABLE people (
    person_id integer PRIMARY KEY,
    name      text,
    mobile    text,
    city      text
)"""


class Table:
    """The `people` table, no change column, on PostgreSQL or SQLite."""

    def __init__(self, kind: str, db: Database, tmp_path: Path) -> None:
        self.kind, self.db = kind, db
        self.file = tmp_path / "app.db"
        self.url = db.url if kind == "postgresql" else f"sqlite:///{self.file}"
        self.execute(PEOPLE)

    def execute(self, sql: str) -> None:
        if self.kind == "postgresql":
            self.db.execute(sql)
            return
        with sqlite3.connect(self.file) as conn:
            conn.execute(sql)

    def add(self, first: int, count: int) -> None:
        values = ", ".join(f"({i}, 'Name{i}', '+4670{1000000 + i:07d}', 'City{i % 7}')"
                           for i in range(first, first + count))
        self.execute(f"INSERT INTO people VALUES {values}")


def people_stream(**extra: Any) -> dict[str, Any]:
    stream: dict[str, Any] = {
        "table": "people", "id": "person_id", "cursor": "none", "page_size": 50,
        "personal": {"phoneNumber": {"column": "mobile", "region": "SE"}, "givenName": "name"},
        "general": {"city": "city"},
    }
    stream.update(extra)
    return stream


@pytest.fixture(params=["postgresql", "sqlite"])
def people(request: pytest.FixtureRequest, db: Database, tmp_path: Path) -> Table:
    return Table(request.param, db, tmp_path)


def puts(api: Sandbox) -> Counter[str]:
    """Contact ids written by this pass's requests (single PUTs and bulk items)."""
    return api.contact_writes


def test_no_change_column_sends_all_then_nothing_then_the_edit(people: Table, api: Sandbox,
                                                                write_config) -> None:
    people.add(1, 120)  # three pages of 50
    path = write_config(contacts={"people": people_stream()}, source={"url": people.url})

    first = run_passes(path)["people"]
    assert first.outcome == "ok", first.error
    assert (first.counts.read, first.counts.sent) == (120, 120)
    assert len(api.contacts) == 120

    api.reset()
    second = run_passes(path)["people"]
    assert (second.counts.read, second.counts.sent, second.counts.skipped) == (120, 0, 120)
    assert not api.contact_writes

    # No timestamp anywhere: the edit is found by its digest alone, and sent once.
    people.execute("UPDATE people SET city = 'Lund' WHERE person_id = 77")
    third = run_passes(path)["people"]
    assert third.counts.sent == 1
    assert api.contact_writes == Counter({"77": 1})
    assert api.contacts["77"]["general"]["city"] == "Lund"
    api.reset()
    assert run_passes(path)["people"].counts.sent == 0
    assert not api.contact_writes


def test_a_deleted_row_gives_one_event_and_comes_back_as_an_upsert(
        people: Table, api: Sandbox, write_config) -> None:
    people.add(1, 120)
    path = write_config(contacts={"people": people_stream(on_delete={"event": "OptOut"})},
                        source={"url": people.url})
    assert run_passes(path)["people"].counts.sent == 120

    people.execute("DELETE FROM people WHERE person_id IN (7, 99)")
    gone = run_passes(path)["people"]
    assert gone.outcome == "ok", gone.error
    assert gone.counts.deleted == 2
    assert sorted((contact, body["name"]) for contact, body in api.events) == [
        ("7", "OptOut"), ("99", "OptOut")]
    assert not api.contact_writes.keys() - {str(i) for i in range(1, 121)}

    # Once per disappearance: the next passes send no more.
    api.reset()
    again = run_passes(path)["people"]
    assert (again.counts.deleted, again.counts.events, len(api.events)) == (0, 0, 0)

    # The same id comes back: a new contact, upserted again (its digest was forgotten).
    people.add(7, 1)
    back = run_passes(path)["people"]
    assert back.counts.sent == 1
    assert api.contact_writes == Counter({"7": 1})
    assert not api.events


def test_on_delete_ignore_counts_and_shows_in_status(people: Table, api: Sandbox,
                                                     write_config) -> None:
    people.add(1, 60)
    path = write_config(contacts={"people": people_stream()}, source={"url": people.url})
    run_passes(path)
    people.execute("DELETE FROM people WHERE person_id = 3")
    gone = run_passes(path)["people"]
    assert gone.counts.deleted == 1
    assert not api.events
    assert "1 deleted" in gone.line()
    rows = report.status(config.load(path))
    assert rows[0]["deleted"] == 1
    assert rows[0]["last_run"]["deleted"] == 1
    assert run_passes(path)["people"].counts.deleted == 0
    assert report.status(config.load(path))[0]["deleted"] == 1


def test_a_stopped_pass_counts_no_delete(people: Table, api: Sandbox, write_config) -> None:
    import asyncio

    from connector import session
    from connector.sync import run_pass

    people.add(1, 120)
    stream = people_stream(on_delete={"event": "OptOut"}, page_size=10)
    path = write_config(contacts={"people": stream}, source={"url": people.url})
    run_passes(path)
    people.execute("DELETE FROM people WHERE person_id = 110")  # on the last page

    class AfterFirstPage:
        stopped = False

        def is_set(self) -> bool:
            return self.stopped

    async def stopped_pass() -> Any:
        flag = AfterFirstPage()
        async with session.opened(config.load(path), stop=flag) as ctx:
            ctx.on_page = lambda _stream, _rows: setattr(flag, "stopped", True)
            return await run_pass(ctx, "people")

    partial = asyncio.run(stopped_pass())
    assert partial.outcome == "stopped"
    assert 0 < partial.counts.read <= 40  # the first page only (narrow pages are larger)
    assert (partial.counts.deleted, len(api.events)) == (0, 0)

    whole = run_passes(path)["people"]
    assert whole.counts.deleted == 1
    assert [contact for contact, _ in api.events] == ["110"]


def test_a_failed_pass_counts_no_delete(db: Database, api: Sandbox, write_config,
                                        tmp_path: Path) -> None:
    people = Table("postgresql", db, tmp_path)
    people.add(1, 120)
    path = write_config(contacts={"people": people_stream()}, source={"url": people.url})
    run_passes(path)
    people.execute("UPDATE people SET city = 'Malmö' WHERE person_id = 2")  # first page
    people.execute("DELETE FROM people WHERE person_id = 101")

    api.faults.error_rate = 1.0  # Wiraya answers every call with a 503
    failed = run_passes(path)["people"]
    assert failed.outcome == "failed"
    assert failed.counts.deleted == 0
    assert report.status(config.load(path))[0]["deleted"] == 0

    api.faults.error_rate = 0.0
    healed = run_passes(path)["people"]
    assert (healed.counts.sent, healed.counts.deleted) == (1, 1)


def test_reconcile_finds_what_the_cursor_missed(db: Database, api: Sandbox,
                                                write_config) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 200, at="'2020-01-01T00:00:00Z'::timestamptz + i * interval '1h'")
    stream = customers_stream(reconcile="1h", on_delete={"event": "OptOut"}, page_size=64)
    path = write_config(contacts={"customers": stream})
    assert run_passes(path)["customers"].counts.sent == 200

    # An application that forgets updated_at, and a row deleted.
    db.execute("UPDATE customers SET city = 'Visby' WHERE customer_id = 150")
    db.execute("DELETE FROM customers WHERE customer_id = 20")
    writes = api.contact_writes
    live = run_passes(path, how=Live())["customers"]
    assert (live.counts.sent, live.counts.deleted, len(api.events)) == (0, 0, 0)

    found = run_passes(path, how=Reconcile())["customers"]
    assert found.outcome == "ok", found.error
    assert found.kind == "reconcile"
    assert (found.counts.read, found.counts.sent, found.counts.deleted) == (199, 1, 1)
    assert api.contact_writes - writes == Counter({"150": 1})
    assert api.contacts["150"]["general"]["city"] == "Visby"
    assert [(contact, body["name"]) for contact, body in api.events] == [("20", "OptOut")]
    # The watermark is the live passes' business: a reconcile leaves it where it was.
    assert found.watermark is None
    assert run_passes(path, how=Reconcile())["customers"].counts.sent == 0


def test_reconcile_on_an_event_stream_is_a_live_pass(db: Database, api: Sandbox,
                                                     write_config) -> None:
    db.execute(CUSTOMERS)
    db.execute("CREATE TABLE orders (order_id bigint PRIMARY KEY, customer_id bigint, "
               "created_at timestamptz NOT NULL DEFAULT now())")
    db.execute("INSERT INTO orders (order_id, customer_id) VALUES (1, 5)")
    api.faults.strict_order = False  # no contact stream: the contacts come from elsewhere
    path = write_config(events={"orders": {"table": "orders", "id": "order_id",
                                           "contact": "customer_id", "cursor": "created_at",
                                           "wait_for_contact": False}})
    reports = run_passes(path, how=Reconcile())
    assert reports["orders"].outcome == "ok", reports["orders"].error
    assert reports["orders"].counts.sent == 1


def test_an_emptied_table_counts_no_delete(people: Table, api: Sandbox, write_config) -> None:
    # A table emptied (a reload in progress, a lost grant) is not every customer leaving.
    people.add(1, 30)
    path = write_config(contacts={"people": people_stream(on_delete={"event": "OptOut"})},
                        source={"url": people.url})
    run_passes(path)
    people.execute("DELETE FROM people")
    empty = run_passes(path)["people"]
    assert (empty.outcome, empty.counts.read, empty.counts.deleted) == ("ok", 0, 0)
    assert not api.events
    people.add(1, 29)  # the reload finishes, one row fewer
    reloaded = run_passes(path)["people"]
    assert (reloaded.counts.sent, reloaded.counts.deleted) == (0, 1)
    assert [contact for contact, _ in api.events] == ["30"]


def test_text_ids_on_postgresql(db: Database, api: Sandbox, write_config) -> None:
    # Ids that are text: narrow pages of (id, digest) rows rather than packed ones.
    db.execute("CREATE TABLE members (code text PRIMARY KEY, mobile text, city text)")
    db.execute("INSERT INTO members SELECT 'M-' || i, '+4670' || (1000000 + i), 'City' || i "
               "FROM generate_series(1, 90) AS i")
    stream = {"table": "members", "id": "code", "cursor": "none", "page_size": 25,
              "personal": {"phoneNumber": {"column": "mobile", "region": "SE"}},
              "general": {"city": "city"}, "on_delete": {"event": "OptOut"}}
    path = write_config(contacts={"members": stream})
    assert run_passes(path)["members"].counts.sent == 90
    db.execute("UPDATE members SET city = 'Kiruna' WHERE code = 'M-40'")
    db.execute("DELETE FROM members WHERE code = 'M-7'")
    writes = api.contact_writes
    second = run_passes(path)["members"]
    assert (second.counts.read, second.counts.sent, second.counts.deleted) == (89, 1, 1)
    assert api.contact_writes - writes == Counter({"M-40": 1})
    assert [contact for contact, _ in api.events] == ["M-7"]
    assert run_passes(path)["members"].counts.sent == 0


def test_a_dry_run_compares_and_changes_nothing(people: Table, api: Sandbox,
                                                write_config) -> None:
    people.add(1, 60)
    path = write_config(contacts={"people": people_stream(on_delete={"event": "OptOut"})},
                        source={"url": people.url})
    run_passes(path)
    people.execute("UPDATE people SET city = 'Umeå' WHERE person_id = 5")
    people.execute("DELETE FROM people WHERE person_id = 6")
    writes = api.contact_writes
    dry = run_passes(path, dry_run=True)["people"]
    assert (dry.outcome, dry.counts.sent, dry.counts.deleted) == ("ok", 1, 0)
    assert api.contact_writes == writes
    assert not api.events
    real = run_passes(path)["people"]
    assert (real.counts.sent, real.counts.deleted) == (1, 1)


@pytest.mark.slow
def test_sync_reconcile_on_the_command_line(db: Database, api: Sandbox, write_config) -> None:
    from tests.conftest import cli

    db.execute(CUSTOMERS)
    add_customers(db, 1, 30, at="'2020-01-01T00:00:00Z'::timestamptz + i * interval '1h'")
    path = write_config(contacts={"customers": customers_stream(reconcile="1h")})
    assert cli("--config", str(path), "sync").returncode == 0
    db.execute("UPDATE customers SET city = 'Visby' WHERE customer_id = 3")
    db.execute("DELETE FROM customers WHERE customer_id = 4")
    result = cli("--config", str(path), "-v", "sync", "--reconcile")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"customers: 29 read, 1 sent, 28 skipped, 1 deleted in [0-9.]+s\n",
                        result.stdout)
    assert "reconcile found 1 changed row(s) that the live passes had not sent and 1 " \
           "deleted row(s)" in result.stderr
    status = cli("--config", str(path), "status")
    assert "customers: 1 contact(s) found deleted from the table so far" in status.stdout


def test_check_says_what_cursor_none_means(people: Table, api: Sandbox, write_config) -> None:
    import asyncio

    path = write_config(contacts={"people": people_stream()}, source={"url": people.url})
    findings = asyncio.run(report.check(config.load(path)))
    assert ("ok", "contacts.people: people (table), id person_id, cursor none: each pass "
                  "compares the whole table") in findings
    assert [text for level, text in findings if level == "fail"] == []
