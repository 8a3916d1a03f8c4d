"""Fixtures: a real PostgreSQL server (started once per session), a fresh database per test,
the sandbox API on 127.0.0.1, and helpers to write a config and run passes."""

from __future__ import annotations

import asyncio
import logging
import os
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

from connector import config, session
from connector.sandbox import Sandbox
from connector.sync import How, Report
from tests.pgserver import PgServer

API_KEY = "test-api-key-7f3a9c"
DB_USER = "connector"
DB_PASSWORD = "db-pass-5e1b77"


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


@pytest.fixture
def db(pg_server: PgServer) -> Iterator[Database]:
    name = pg_server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    database = Database(pg_server, name)
    database.execute(f"GRANT CONNECT ON DATABASE {name} TO {DB_USER}")
    database.execute(f"GRANT USAGE ON SCHEMA public TO {DB_USER}")
    database.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES "
                     f"TO {DB_USER}")
    yield database
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
        async with session.opened(settings, dry_run=dry_run) as ctx:
            return await session.run_streams(ctx, session.pick_streams(settings, streams), how)

    return {report.stream: report for report in asyncio.run(go())}


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `connector` command in a child process."""
    full_env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "connector", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=cwd, check=False)


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")
