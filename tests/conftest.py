"""Fixtures: a real PostgreSQL server (started once per session), a fresh database per test,
the sandbox API on 127.0.0.1, and helpers to write a config and run passes."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from hypothesis import settings

from connector import config, session
from connector.sandbox import Sandbox
from connector.sync import How, Report
from tests import tiers
from tests.pgserver import PgServer

API_KEY = "test-api-key-7f3a9c"
DB_USER = "connector"
DB_PASSWORD = "db-pass-5e1b77"


def pytest_configure(config: pytest.Config) -> None:
    """The quick loop (`-m "not slow"`) runs the property tests with fewer examples."""
    if "not slow" in (config.getoption("markexpr") or ""):
        tiers.quick = True
        settings.register_profile("quick", max_examples=tiers.examples(100))
        settings.load_profile("quick")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (its hook runs first else)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The Docker tests share one engine (started if none runs, stopped by the worker that
    started it): under pytest-xdist they all run in one worker."""
    for item in items:
        if item.get_closest_marker("docker") is not None:
            item.add_marker(pytest.mark.xdist_group("docker"))


@pytest.fixture(autouse=True)
def _connector_logging() -> Iterator[None]:
    """Commands run in-process set up the connector's logging (its own handler, no
    propagation); put it back, so that a later test's caplog hears the connector again."""
    logger = logging.getLogger("connector")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate = saved[0], saved[1]
    logger.setLevel(saved[2])


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = PgServer().start()
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{DB_PASSWORD}'")
        conn.execute(f"GRANT pg_read_all_stats TO {DB_USER}")
    yield server
    server.cleanup()


@dataclass
class Database:
    server: PgServer
    name: str

    @property
    def url(self) -> str:
        """The connector's URL: a read-only role with a password."""
        return self.server.url(self.name, DB_USER, DB_PASSWORD)

    def connect(self, autocommit: bool = True) -> psycopg.Connection[Any]:
        return psycopg.connect(self.server.dsn(self.name), autocommit=autocommit)

    def execute(self, sql: str, params: Any = None) -> None:
        with self.connect() as conn:
            conn.execute(sql, params)

    def rows(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            return conn.execute(sql, params).fetchall()


class Databases:
    """Each test gets a database of its own. Making one (CREATE DATABASE copies the template)
    costs about five times what emptying a used one does, so a used database is emptied and
    kept for the next test; one that cannot be emptied cleanly is dropped instead."""

    def __init__(self, server: PgServer) -> None:
        self.server = server
        self.spare: list[str] = []

    def take(self) -> Database:
        if self.spare:
            return Database(self.server, self.spare.pop())
        name = self.server.create_database(f"t_{uuid.uuid4().hex[:12]}")
        database = Database(self.server, name)
        database.execute(f"GRANT CONNECT ON DATABASE {name} TO {DB_USER}")
        self._grant(database)
        return database

    def give_back(self, database: Database) -> None:
        name = database.name
        with psycopg.connect(self.server.dsn("postgres"), autocommit=True) as conn:
            # Sessions a test left open (a pool, a held transaction) would block the drops; each is
            # waited for (5 s at most), so that none is still seen by the next test.
            conn.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            conn.execute(f'ALTER DATABASE "{name}" RESET ALL')
            conn.execute(f'ALTER ROLE {DB_USER} IN DATABASE "{name}" RESET ALL')
            try:
                self._empty(database)
            except psycopg.Error:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
        self.spare.append(name)

    @staticmethod
    def _grant(database: Database) -> None:
        database.execute(f"GRANT USAGE ON SCHEMA public TO {DB_USER}")
        database.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES "
                         f"TO {DB_USER}")

    def _empty(self, database: Database) -> None:
        """Every schema a test made, and public, dropped with what is in them; public made
        again as PostgreSQL 15 makes it. Anything left after that is an error (dropped)."""
        with database.connect() as conn:
            conn.execute("SET lock_timeout = '5s'")
            for (schema,) in conn.execute(
                    "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                    "AND nspname <> 'information_schema'").fetchall():
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            conn.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
            conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
            left = conn.execute(
                "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname NOT LIKE 'pg\\_%' "
                "AND n.nspname <> 'information_schema') + (SELECT count(*) FROM pg_event_trigger)"
                " + (SELECT count(*) FROM pg_publication)").fetchone()
            if left is None or left[0]:
                raise psycopg.DataError("objects left after emptying")
        self._grant(database)


@pytest.fixture(scope="session")
def databases(pg_server: PgServer) -> Databases:
    return Databases(pg_server)


@pytest.fixture
def db(databases: Databases) -> Iterator[Database]:
    database = databases.take()
    yield database
    databases.give_back(database)


@pytest.fixture
def api() -> Iterator[Sandbox]:
    with Sandbox(api_keys=[API_KEY]) as server:
        yield server


CUSTOMERS = """
CREATE TABLE customers (
    customer_id bigint PRIMARY KEY,
    first_name  text,
    last_name   text,
    mobile      text,
    city        text,
    status      text NOT NULL DEFAULT 'active',
    birth_date  date,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_updated_at ON customers (updated_at);
"""


def add_customers(db: Database, first: int, count: int, at: str = "now()") -> None:
    """`count` customers from id `first` on, each with a valid Swedish mobile number."""
    db.execute(f"""
        INSERT INTO customers (customer_id, first_name, last_name, mobile, city, updated_at)
        SELECT i, 'Given' || i, 'Family' || i, '+4670' || lpad((1000000 + i)::text, 7, '0'),
               'City' || (i % 50), {at}
        FROM generate_series({first}, {first + count - 1}) AS i""")


def customers_stream(**extra: Any) -> dict[str, Any]:
    stream = {
        "table": "public.customers", "id": "customer_id", "cursor": "updated_at",
        "lookback": "10m",
        "personal": {"phoneNumber": {"column": "mobile", "region": "SE"},
                     "givenName": "first_name", "surName": "last_name"},
        "general": {"city": "city"},
    }
    stream.update(extra)
    return stream


@pytest.fixture
def write_config(tmp_path: Path, api: Sandbox, db: Database) -> Any:
    """Write a config file (YAML) from dicts; returns its path."""
    def write(contacts: dict[str, Any] | None = None, events: dict[str, Any] | None = None,
              wiraya: dict[str, Any] | None = None, source: dict[str, Any] | None = None,
              **top: Any) -> Path:
        document: dict[str, Any] = {
            "source": {"url": db.url, "timezone": "UTC", **(source or {})},
            "wiraya": {"base_url": api.url, "api_key": API_KEY, "rate_limit": "none",
                       "bulk_size": 1, "backoff": "10ms", "backoff_max": "50ms",
                       **(wiraya or {})},
            "state": str(tmp_path / "state" / "connector.db"),
        }
        if contacts:
            document["contacts"] = contacts
        if events:
            document["events"] = events
        document.update(top)
        path = tmp_path / "connector.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path
    return write


def run_passes(path: Path, *streams: str, how: How | None = None,
               dry_run: bool = False) -> dict[str, Report]:
    """Run one pass of each stream in the process, as `connector sync` does."""
    settings = config.load(path)

    async def go() -> list[Report]:
        async with session.opened(settings, dry_run=dry_run, one_shot=True) as ctx:
            return await session.run_streams(ctx, session.pick_streams(settings, streams), how)

    return {report.stream: report for report in asyncio.run(go())}


def connector_statements(db: Database, run: Any) -> list[str]:
    """The statements the connector's role ran on `customers` while `run` ran, from the
    server's own log (log_statement for that role in this database)."""
    log = db.server.root / "server.log"
    db.execute(f'ALTER ROLE {DB_USER} IN DATABASE "{db.name}" SET log_statement = \'all\'')
    start = log.stat().st_size
    try:
        run()
    finally:
        db.execute(f'ALTER ROLE {DB_USER} IN DATABASE "{db.name}" RESET log_statement')
    with log.open(encoding="utf-8", errors="replace") as text:
        text.seek(start)
        entries = re.split(r"\n(?=\d{4}-\d\d-\d\d )", text.read())
    statements: list[str] = []
    for entry in entries:
        if "DETAIL:  parameters:" in entry and statements:
            statements[-1] += " " + entry.split("DETAIL:", 1)[1]  # the values bound
        elif "FROM public.customers" in entry:
            statements.append(" ".join(entry.split()))
    return statements


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `connector` command in a child process."""
    full_env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "connector", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=cwd, check=False)


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")
