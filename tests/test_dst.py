"""Naive local-time cursors across the autumn change of clocks, on real PostgreSQL.

`timestamp without time zone` columns written in local time go back an hour on the night of
the change: rows written after it carry wall times below those written before. Each test
counts the rows that never reach the sandbox.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from connector.sandbox import Sandbox
from tests.conftest import DB_PASSWORD, DB_USER, Database, run_passes
from tests.pgserver import PgServer

ZONE = "Europe/Stockholm"
SCHEMA = """
CREATE TABLE customers (
    customer_id bigint PRIMARY KEY,
    mobile      text NOT NULL,
    first_name  text NOT NULL,
    updated_at  timestamp NOT NULL
);
CREATE INDEX ON customers (updated_at);
CREATE TABLE orders (
    order_id    bigserial PRIMARY KEY,
    customer_id bigint NOT NULL,
    created_at  timestamp NOT NULL
);
CREATE INDEX ON orders (created_at);
"""

CUSTOMERS = {"table": "customers", "id": "customer_id", "cursor": "updated_at",
             "personal": {"phoneNumber": {"column": "mobile", "region": "SE"},
                          "givenName": "first_name"}}
ORDERS = {"table": "orders", "id": "order_id", "contact": "customer_id", "cursor": "created_at",
          "name": "Conversion"}


def _config(write_config, **source) -> Path:
    return write_config(contacts={"customers": CUSTOMERS}, events={"conversions": ORDERS},
                        source={"timezone": ZONE, **source})


def _customers(db: Database, count: int, at: str) -> None:
    db.execute(f"""INSERT INTO customers
        SELECT i, '+4670' || lpad(i::text, 7, '0'), 'Name' || i, timestamp '{at}'
        FROM generate_series(1, {count}) AS i""")


def test_rows_written_in_the_repeated_hour_are_read(db: Database, api: Sandbox,
                                                     write_config) -> None:
    """Wall times as a database in Stockholm writes them on 25 October 2026: first 02:00-02:59
    summer time, then, after the clocks go back, 02:00-02:59 again in standard time."""
    db.execute(SCHEMA)
    _customers(db, 100, "2026-10-25 01:00")
    db.execute("UPDATE customers SET updated_at = timestamp '2026-10-25 02:59' "
               "WHERE customer_id > 40")
    db.execute("""INSERT INTO orders (customer_id, created_at)
        SELECT 1 + i % 100, timestamp '2026-10-25 02:00' + i * interval '1 minute'
        FROM generate_series(0, 59) AS i""")
    path = _config(write_config)
    run_passes(path)
    assert len(api.events) == 60

    # After the change: the same wall times again, for new orders and changed customers.
    db.execute("""INSERT INTO orders (customer_id, created_at)
        SELECT 1 + i % 100, timestamp '2026-10-25 02:00' + i * interval '1 minute'
        FROM generate_series(0, 59) AS i""")
    db.execute("UPDATE customers SET first_name = 'Changed' || customer_id, "
               "updated_at = timestamp '2026-10-25 02:05' WHERE customer_id <= 40")
    run_passes(path)
    lost_orders = 120 - len(api.events)
    stale = sum(1 for cid in map(str, range(1, 41))
                if api.contacts[cid]["personal"]["givenName"] != f"Changed{cid}")
    assert (lost_orders, stale) == (0, 0)
    # Each repeated wall time is read as standard time, the later of its two instants, as
    # PostgreSQL reads it: the first 02:00 (summer time) is 00:00Z, the second 01:00Z.
    at = Counter(body["at"] for _, body in api.events)
    assert at["2026-10-25T01:00:00Z"] == 2
    assert max(Counter((cid, body["at"]) for cid, body in api.events).values()) <= 2


def _faketime_library() -> str | None:
    try:
        import libfaketime
    except ImportError:
        return None
    path = Path(libfaketime.__file__).parent / "vendor" / "libfaketime" / "src" / \
        "libfaketime.so.1"
    return str(path) if path.exists() else None


@pytest.fixture
def night_server() -> Iterator[PgServer]:
    """A PostgreSQL server whose clock starts at 02:59:35 summer time on 25 October 2026 and
    runs at the normal pace, so the clocks go back 25 s after it starts."""
    found = _faketime_library()
    if found is None:
        pytest.skip("libfaketime (PyPI) is not installed")
    # The server runs as an unprivileged user, who may not reach the library where pip put it.
    folder = tempfile.mkdtemp(prefix="connector-faketime-")
    os.chmod(folder, 0o755)  # noqa: S103 - the server user must read the library
    library = shutil.copy(found, folder)
    os.chmod(library, 0o755)  # noqa: S103
    saved = {key: os.environ.get(key) for key in
             ("LD_PRELOAD", "FAKETIME", "FAKETIME_DONT_RESET", "FAKETIME_NO_CACHE", "TZ")}
    os.environ.update(LD_PRELOAD=library, FAKETIME="@2026-10-25 00:59:35",
                      FAKETIME_DONT_RESET="1", FAKETIME_NO_CACHE="1", TZ="UTC")
    try:
        server = PgServer().start()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{DB_PASSWORD}'")
        conn.execute(f"GRANT pg_read_all_stats TO {DB_USER}")
        conn.execute(f"ALTER DATABASE postgres SET timezone = '{ZONE}'")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {DB_USER}")
        conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES "
                     f"TO {DB_USER}")
    yield server
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_a_writer_across_the_change_of_clocks_loses_nothing(night_server: PgServer,
                                                            api: Sandbox, write_config) -> None:
    """The database's own clock crosses 03:00 summer time -> 02:00 standard time while a
    writer commits orders and customer changes with `localtimestamp` and the connector runs
    a pass every half second (default lookback)."""
    db = Database(night_server, "postgres")
    db.execute(SCHEMA)
    db.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {DB_USER}")
    with db.connect() as conn:
        wall = conn.execute("SELECT localtimestamp").fetchone()[0]
    assert (wall.hour, wall.minute) == (2, 59), wall  # the fake clock is on
    _customers(db, 50, "2026-10-25 01:00")
    path = _config(write_config, url=db.url)
    run_passes(path)

    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        with db.connect() as conn:
            number = 0
            while not stop.is_set():
                number += 1
                customer = 1 + number % 50
                conn.execute("INSERT INTO orders (customer_id, created_at) "
                             "VALUES (%s, localtimestamp)", (customer,))
                conn.execute("UPDATE customers SET first_name = %s, updated_at = localtimestamp "
                             "WHERE customer_id = %s", (f"v{number}", customer))
                written.append(number)
                time.sleep(0.1)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        deadline = time.monotonic() + 50  # from 02:59:35 summer time to about 02:00:25
        while time.monotonic() < deadline:
            run_passes(path)
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    run_passes(path)

    orders = db.rows("SELECT count(*) FROM orders")[0][0]
    latest = dict(db.rows("SELECT customer_id::text, first_name FROM customers"))
    lost_orders = orders - len(api.events)
    stale = sum(1 for cid, name in latest.items()
                if api.contacts[cid]["personal"]["givenName"] != name)
    print(f"{orders} orders, {lost_orders} never sent; {len(latest)} customers, {stale} stale")
    assert (lost_orders, stale) == (0, 0)
    assert len(written) > 200
