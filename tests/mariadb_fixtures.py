"""Fixtures for the MariaDB tests: a real server (started once per session), a fresh database
per test with a connector user that may only read it (and see open transactions), and a
config writer pointing at it with the URL as users write it (`mysql://`)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml

from connector.sandbox import Sandbox
from tests.conftest import API_KEY, DB_PASSWORD, DB_USER
from tests.mariadbserver import MariaDbServer


@pytest.fixture(scope="session")
def maria_server() -> Iterator[MariaDbServer]:
    # The server's own zone is not UTC, as on many hosts: times the server reports in its
    # zone (innodb_trx's trx_started) must still be read right.
    server = MariaDbServer(zone="Asia/Tokyo").start()
    try:
        with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}'")
            # PROCESS lets the connector see other sessions' open transactions (the guard).
            cur.execute(f"GRANT PROCESS ON *.* TO '{DB_USER}'@'127.0.0.1'")
        yield server
    finally:
        server.cleanup()


@dataclass
class MariaDatabase:
    server: MariaDbServer
    name: str

    @property
    def url(self) -> str:
        """The connector's URL: a user that may only read, with a password, as `mysql://`."""
        return self.server.url(self.name, DB_USER, DB_PASSWORD)

    def connect(self, autocommit: bool = True) -> pymysql.Connection:
        return self.server.connect(self.name, autocommit=autocommit)

    def execute(self, sql: str, params: Any = None) -> None:
        """One or more statements separated by `;` at the end of a line."""
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            for statement in split(sql):
                cur.execute(statement, params)

    def rows(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())


def split(sql: str) -> list[str]:
    return [part.strip() for part in sql.split(";\n") if part.strip().rstrip(";")]


@pytest.fixture
def mdb(maria_server: MariaDbServer) -> Iterator[MariaDatabase]:
    name = maria_server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    database = MariaDatabase(maria_server, name)
    with contextlib.closing(maria_server.connect()) as conn, conn.cursor() as cur:
        cur.execute(f"GRANT SELECT ON `{name}`.* TO '{DB_USER}'@'127.0.0.1'")
    yield database
    maria_server.drop_database(name)


@pytest.fixture
def maria_config(tmp_path: Path, api: Sandbox, mdb: MariaDatabase) -> Any:
    """Write a config file (YAML) from dicts, reading the MariaDB database; returns its path."""
    def write(contacts: dict[str, Any] | None = None, events: dict[str, Any] | None = None,
              wiraya: dict[str, Any] | None = None, source: dict[str, Any] | None = None,
              **top: Any) -> Path:
        document: dict[str, Any] = {
            "source": {"url": mdb.url, "timezone": "UTC", **(source or {})},
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


CUSTOMERS = """
CREATE TABLE customers (
    customer_id BIGINT PRIMARY KEY,
    first_name  VARCHAR(100),
    last_name   VARCHAR(100),
    mobile      VARCHAR(40),
    city        VARCHAR(100),
    status      VARCHAR(20) NOT NULL DEFAULT 'active',
    birth_date  DATE,
    created_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY customers_updated_at (updated_at, customer_id)
)
"""

ORDERS = """
CREATE TABLE orders (
    order_id    BIGINT PRIMARY KEY,
    customer_id BIGINT,
    amount      DECIMAL(10, 2),
    created_at  DATETIME(6) NOT NULL,
    KEY orders_created_at (created_at, order_id)
)
"""


def add_customers(db: MariaDatabase, first: int, count: int,
                  at: str = "CURRENT_TIMESTAMP(6)") -> None:
    """`count` customers from id `first` on, each with a valid Swedish mobile number.

    `at` is an SQL expression of `i`, the customer's id.
    """
    db.execute(f"""
        INSERT INTO customers (customer_id, first_name, last_name, mobile, city, updated_at)
        SELECT i, CONCAT('Given', i), CONCAT('Family', i),
               CONCAT('+4670', LPAD(1000000 + i, 7, '0')), CONCAT('City', i % 50), {at}
        FROM (SELECT seq AS i FROM seq_{first}_to_{first + count - 1}) AS numbers""")


def customers_stream(**extra: Any) -> dict[str, Any]:
    stream = {
        "table": "customers", "id": "customer_id", "cursor": "updated_at",
        "lookback": "10m",
        "personal": {"phoneNumber": {"column": "mobile", "region": "SE"},
                     "givenName": "first_name", "surName": "last_name"},
        "general": {"city": "city"},
    }
    stream.update(extra)
    return stream
