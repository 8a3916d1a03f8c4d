"""Contact sync end to end: a real PostgreSQL table, the sandbox API over HTTP, the state file."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import stat
import time
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from connector import config, session
from connector.sandbox import Sandbox
from connector.source import Source
from connector.state import State
from connector.sync import Report, run_pass
from tests.conftest import (
    API_KEY,
    CUSTOMERS,
    Database,
    add_customers,
    connector_statements,
    customers_stream,
    run_passes,
)


def contact_puts(api: Sandbox) -> int:
    return sum(1 for r in api.requests if r.method == "PUT" and r.status == 200)


def test_ten_thousand_rows_then_only_what_changed(db: Database, api: Sandbox,
                                                  write_config) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 10_000)
    path = write_config(contacts={"customers": customers_stream()},
                        wiraya={"bulk_size": 100, "concurrency": 8})

    first = run_passes(path)["customers"]
    assert first.outcome == "ok", first.error
    assert first.counts["sent"] == 10_000
    assert len(api.contacts) == 10_000
    assert api.contacts["42"] == {
        "schema": 1,
        "personal": {"phoneNumber": "46701000042", "givenName": "Given42",
                     "surName": "Family42"},
        "general": {"city": "City42"},
    }

    # Nothing changed: the rows inside the lookback are read again, none is sent.
    api.reset()
    second = run_passes(path)["customers"]
    assert second.counts["sent"] == 0
    assert second.counts["read"] == 10_000  # all rows were written within the lookback
    assert contact_puts(api) == 0

    # 100 rows change: exactly those 100 go out.
    db.execute("UPDATE customers SET city = city || '-moved', updated_at = now() "
               "WHERE customer_id % 100 = 0")
    api.reset()
    third = run_passes(path)["customers"]
    assert third.counts["sent"] == 100
    assert set(api.contact_writes) == {str(i) for i in range(100, 10_001, 100)}
    assert api.contacts["500"]["general"]["city"] == "City0-moved"


def test_touching_a_row_without_changing_it_sends_nothing(db: Database, api: Sandbox,
                                                           write_config) -> None:
    db.execute(CUSTOMERS)
    # One row a minute, from 2 hours ago back.
    add_customers(db, 1, 50, at="now() - interval '2 hours' - i * interval '1 minute'")
    path = write_config(contacts={"customers": customers_stream(lookback="10m")})
    run_passes(path)
    db.execute("UPDATE customers SET updated_at = now() WHERE customer_id > 40")
    api.reset()
    report = run_passes(path)["customers"]
    # Read: the rows within the lookback of the watermark (ids 1-11, both ends included)
    # and the 10 touched ones; the other 29 are not read at all.
    assert report.counts["read"] == 21
    assert report.counts["skipped"] == 21
    assert contact_puts(api) == 0


def test_an_unchanged_pass_reads_only_the_lookback_window(db: Database, api: Sandbox,
                                                          write_config) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 2_000, at="now() - interval '1 day' + i * interval '1 second'")
    path = write_config(contacts={"customers": customers_stream(lookback="1m")},
                        wiraya={"bulk_size": 100})
    assert run_passes(path)["customers"].counts["sent"] == 2_000
    report = run_passes(path)["customers"]
    assert report.counts["read"] == 60 + 1  # the last minute of rows, both ends included
    assert report.counts["sent"] == 0


def test_rows_sharing_one_cursor_value_all_arrive(db: Database, api: Sandbox,
                                                  write_config) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 1_234, at="'2026-11-01 12:00:00+00'")
    path = write_config(contacts={"customers": customers_stream(page_size=100)},
                        wiraya={"bulk_size": 100})
    report = run_passes(path)["customers"]
    assert report.counts["sent"] == 1_234
    assert len(api.contacts) == 1_234


def test_full_precision_of_the_cursor_is_kept(db: Database, api: Sandbox,
                                              write_config) -> None:
    db.execute(CUSTOMERS)
    # Three rows one microsecond apart; page size 1 puts each boundary between them.
    add_customers(db, 1, 3,
                  at="'2026-11-01 12:00:00.000001+00'::timestamptz + i * interval '1 microsecond'")
    path = write_config(contacts={"customers": customers_stream(page_size=1, lookback="0s")})
    report = run_passes(path)["customers"]
    assert report.counts["sent"] == 3
    assert report.watermark is not None
    assert report.watermark.cursor.microsecond == 4
    # A row one microsecond later than the watermark arrives; nothing older is re-sent.
    add_customers(db, 4, 1, at="'2026-11-01 12:00:00.000005+00'")
    api.reset()
    again = run_passes(path)["customers"]
    assert again.counts["sent"] == 1
    assert set(api.contact_writes) == {"4"}


def test_a_row_committed_late_within_the_lookback_arrives(db: Database, api: Sandbox,
                                                          write_config) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 10, at="now() - interval '1 hour'")
    path = write_config(contacts={"customers": customers_stream(lookback="10m")})
    run_passes(path)

    # A transaction takes its cursor value now, and commits only after a later row was synced.
    # It calls itself the connector, so the open-transaction guard does not see it: this
    # test is about the lookback alone.
    late = psycopg.connect(db.server.dsn(db.name), application_name="wiraya-connector")
    late.execute("INSERT INTO customers (customer_id, mobile, updated_at) "
                 "VALUES (1001, '+46701111111', now())")
    time.sleep(0.05)
    add_customers(db, 1002, 1, at="clock_timestamp()")
    first = run_passes(path)["customers"]
    assert "1002" in api.contacts and "1001" not in api.contacts
    assert first.watermark is not None
    late.commit()
    late.close()

    run_passes(path)
    assert "1001" in api.contacts


def test_open_transaction_guard_holds_the_start_back(db: Database, api: Sandbox,
                                                     write_config) -> None:
    """With no lookback at all, a transaction open for longer still loses nothing."""
    db.execute(CUSTOMERS)
    path = write_config(contacts={"customers": customers_stream(lookback="0s")})
    slow = psycopg.connect(db.server.dsn(db.name))
    slow.execute("INSERT INTO customers (customer_id, mobile, updated_at) "
                 "VALUES (1, '+46701111111', now())")
    time.sleep(0.3)
    add_customers(db, 2, 1, at="clock_timestamp()")
    run_passes(path)
    assert set(api.contacts) == {"2"}
    time.sleep(0.3)
    add_customers(db, 3, 1, at="clock_timestamp()")
    run_passes(path)  # the watermark moves past the open transaction's cursor value
    slow.commit()
    slow.close()
    run_passes(path)
    assert set(api.contacts) == {"1", "2", "3"}


def test_an_integer_cursor_waits_for_a_transaction_that_took_a_value_and_commits_late(
        db: Database, api: Sandbox, write_config) -> None:
    """A bigserial cursor: a transaction takes value 6, stays open past a pass that sees
    7..60 committed, and commits later; row 6 still arrives (the watermark is held at the
    highest value seen before that transaction began)."""
    db.execute("CREATE TABLE members (member_id bigserial PRIMARY KEY, mobile text NOT NULL, "
               "name text)")
    add = "INSERT INTO members (mobile, name) SELECT '+4670' || lpad((1000000 + i)::text, " \
          "7, '0'), 'M' || i FROM generate_series(1, %s) AS i"
    db.execute(add, (5,))
    stream = {"table": "members", "id": "member_id", "cursor": "member_id", "lookback": 10,
              "personal": {"phoneNumber": {"column": "mobile", "region": "SE"},
                           "givenName": "name"}}
    path = write_config(contacts={"members": stream})
    assert run_passes(path)["members"].counts["sent"] == 5
    slow = psycopg.connect(db.server.dsn(db.name))
    slow.execute("INSERT INTO members (mobile, name) VALUES ('+46709999999', 'Late')")
    assert slow.execute("SELECT currval('members_member_id_seq')").fetchone() == (6,)
    db.execute(add, (54,))  # ids 7..60, committed
    assert run_passes(path)["members"].counts["sent"] == 54
    with State.open(path.parent / "state" / "connector.db") as state:
        watermark = state.watermark("members")
    assert watermark is not None and watermark.cursor == 5  # held below the open one
    slow.commit()
    slow.close()
    run_passes(path)
    assert set(api.contacts) == {str(i) for i in range(1, 61)}


def test_bad_rows_are_dead_lettered_and_flow_once_fixed(db: Database, api: Sandbox,
                                                        write_config) -> None:
    # No primary key, so a NULL id is possible.
    db.execute("CREATE TABLE people (id text, mobile text, name text, "
               "updated_at timestamptz NOT NULL DEFAULT now())")
    db.execute("CREATE INDEX ON people (updated_at)")
    db.execute("INSERT INTO people VALUES ('a', '070-123 45 67', 'Anna', now()), "
               "('b', '12345', 'Bo', now()), (NULL, '070-765 43 21', 'Nobody', now()), "
               "('c', '+46 73 111 22 33', 'Cia', now())")
    stream = {"table": "people", "id": "id", "cursor": "updated_at",
              "personal": {"phoneNumber": {"column": "mobile", "region": "SE"},
                           "givenName": "name"}}
    path = write_config(contacts={"people": stream})
    report = run_passes(path)["people"]
    assert report.outcome == "ok"
    assert set(api.contacts) == {"a", "c"}
    assert api.contacts["a"]["personal"]["phoneNumber"] == "46701234567"

    state = sqlite3.connect(path.parent / "state" / "connector.db")
    held = dict(state.execute("SELECT row_key, reason FROM held WHERE state = 'dead'"))
    assert set(held) == {"b", next(k for k in held if k.startswith("(no id)"))}
    assert "personal.phoneNumber (column mobile) is not a valid phone number" in held["b"]
    assert "12345" not in held["b"]  # no personal data in the state file
    null_key = next(k for k in held if k.startswith("(no id)"))
    assert "id column id is NULL" in held[null_key]

    # Fix both rows without touching the cursor: the next pass still delivers them.
    db.execute("UPDATE people SET mobile = '070-555 66 77' WHERE id = 'b'")
    db.execute("UPDATE people SET id = 'd' WHERE id IS NULL")
    run_passes(path)
    assert set(api.contacts) == {"a", "b", "c", "d"}
    assert api.contacts["b"]["personal"]["phoneNumber"] == "46705556677"
    assert state.execute("SELECT count(*) FROM held").fetchone() == (0,)


def test_an_unfixed_bad_row_costs_no_request_on_later_passes(db: Database, api: Sandbox,
                                                             write_config) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 3)
    api.faults.reject_ids = {"2"}  # Wiraya refuses this contact for good (400)
    path = write_config(contacts={"customers": customers_stream()})
    report = run_passes(path)["customers"]
    assert report.counts["dead"] == 1 and report.counts["sent"] == 2
    api.reset()
    again = run_passes(path)["customers"]
    assert again.counts["sent"] == 0
    assert not [r for r in api.requests if r.method == "PUT"]


def test_naive_timestamps_are_read_in_the_configured_zone(db: Database, api: Sandbox,
                                                          write_config) -> None:
    db.execute("CREATE TABLE shop (id int PRIMARY KEY, mobile text, registered timestamp, "
               "changed timestamp NOT NULL)")
    db.execute("INSERT INTO shop VALUES (1, '+46701234567', '2026-07-01 10:00:00.25', "
               "'2026-07-01 10:00:00')")
    stream = {"table": "shop", "id": "id", "cursor": "changed",
              "personal": {"phoneNumber": "mobile"},
              "general": {"timeOfRegistration": "registered"}}
    path = write_config(contacts={"shop": stream}, source={"timezone": "Europe/Stockholm"})
    run_passes(path)
    # 10:00 in Stockholm in July is 08:00 UTC.
    assert api.contacts["1"]["general"]["timeOfRegistration"] == "2026-07-01T08:00:00.25Z"


def test_the_state_file_is_private_and_holds_no_secret(db: Database, api: Sandbox,
                                                       write_config) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 20)
    path = write_config(contacts={"customers": customers_stream()})
    run_passes(path)
    state_file = path.parent / "state" / "connector.db"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    raw = state_file.read_bytes()
    assert API_KEY.encode() not in raw
    assert b"db-pass" not in raw
    assert b"Given1" not in raw and b"4670" not in raw  # no personal data either


def test_a_dry_run_sends_nothing_and_keeps_no_state(db: Database, api: Sandbox,
                                                    write_config) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 25)
    path = write_config(contacts={"customers": customers_stream()})
    report = run_passes(path, dry_run=True)["customers"]
    assert report.counts["sent"] == 25
    assert api.requests == []
    assert not (path.parent / "state").exists()  # not even its folder
    assert run_passes(path)["customers"].counts["sent"] == 25


def test_a_dry_run_shows_what_it_would_send_and_leaves_the_state_file_alone(
        db: Database, api: Sandbox, write_config) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 25)
    path = write_config(contacts={"customers": customers_stream()})
    run_passes(path)
    db.execute("UPDATE customers SET city = 'Elsewhere', updated_at = now() "
               "WHERE customer_id IN (3, 7)")
    state_file = path.parent / "state" / "connector.db"
    before = hashlib.sha256(state_file.read_bytes()).hexdigest()
    heard: list[tuple[str, str, dict[str, Any]]] = []

    async def dry_run() -> Report:
        settings = config.load(path)
        async with session.opened(settings, dry_run=True) as ctx:
            ctx.on_send = lambda kind, key, body: heard.append((kind, key, body))
            return await run_pass(ctx, "customers")

    requests = len(api.requests)
    report = asyncio.run(dry_run())
    assert report.counts["sent"] == 2
    assert sorted((kind, key, body["general"]["city"]) for kind, key, body in heard) == [
        ("contact", "3", "Elsewhere"), ("contact", "7", "Elsewhere")]
    assert len(api.requests) == requests
    # Untouched: a reader of a WAL file may leave SQLite's side files, with nothing in them.
    assert hashlib.sha256(state_file.read_bytes()).hexdigest() == before
    wal = state_file.with_name("connector.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    assert run_passes(path)["customers"].counts["sent"] == 2


def test_reads_run_in_read_only_transactions(db: Database) -> None:
    db.execute(CUSTOMERS)
    source = Source(config.Source(url=db.url))
    try:
        with source.engine.connect() as conn:
            assert conn.execute(sa.text("SHOW default_transaction_read_only")).scalar() == "on"
            assert conn.execute(sa.text("SHOW application_name")).scalar() == "wiraya-connector"
            with pytest.raises(sa.exc.DBAPIError) as caught:
                conn.execute(sa.text("DELETE FROM customers"))
            assert isinstance(caught.value.orig, psycopg.errors.ReadOnlySqlTransaction)
    finally:
        source.close()


def test_a_first_sync_reads_whole_pages_and_keeps_the_servers_digests(
        db: Database, api: Sandbox, write_config) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 300)
    path = write_config(contacts={"customers": customers_stream(page_size=100)},
                        wiraya={"bulk_size": 100})
    first = connector_statements(db, lambda: run_passes(path))
    # Every row is new: three pages read whole (with the digest), no page read narrow first
    # and then again by id.
    assert len([line for line in first if "hashtextextended" in line]) == 4  # 3 + the empty end
    assert not [line for line in first if " = ANY (" in line], first
    assert len(api.contacts) == 300

    # The digests kept are the server's: the next pass reads narrow and finds nothing changed.
    db.execute("UPDATE customers SET city = 'Elsewhere', updated_at = now() "
               "WHERE customer_id = 150")
    api.reset()
    again = connector_statements(db, lambda: run_passes(path))
    by_id = [line for line in again if " = ANY (" in line]  # integer ids: one array
    assert len(by_id) == 1 and by_id[0].endswith("$2 = '{150}'"), by_id  # $1: the seed
    assert set(api.contact_writes) == {"150"}
