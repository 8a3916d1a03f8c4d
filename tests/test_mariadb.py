"""MySQL/MariaDB as a source, end to end: a real MariaDB server started by the suite
(tests/mariadbserver.py), the sandbox API over HTTP, the state file; and the URL schemes."""

# ruff: noqa: F811 - the fixtures imported below are parameters of the tests
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC
from pathlib import Path

import pymysql
import pytest
import sqlalchemy as sa

from connector import config
from connector.errors import ConfigError
from connector.sandbox import Sandbox
from connector.source import Source
from tests.conftest import CUSTOMERS as PG_CUSTOMERS
from tests.conftest import DB_PASSWORD, DB_USER, Database, cli, run_passes
from tests.conftest import add_customers as pg_add_customers
from tests.conftest import customers_stream as pg_customers_stream
from tests.mariadb_fixtures import (  # noqa: F401 - fixtures
    CUSTOMERS,
    ORDERS,
    MariaDatabase,
    add_customers,
    customers_stream,
    maria_config,
    maria_server,
    mdb,
)
from tests.mariadbserver import MariaDbServer
from tests.test_config import ENV, dump, minimal, problem_at, problems_of

CONVERSIONS = {"table": "orders", "id": "order_id", "contact": "customer_id",
               "cursor": "created_at", "name": "Conversion"}


def contact_puts(api: Sandbox) -> int:
    return sum(1 for r in api.requests if r.method == "PUT" and r.status == 200)


def add_orders(db: MariaDatabase, first: int, count: int, customers: int,
               at: str = "NOW(6)") -> None:
    db.execute(f"""
        INSERT INTO orders (order_id, customer_id, amount, created_at)
        SELECT i, 1 + i % {customers}, 10 + i % 90, {at}
        FROM (SELECT seq AS i FROM seq_{first}_to_{first + count - 1}) AS numbers""")


def reader_without_process(mdb: MariaDatabase) -> str:
    """A user that may read the database but not see other sessions' transactions."""
    user = f"r{uuid.uuid4().hex[:10]}"
    with contextlib.closing(mdb.server.connect()) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}'")
        cur.execute(f"GRANT SELECT ON `{mdb.name}`.* TO '{user}'@'127.0.0.1'")
    return mdb.server.url(mdb.name, user, DB_PASSWORD)


# -- URLs as users have them ------------------------------------------------------------


@pytest.mark.parametrize(("written", "driver"), [
    ("postgres://u:pw@db:5432/shop", "postgresql+psycopg://u:pw@db:5432/shop"),
    ("postgresql://u:pw@db/shop", "postgresql+psycopg://u:pw@db/shop"),
    ("postgresql+psycopg://u:pw@db/shop", "postgresql+psycopg://u:pw@db/shop"),
    ("mysql://u:pw@db:3306/shop", "mysql+pymysql://u:pw@db:3306/shop"),
    ("mariadb://u:pw@db/shop?ssl_verify_cert=true",
     "mysql+pymysql://u:pw@db/shop?ssl_verify_cert=true"),
    ("MySQL://u:p%40ss@db/shop", "mysql+pymysql://u:p%40ss@db/shop"),
    ("sqlite:///demo.db", "sqlite:///demo.db"),
])
def test_urls_as_users_write_them_get_the_shipped_driver(written: str, driver: str) -> None:
    settings = config.parse(dump(minimal(source={"url": written})), env=ENV)
    assert settings.source.driver_url.url == driver
    assert settings.source.url.get_secret_value() == written  # kept as written


@pytest.mark.parametrize(("url", "words"), [
    ("oracle://u:Secret-77@db/shop", "the 'oracle' database is not supported; URLs that "
                                     "work: postgres://"),
    ("mssql+pyodbc://u:Secret-77@db/shop", "mysql://user:password@host:3306/dbname"),
    ("mysql+mysqldb://u:Secret-77@db/shop", "use the PyMySQL driver"),
    ("postgresql+psycopg2://u:Secret-77@db/shop", "use the psycopg 3 driver"),
    ("my$Secret-77://u@db/shop", "the 'given' database is not supported"),
])
def test_an_unknown_scheme_names_the_ones_that_work(url: str, words: str) -> None:
    problems = problems_of(dump(minimal(source={"url": url})))
    message = problem_at(problems, "source.url")
    assert words in message
    if "my$" in url:
        assert "Secret" not in message  # something that is no scheme is never echoed
    with pytest.raises(ConfigError) as info:
        config.parse(dump(minimal(source={"url": url})), env=ENV)
    assert "u:Secret-77" not in str(info.value)


@pytest.mark.slow
def test_the_driver_is_said_once_at_debug_level(mdb: MariaDatabase, api: Sandbox,
                                                maria_config) -> None:
    mdb.execute(CUSTOMERS)
    path = maria_config(contacts={"customers": customers_stream()})
    verbose = cli("--config", str(path), "-v", "check")
    assert verbose.returncode == 0, verbose.stderr + verbose.stdout
    said = (verbose.stderr + verbose.stdout).count("database URL mysql:// is read as "
                                                   "mysql+pymysql://")
    assert said == 1
    assert DB_PASSWORD not in verbose.stderr + verbose.stdout
    quiet = cli("--config", str(path), "check")
    assert "mysql+pymysql" not in quiet.stderr + quiet.stdout


@pytest.mark.slow
def test_a_postgres_url_as_platforms_give_it_checks_and_syncs(db: Database, api: Sandbox,
                                                              write_config) -> None:
    """`DATABASE_URL=postgres://...` as Heroku-like platforms set it, on a real server."""
    db.execute(PG_CUSTOMERS)
    pg_add_customers(db, 1, 3)
    # A naive timestamp makes `check` ask the server's own session zone on a new engine.
    db.execute("CREATE TABLE shop (id int PRIMARY KEY, mobile text, "
               "changed timestamp NOT NULL DEFAULT localtimestamp)")
    db.execute("INSERT INTO shop (id, mobile) VALUES (1, '+46701234567')")
    url = db.url.replace("postgresql+psycopg://", "postgres://", 1)
    path = write_config(contacts={"customers": pg_customers_stream(),
                                  "shop": {"table": "shop", "id": "id", "cursor": "changed",
                                           "personal": {"phoneNumber": "mobile"}}},
                        source={"url": url, "timezone": "UTC"})
    checked = cli("--config", str(path), "-v", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "database URL postgres:// is read as postgresql+psycopg://" in checked.stderr
    assert "session_timezone" not in checked.stdout + checked.stderr
    reports = run_passes(path)
    assert reports["customers"].counts["sent"] == 3 and reports["shop"].counts["sent"] == 1


# -- the session: read-only, UTC, a time limit ----------------------------------------


def test_the_connectors_session_cannot_write(mdb: MariaDatabase) -> None:
    mdb.execute(CUSTOMERS)
    add_customers(mdb, 1, 1)
    # The superuser may write anything: only the session setting stops the connector.
    source = Source(config.Source(url=mdb.server.url(mdb.name), statement_timeout="7s"))
    try:
        with source.engine.connect() as conn:
            settings = conn.execute(sa.text(
                "SELECT @@tx_read_only, @@time_zone, @@max_statement_time")).one()
            assert tuple(settings) == (1, "+00:00", 7.0)
            for statement in ("DELETE FROM customers", "UPDATE customers SET city = 'x'",
                              "INSERT INTO customers (customer_id) VALUES (99)"):
                with pytest.raises(sa.exc.DBAPIError) as caught:
                    conn.execute(sa.text(statement))
                assert caught.value.orig.args[0] == 1792  # READ ONLY transaction
                conn.rollback()
    finally:
        source.close()
    assert mdb.rows("SELECT customer_id, city FROM customers") == [(1, "City1")]


def test_a_statement_past_the_time_limit_is_stopped_by_the_server(mdb: MariaDatabase) -> None:
    source = Source(config.Source(url=mdb.url, statement_timeout="1s"))
    try:
        with source.engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as caught:
            conn.execute(sa.text("SELECT SLEEP(30)")).all()
        assert caught.value.orig.args[0] == 1969  # max_statement_time exceeded
    finally:
        source.close()


@pytest.mark.slow
def test_a_wrong_password_is_a_clear_line_without_it(mdb: MariaDatabase, api: Sandbox,
                                                      maria_config) -> None:
    mdb.execute(CUSTOMERS)
    wrong = mdb.server.url(mdb.name, DB_USER, "Wrong-Pass-991")
    path = maria_config(contacts={"customers": customers_stream()}, source={"url": wrong})
    result = cli("--config", str(path), "check")
    assert result.returncode != 0
    assert f"Access denied for user '{DB_USER}'" in result.stdout
    assert "Wrong-Pass-991" not in result.stdout + result.stderr


def test_ping_now_and_the_guard_ask_the_server(mdb: MariaDatabase) -> None:
    source = Source(config.Source(url=mdb.url))
    try:
        version = source.ping()
        assert version == "MariaDB " + mdb.server.version().split("-", 1)[0]
        server_now = mdb.rows("SELECT UTC_TIMESTAMP(6)")[0][0].replace(tzinfo=UTC)
        now = source.now()
        assert now.tzinfo is not None
        assert abs((now - server_now).total_seconds()) < 5
        assert source.guard_visibility() == "all"
    finally:
        source.close()


# -- contacts end to end ------------------------------------------------------------------


@pytest.mark.slow
def test_ten_thousand_rows_then_only_what_changed(mdb: MariaDatabase, api: Sandbox,
                                                  maria_config) -> None:
    mdb.execute(CUSTOMERS)
    add_customers(mdb, 1, 10_000)
    path = maria_config(contacts={"customers": customers_stream()},
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

    # Nothing changed: the rows inside the lookback are read again (narrow), none is sent.
    api.reset()
    second = run_passes(path)["customers"]
    assert second.counts["sent"] == 0
    assert second.counts["read"] == 10_000
    assert second.counts["skipped"] == 10_000  # the server's digests matched: none read wide
    assert contact_puts(api) == 0

    # 100 rows change: exactly those 100 go out.
    mdb.execute("UPDATE customers SET city = CONCAT(city, '-moved'), "
                "updated_at = CURRENT_TIMESTAMP(6) WHERE customer_id % 100 = 0")
    api.reset()
    third = run_passes(path)["customers"]
    assert third.counts["sent"] == 100
    assert set(api.contact_writes) == {str(i) for i in range(100, 10_001, 100)}
    assert api.contacts["500"]["general"]["city"] == "City0-moved"


def connector_reads(mdb: MariaDatabase, run: Callable[[], object]) -> list[str]:
    """The statements the connector's user ran on `customers` while `run` ran."""
    with contextlib.closing(mdb.server.connect()) as conn, conn.cursor() as cur:
        cur.execute("SET GLOBAL log_output = 'TABLE'")
        cur.execute("TRUNCATE TABLE mysql.general_log")
        cur.execute("SET GLOBAL general_log = 1")
        try:
            run()
        finally:
            cur.execute("SET GLOBAL general_log = 0")
        cur.execute("SELECT CONVERT(argument USING utf8mb4) FROM mysql.general_log "
                    "WHERE user_host LIKE %s AND command_type = 'Query'",
                    (f"{DB_USER}[{DB_USER}]%",))
        statements = [row[0] for row in cur.fetchall()]
        cur.execute("TRUNCATE TABLE mysql.general_log")
    # Pages and reads by id; not the lookup of rows a keyset walk cannot reach.
    return [text for text in statements if "FROM customers" in text and "ORDER BY" in text]


def test_unchanged_pages_are_read_narrow_with_the_servers_digest(
        mdb: MariaDatabase, api: Sandbox, maria_config) -> None:
    mdb.execute(CUSTOMERS)
    add_customers(mdb, 1, 300)
    path = maria_config(contacts={"customers": customers_stream(page_size=100)})
    run_passes(path)

    # A narrow page selects the cursor, the id and the server's digest of the row, nothing else.
    narrow = ("SELECT customers.updated_at, customers.customer_id, "
              "CAST(customers.customer_id AS CHAR) AS customer_id__1, CAST(conv(left(md5(")
    reads = connector_reads(mdb, lambda: run_passes(path))
    assert len(reads) >= 3  # three pages of 100
    assert all(text.startswith(narrow) for text in reads), reads

    mdb.execute("UPDATE customers SET city = 'Elsewhere' WHERE customer_id = 150")
    api.reset()
    reads = connector_reads(mdb, lambda: run_passes(path))
    wide = [text for text in reads if not text.startswith(narrow)]
    assert len(wide) == 1 and "IN (150)" in wide[0]  # only the changed row, by id
    assert set(api.contact_writes) == {"150"}


def test_a_change_the_digest_must_see_is_sent(mdb: MariaDatabase, api: Sandbox,
                                              maria_config) -> None:
    """NULL <-> empty text and a value moving between columns change the server's digest."""
    mdb.execute(CUSTOMERS)
    add_customers(mdb, 1, 3)
    mdb.execute("UPDATE customers SET first_name = NULL, last_name = 'x' WHERE customer_id = 1")
    path = maria_config(contacts={"customers": customers_stream()})
    run_passes(path)
    mdb.execute("UPDATE customers SET first_name = 'x', last_name = NULL WHERE customer_id = 1")
    mdb.execute("UPDATE customers SET first_name = '' WHERE customer_id = 2")
    api.reset()
    report = run_passes(path)["customers"]
    assert report.counts["sent"] == 2
    assert api.contacts["1"]["personal"]["givenName"] == "x"
    assert "surName" not in api.contacts["1"]["personal"]


def test_rows_sharing_one_cursor_value_all_arrive(mdb: MariaDatabase, api: Sandbox,
                                                  maria_config) -> None:
    mdb.execute(CUSTOMERS)
    add_customers(mdb, 1, 1_234, at="'2026-11-01 12:00:00'")
    path = maria_config(contacts={"customers": customers_stream(page_size=100)},
                        wiraya={"bulk_size": 100})
    report = run_passes(path)["customers"]
    assert report.counts["sent"] == 1_234
    assert len(api.contacts) == 1_234


@pytest.mark.parametrize("column", ["TIMESTAMP(6)", "DATETIME(6)"])
def test_full_precision_of_the_cursor_is_kept(mdb: MariaDatabase, api: Sandbox,
                                              maria_config, column: str) -> None:
    mdb.execute(CUSTOMERS.replace("updated_at  TIMESTAMP(6) NOT NULL DEFAULT "
                                  "CURRENT_TIMESTAMP(6)", f"updated_at {column} NOT NULL"))
    # Three rows one microsecond apart; page size 1 puts each boundary between them.
    add_customers(mdb, 1, 3,
                  at="'2026-11-01 12:00:00.000001' + INTERVAL i MICROSECOND")
    path = maria_config(contacts={"customers": customers_stream(page_size=1, lookback="0s")})
    report = run_passes(path)["customers"]
    assert report.counts["sent"] == 3
    assert report.watermark is not None
    assert report.watermark.cursor.microsecond == 4
    add_customers(mdb, 4, 1, at="'2026-11-01 12:00:00.000005'")
    api.reset()
    again = run_passes(path)["customers"]
    assert again.counts["sent"] == 1
    assert set(api.contact_writes) == {"4"}


def test_timestamp_reads_in_utc_and_datetime_in_the_configured_zone(
        mdb: MariaDatabase, api: Sandbox, maria_config) -> None:
    mdb.execute("CREATE TABLE shop (id INT PRIMARY KEY, mobile VARCHAR(20), "
                "registered DATETIME(6), seen TIMESTAMP(6) NULL, "
                "changed DATETIME NOT NULL, KEY (changed))")
    # The server keeps TIMESTAMP in UTC and shows it in the session's zone: write it at +02:00.
    with contextlib.closing(mdb.connect()) as conn, conn.cursor() as cur:
        cur.execute("SET time_zone = '+02:00'")
        cur.execute("INSERT INTO shop VALUES (1, '+46701234567', '2026-07-01 10:00:00.25', "
                    "'2026-07-01 12:30:00', '2026-07-01 10:00:00')")
    stream = {"table": "shop", "id": "id", "cursor": "changed",
              "personal": {"phoneNumber": "mobile"},
              "general": {"timeOfRegistration": "registered", "lastSeen": "seen"}}
    path = maria_config(contacts={"shop": stream}, source={"timezone": "Europe/Stockholm"})
    report = run_passes(path)["shop"]
    assert report.outcome == "ok", report.error
    general = api.contacts["1"]["general"]
    # 10:00 in Stockholm in July is 08:00 UTC; 12:30 at +02:00 is 10:30 UTC.
    assert general["timeOfRegistration"] == "2026-07-01T08:00:00.25Z"
    assert general["lastSeen"] == "2026-07-01T10:30:00Z"


def test_a_row_committed_late_within_the_lookback_arrives(mdb: MariaDatabase, api: Sandbox,
                                                          maria_config) -> None:
    mdb.execute(CUSTOMERS)
    add_customers(mdb, 1, 10, at="NOW(6) - INTERVAL 1 HOUR")
    # This user cannot see other transactions: the guard is off, the lookback alone acts.
    path = maria_config(contacts={"customers": customers_stream(lookback="10m")},
                        source={"url": reader_without_process(mdb)})
    run_passes(path)

    late = mdb.connect(autocommit=False)
    with late.cursor() as cur:
        cur.execute("INSERT INTO customers (customer_id, mobile, updated_at) "
                    "VALUES (1001, '+46701111111', NOW(6))")
    time.sleep(0.05)
    add_customers(mdb, 1002, 1)
    first = run_passes(path)["customers"]
    assert "1002" in api.contacts and "1001" not in api.contacts
    assert first.watermark is not None
    late.commit()
    late.close()

    run_passes(path)
    assert "1001" in api.contacts


def test_open_transaction_guard_holds_the_start_back(mdb: MariaDatabase, api: Sandbox,
                                                     maria_config) -> None:
    """With no lookback at all, a transaction open for longer still loses nothing."""
    mdb.execute(CUSTOMERS)
    path = maria_config(contacts={"customers": customers_stream(lookback="0s")})
    slow = mdb.connect(autocommit=False)
    with slow.cursor() as cur:
        cur.execute("INSERT INTO customers (customer_id, mobile, updated_at) "
                    "VALUES (1, '+46701111111', NOW(6))")
    time.sleep(1.1)  # innodb_trx shows whole seconds
    add_customers(mdb, 2, 1)
    run_passes(path)
    assert set(api.contacts) == {"2"}
    time.sleep(0.3)
    add_customers(mdb, 3, 1)
    run_passes(path)  # without the guard, the watermark moves past the open row's value
    slow.commit()
    slow.close()
    run_passes(path)
    assert set(api.contacts) == {"1", "2", "3"}


@pytest.mark.slow  # child processes
def test_check_says_whether_the_guard_is_on(mdb: MariaDatabase, api: Sandbox,
                                            maria_config, tmp_path: Path) -> None:
    mdb.execute(CUSTOMERS)
    path = maria_config(contacts={"customers": customers_stream()})
    seeing = cli("--config", str(path), "check")
    assert seeing.returncode == 0, seeing.stdout + seeing.stderr
    assert "MariaDB 10." in seeing.stdout
    assert "open-transaction guard: active" in seeing.stdout

    assert "no index starts with" not in seeing.stdout

    # A table whose cursor has no index: the proposed statement is MySQL's.
    mdb.execute("CREATE TABLE leads (id INT PRIMARY KEY, mobile VARCHAR(20), "
                "changed DATETIME(6) NOT NULL)")
    unindexed = maria_config(contacts={"leads": {"table": "leads", "id": "id",
                                                 "cursor": "changed",
                                                 "personal": {"phoneNumber": "mobile"}}})
    result = cli("--config", str(unindexed), "check")
    statement = "CREATE INDEX `leads_changed` ON `leads` (`changed`, `id`)"
    assert statement in result.stdout
    mdb.execute(statement)  # it works as proposed
    assert "no index starts with" not in cli("--config", str(unindexed), "check").stdout

    blind = maria_config(contacts={"customers": customers_stream()},
                         source={"url": reader_without_process(mdb)})
    result = cli("--config", str(blind), "check")
    assert "open-transaction guard: off" in result.stdout
    assert "GRANT PROCESS ON *.*" in result.stdout
    assert DB_PASSWORD not in result.stdout + result.stderr
    # And a pass still runs without that right.
    add_customers(mdb, 1, 2)
    assert run_passes(blind)["customers"].counts["sent"] == 2


def test_bad_rows_are_dead_lettered_and_the_rest_flows(mdb: MariaDatabase, api: Sandbox,
                                                       maria_config) -> None:
    mdb.execute(CUSTOMERS)
    add_customers(mdb, 1, 50)
    mdb.execute("UPDATE customers SET mobile = '12345' WHERE customer_id = 7")
    path = maria_config(contacts={"customers": customers_stream(page_size=10)})
    report = run_passes(path)["customers"]
    assert report.outcome == "ok"
    assert report.counts["sent"] == 49 and report.counts["dead"] == 1
    assert "7" not in api.contacts and len(api.contacts) == 49
    state = sqlite3.connect(path.parent / "state" / "connector.db")
    held = dict(state.execute("SELECT row_key, reason FROM held WHERE state = 'dead'"))
    assert list(held) == ["7"]
    assert "personal.phoneNumber (column mobile) is not a valid phone number" in held["7"]
    assert "12345" not in held["7"]

    mdb.execute("UPDATE customers SET mobile = '070-555 66 77' WHERE customer_id = 7")
    run_passes(path)
    assert api.contacts["7"]["personal"]["phoneNumber"] == "46705556677"
    assert state.execute("SELECT count(*) FROM held").fetchone() == (0,)


def test_names_with_spaces_quotes_and_backticks_are_only_names(
        mdb: MariaDatabase, api: Sandbox, maria_config) -> None:
    mdb.execute("CREATE TABLE victim (x INT)")
    mdb.execute("CREATE TABLE `we``ird \"; DROP TABLE victim; --` ("
                "`select` VARCHAR(20) PRIMARY KEY, `from` VARCHAR(20), "
                "`my col'; --` VARCHAR(20), `order by` TIMESTAMP(6) NOT NULL "
                "DEFAULT CURRENT_TIMESTAMP(6), KEY (`order by`))")
    mdb.execute("INSERT INTO `we``ird \"; DROP TABLE victim; --` "
                "(`select`, `from`, `my col'; --`) VALUES ('a', '+46701234567', 'Anna'), "
                "('b`', '+46701234568', 'Bo')")
    stream = {"table": 'we`ird "; DROP TABLE victim; --', "id": "select",
              "cursor": "order by",
              "personal": {"phoneNumber": "from", "givenName": "my col'; --"}}
    path = maria_config(contacts={"weird": stream})
    report = run_passes(path)["weird"]
    assert report.outcome == "ok", report.error
    assert api.contacts["a"]["personal"] == {"phoneNumber": "46701234567", "givenName": "Anna"}
    assert set(api.contacts) == {"a", "b`"}
    assert mdb.rows("SELECT count(*) FROM victim") == [(0,)]  # still there


def test_every_hostile_row_is_delivered_or_held_with_a_reason(mdb: MariaDatabase, api: Sandbox,
                                                             maria_config) -> None:
    mdb.execute("CREATE TABLE people (id VARCHAR(200), mobile VARCHAR(100), name LONGTEXT, "
                "score DOUBLE, born DATE, seen TIMESTAMP(6) NULL, changed DATETIME(6) NULL, "
                "KEY (changed))")
    now, minute_ago = "NOW(6)", "NOW(6) - INTERVAL 1 MINUTE"
    rows = [
        ("plain", "+46701234501", "Anna", 1.5, "1980-01-01", now, now),
        ("a/b?c#d%e f", "070-123 45 02", "Slash", 2, "1980-01-01", now, now),
        ("ünï-çødé", "0046 70 123 45 03", "Unicode 🎉", 3, None, None, now),
        ("big", "+46701234504", "x" * 100_000, 4, None, None, now),
        ("empty-name", "+46701234505", "", 5, None, None, now),
        ("ctl", "+46701234506", "bell\x07tab\tnl\n", 6, None, None, now),
        ("future", "+46701234509", "Future", 9, "2999-01-01", None, now),
        ("ancient", "+46701234510", "Old", 10, "1850-01-01", None, now),
        ("garbage-phone", "call me maybe", "G", 11, None, None, now),
        ("us-phone", "+1 (650) 253-0000", "US", 12, None, None, now),
        ("dup", "+46701234513", "First", 13, None, None, minute_ago),
        ("dup", "+46701234514", "Second", 14, None, None, now),
        (None, "+46701234515", "No id", 15, None, None, now),
        ("no-cursor", "+46701234516", "No cursor", 16, None, None, None),
        ("   ", "+46701234517", "Blank id", 17, None, None, now),
        # MySQL's zero dates (allowed by MariaDB's default sql_mode): no date at all.
        ("zero-born", "+46701234518", "Zero", 18, "0000-00-00", "'0000-00-00'", now),
        ("zero-cursor", "+46701234519", "Zero cursor", 19, None, None, "'0000-00-00'"),
        # A zero day cannot be found by the cursor's index: left unread (mysql.zero_time),
        # and it must not stop the pages around it.
        ("zero-day", "+46701234520", "Zero day", 20, None, None, "'2026-05-00'"),
    ]
    with contextlib.closing(mdb.connect()) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")  # as a legacy application runs
        for row in rows:
            cur.execute("INSERT INTO people VALUES (%s, %s, %s, %s, %s, "
                        f"{row[5] or 'NULL'}, {row[6] or 'NULL'})", row[:5])
    stream = {"table": "people", "id": "id", "cursor": "changed",
              "personal": {"phoneNumber": {"column": "mobile", "region": "SE"},
                           "givenName": "name", "birthDate": "born"},
              "general": {"score": "score", "lastSeen": "seen"}}
    path = maria_config(contacts={"people": stream})
    report = run_passes(path)["people"]
    assert report.outcome == "ok", report.error

    delivered = set(api.contacts)
    with contextlib.closing(sqlite3.connect(path.parent / "state" / "connector.db")) as state:
        reasons = dict(state.execute("SELECT row_key, reason FROM held"))
    assert delivered == {"plain", "a/b?c#d%e f", "ünï-çødé", "empty-name", "ctl", "us-phone",
                         "dup", "zero-born"}
    assert api.contacts["dup"]["personal"]["givenName"] == "Second"  # the latest row wins
    assert api.contacts["ctl"]["personal"]["givenName"] == "bell\x07tab\tnl\n"
    assert api.contacts["ünï-çødé"]["personal"]["givenName"] == "Unicode 🎉"
    assert api.contacts["zero-born"]["personal"] == {"phoneNumber": "46701234518",
                                                     "givenName": "Zero"}
    assert "lastSeen" not in api.contacts["zero-born"]["general"]
    expected_reasons = {
        "big": "personal.givenName (column name) is 100000 characters long",
        "future": "personal.birthDate (column born) is a birth date in the future",
        "ancient": "personal.birthDate (column born) is a birth date before 1900-01-01",
        "garbage-phone": "personal.phoneNumber (column mobile) is not a phone number",
        "no-cursor": "cursor column changed is NULL",
        "zero-cursor": "cursor column changed is NULL",
    }
    for key, start in expected_reasons.items():
        assert reasons[key].startswith(start), (key, reasons[key])
    no_id = [key for key in reasons if key.startswith("(no id)")]
    assert len(no_id) == 1 and "id column id is NULL" in reasons[no_id[0]]
    blank = [key for key in reasons if key.startswith("(bad id)")]
    assert len(blank) == 1 and reasons[blank[0]] == "id: id is empty"
    # Every row is accounted for: delivered, or held with its reason (two rows share "dup"),
    # but for the zero day.
    assert "zero-day" not in delivered and "zero-day" not in reasons
    assert len(delivered) + len(reasons) == len(rows) - 2
    # And the stream is not stuck: a new row flows on the next pass.
    mdb.execute("INSERT INTO people VALUES ('new', '+46701234599', 'New', 1, NULL, NULL, "
                "NOW(6))")
    assert run_passes(path)["people"].outcome == "ok"
    assert "new" in api.contacts


# -- events ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_conversions_are_sent_once_and_wait_for_their_contact(
        mdb: MariaDatabase, api: Sandbox, maria_config) -> None:
    mdb.execute(CUSTOMERS)
    mdb.execute(ORDERS)
    add_customers(mdb, 1, 200)
    add_orders(mdb, 1, 1_000, customers=200,
               at="NOW(6) - INTERVAL 1 HOUR + INTERVAL (1000 * i) MICROSECOND")
    # Two orders of a customer not there yet.
    mdb.execute("INSERT INTO orders VALUES (5001, 201, 10, NOW(6)), (5002, 202, 10, NOW(6))")
    path = maria_config(contacts={"customers": customers_stream()},
                        events={"conversions": dict(CONVERSIONS, page_size=100)},
                        wiraya={"bulk_size": 50, "concurrency": 4})
    reports = run_passes(path)
    assert reports["conversions"].counts["sent"] == 1_000
    assert reports["conversions"].counts["waiting"] == 2
    assert len(api.events) == 1_000

    api.reset()
    again = run_passes(path)
    assert again["conversions"].counts["sent"] == 0
    assert api.events == []

    add_customers(mdb, 201, 1)
    reports = run_passes(path, "customers")
    assert reports["customers"].counts["released"] == 1
    order = [(r.method, r.path) for r in api.requests if r.path.startswith("/api/Contact/201")]
    assert order == [("PUT", "/api/Contact/201"), ("POST", "/api/Contact/201/events")]
    held = json_lines(cli("--config", str(path), "dead-letters", "list", "--json").stdout)
    assert [(item["id"], item["state"]) for item in held] == [("5002", "waiting")]


def json_lines(text: str) -> list[dict[str, str]]:
    value = json.loads(text)
    assert isinstance(value, list)
    return value


# -- the crash test ------------------------------------------------------------------------


@pytest.mark.slow
def test_killed_at_any_moment_nothing_is_lost(mdb: MariaDatabase, api: Sandbox,
                                              maria_config) -> None:
    mdb.execute(CUSTOMERS)
    mdb.execute(ORDERS)
    add_customers(mdb, 1, 20_000, at="'2026-01-01' + INTERVAL i SECOND")
    add_orders(mdb, 1, 3_000, customers=20_000, at="'2026-01-01' + INTERVAL (3 * i) SECOND")
    api.faults.latency = 0.002
    concurrency = 8
    # A second stream compares the whole table and would send an OptOut for every row it
    # did not see: a pass killed midway must never count the rest as deleted.
    everyone = customers_stream(page_size=500, cursor="none", on_delete={"event": "OptOut"})
    everyone.pop("lookback", None)
    path = maria_config(contacts={"customers": customers_stream(page_size=500),
                                  "everyone": everyone},
                        events={"conversions": dict(CONVERSIONS, page_size=200,
                                                    contacts_stream="customers")},
                        wiraya={"bulk_size": 50, "concurrency": concurrency})
    rng = random.Random(11)
    kills = 0
    for round_ in range(6):
        process = subprocess.Popen([sys.executable, "-m", "connector", "--config", str(path),
                                    "sync"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        time.sleep(rng.uniform(0.8, 2.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=30)
        # Rows change between crashes: the latest version must win.
        mdb.execute(f"UPDATE customers SET city = 'v{round_}', updated_at = "
                    f"'2026-06-01' + INTERVAL {round_} SECOND "
                    f"WHERE customer_id % 997 = {round_}")
    assert kills >= 3
    final = cli("--config", str(path), "sync", timeout=600)
    assert final.returncode == 0, final.stderr
    state = sqlite3.connect(path.parent / "state" / "connector.db")
    assert list(state.execute("SELECT stream, row_key FROM held")) == []
    state.close()

    expected = {str(cid): city for cid, city in mdb.rows("SELECT customer_id, city "
                                                         "FROM customers")}
    assert len(api.contacts) == 20_000
    assert {cid: body["general"]["city"] for cid, body in api.contacts.items()} == expected
    seen = Counter((cid, body["at"]) for cid, body in api.events)
    assert len(seen) == 3_000  # no event lost
    # Resent at most what was in flight when each kill came (the requests, not the rows).
    assert sum(count - 1 for count in seen.values()) <= kills * concurrency
    assert [body for _, body in api.events if body["name"] == "OptOut"] == []

    # A row really deleted: exactly one OptOut, once the whole table was read.
    mdb.execute("DELETE FROM customers WHERE customer_id = 4242")
    assert cli("--config", str(path), "sync", "everyone", timeout=600).returncode == 0
    assert cli("--config", str(path), "sync", "everyone", timeout=600).returncode == 0
    assert [cid for cid, body in api.events if body["name"] == "OptOut"] == ["4242"]


def test_the_server_fixture_listens_on_loopback_only(maria_server: MariaDbServer) -> None:
    with contextlib.closing(maria_server.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT @@bind_address, @@port, @@skip_networking")
        assert cur.fetchone() == ("127.0.0.1", maria_server.port, 0)
    with pytest.raises(pymysql.err.OperationalError):
        maria_server.connect(password="wrong").close()
