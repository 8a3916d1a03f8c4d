"""Databases as they are, tried as a new user would (the acceptance test of "databases as
they are"): three realistic schemas made here, none with an `updated_at` column, and the
real commands in child processes: `connector init` -> `connector check` -> `connector sync`,
twice (the second sends nothing), then an edit that touches no timestamp is sent once, a
deleted customer gives exactly one OptOut event, and a re-inserted id is upserted again.

The only edit made to what `init` wrote is the one a user makes to be told of deleted rows:
`on_delete: {event: OptOut}` on the contact stream. The API address comes from
`WIRAYA_BASE_URL`, which init writes as `${WIRAYA_BASE_URL:-...}`."""

# ruff: noqa: F811 - the fixtures imported below are parameters of the tests
from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.sandbox import Sandbox
from tests.conftest import API_KEY, DB_PASSWORD, Database, cli
from tests.mariadb_fixtures import MariaDatabase, maria_server, mdb  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow

ON_DELETE = "    on_delete: {event: OptOut}           # added by hand: a removed row opts out\n"


class NewUser:
    """One user's directory, environment and commands against one database and the sandbox."""

    def __init__(self, url: str, api: Sandbox, home: Path) -> None:
        self.url, self.api, self.home = url, api, home
        self.path = home / "connector.yaml"
        self.env = {"DATABASE_URL": url, "WIRAYA_API_KEY": API_KEY,
                    "WIRAYA_BASE_URL": api.url}

    def init(self) -> str:
        """`connector init --url URL -o PATH`, then the one edit: on_delete on the contacts."""
        done = cli("init", "--url", self.url, "-o", str(self.path), cwd=self.home,
                   env={"DATABASE_URL": ""})
        assert done.returncode == 0, done.stderr
        text = self.path.read_text()
        assert DB_PASSWORD not in text + done.stdout + done.stderr
        assert "base_url: ${WIRAYA_BASE_URL:-" in text
        head, contacts = text.split("\ncontacts:\n", 1)
        first_stream, rest = contacts.split("\n", 1)
        self.path.write_text(f"{head}\ncontacts:\n{first_stream}\n{ON_DELETE}{rest}")
        return done.stderr

    def proposed(self) -> dict[str, Any]:
        document = yaml.safe_load(self.path.read_text())
        return {"contacts": document["contacts"], "events": document.get("events")}

    def check(self) -> str:
        done = cli("--config", str(self.path), "check", env=self.env, cwd=self.home)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "FAIL" not in done.stdout
        return done.stdout

    def sync(self) -> dict[str, Any]:
        """One `connector sync --json`; what it sent (contact writes, events, requests)."""
        writes, events, requests = (self.api.contact_writes, len(self.api.events),
                                    len(self.api.requests))
        done = cli("--config", str(self.path), "sync", "--json", env=self.env, cwd=self.home)
        assert done.returncode == 0, done.stdout + done.stderr
        return {"report": json.loads(done.stdout),
                "writes": self.api.contact_writes - writes,
                "events": [(contact, body["name"])
                           for contact, body in self.api.events[events:]],
                "at": sorted((contact, body["at"]) for contact, body in self.api.events[events:]),
                "requests": self.api.requests[requests:]}


def as_they_are(user: NewUser, execute: Callable[[str], None], ids: range, orders: int,
                edit: str, edited: str, delete: str, deleted: str,
                reinsert: str) -> dict[str, Any]:
    """The whole trial after init: check, two syncs, an edit, a delete, a re-insert;
    returns what the first sync sent."""
    user.check()
    stream = next(iter(user.proposed()["contacts"]))

    def counts(done: dict[str, Any]) -> dict[str, int]:
        result: dict[str, int] = done["report"]["streams"][stream]["counts"]
        return result

    first = user.sync()
    assert first["writes"] == Counter({str(i): 1 for i in ids})
    assert len(first["events"]) == orders
    assert {name for _, name in first["events"]} == {"Conversion"}

    second = user.sync()
    assert second["requests"] == []
    assert (counts(second)["read"], counts(second)["skipped"]) == (len(ids), len(ids))

    execute(edit)  # no timestamp is touched: only the whole-table comparison can see it
    changed = user.sync()
    assert changed["writes"] == Counter({edited: 1})
    assert changed["events"] == []
    assert user.api.contacts[edited]["general"]["city"] == "Lund"

    execute(delete)
    gone = user.sync()
    assert gone["events"] == [(deleted, "OptOut")]
    assert gone["writes"] == Counter()
    assert counts(gone)["deleted"] == 1
    assert user.sync()["requests"] == []  # once per disappearance

    execute(reinsert)
    back = user.sync()
    assert back["writes"] == Counter({deleted: 1})
    assert back["events"] == []
    assert user.sync()["requests"] == []
    return first


# -- 1. a web shop on MariaDB --------------------------------------------------------------

SHOP = """
CREATE TABLE customers (
    customer_id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    first_name  VARCHAR(80) NOT NULL,
    last_name   VARCHAR(80) NOT NULL,
    email       VARCHAR(200),
    phone       VARCHAR(32),
    city        VARCHAR(80),
    created     DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB;
CREATE TABLE orders (
    order_id    INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    customer_id INT UNSIGNED NOT NULL,
    total       DECIMAL(10, 2) NOT NULL,
    ordered_at  DATETIME NOT NULL,
    CONSTRAINT orders_customer FOREIGN KEY (customer_id) REFERENCES customers (customer_id)
) ENGINE=InnoDB;
INSERT INTO customers (first_name, last_name, email, phone, city, created)
SELECT CONCAT('Given', seq), CONCAT('Family', seq), CONCAT('c', seq, '@example.com'),
       CONCAT('+46 70 ', 1000000 + seq), CONCAT('City', seq % 7),
       '2025-03-01 09:00:00' + INTERVAL seq MINUTE
FROM seq_1_to_40;
INSERT INTO orders (customer_id, total, ordered_at)
SELECT 1 + seq % 20, 10 + seq, '2025-04-01 12:00:00' + INTERVAL seq HOUR FROM seq_1_to_25
"""

SHOP_PROPOSAL = {
    "contacts": {"customers": {
        "table": "customers", "id": "customer_id", "on_delete": {"event": "OptOut"},
        "cursor": "none",
        "personal": {"phoneNumber": {"column": "phone", "region": "SE"},
                     "givenName": "first_name", "surName": "last_name"},
        "general": {"city": "city", "timeOfRegistration": "created"},
    }},
    "events": {"orders": {
        "table": "orders", "id": "order_id", "contact": "customer_id", "cursor": "order_id",
        "at": "ordered_at", "name": "Conversion",
    }},
}


def test_a_web_shop_on_mariadb(mdb: MariaDatabase, api: Sandbox, tmp_path: Path) -> None:
    mdb.execute(SHOP)
    user = NewUser(mdb.url, api, tmp_path)

    told = user.init()

    assert user.proposed() == SHOP_PROPOSAL, told
    first = as_they_are(
        user, mdb.execute, range(1, 41), 25,
        edit="UPDATE customers SET city = 'Lund' WHERE customer_id = 17",
        edited="17",
        delete="DELETE FROM customers WHERE customer_id = 33",  # has no orders
        deleted="33",
        reinsert="INSERT INTO customers (customer_id, first_name, last_name, phone) "
                 "VALUES (33, 'Back', 'Again', '+46 70 555 01 33')")
    # Orders 1 and 21 of customer 2, their naive DATETIMEs read in source.timezone (UTC).
    assert [at for contact, at in first["at"] if contact == "2"] == [
        "2025-04-01T13:00:00Z", "2025-04-02T09:00:00Z"]


# -- 2. an app on SQLite with ISO 8601 text times ending in Z ------------------------------

APP = """
CREATE TABLE users (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    phone      TEXT,
    city       TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE purchases (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    amount     REAL NOT NULL,
    created_at TEXT NOT NULL
);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50)
INSERT INTO users (id, name, phone, city, created_at)
SELECT i, 'User' || i, '+4670' || (2000000 + i), 'Town' || (i % 5),
       strftime('%Y-%m-%dT%H:%M:%SZ', '2025-05-01 08:00:00', '+' || i || ' minutes') FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30)
INSERT INTO purchases (id, user_id, amount, created_at)
SELECT i, 1 + i % 25, 9.5 * i,
       strftime('%Y-%m-%dT%H:%M:%SZ', '2025-06-01 10:00:00', '+' || i || ' hours') FROM n;
"""

APP_PROPOSAL = {
    "contacts": {"users": {
        "table": "users", "id": "id", "on_delete": {"event": "OptOut"}, "cursor": "none",
        "personal": {"phoneNumber": {"column": "phone", "region": "SE"}},
        "general": {"city": "city", "timeOfRegistration": "created_at"},
    }},
    "events": {"purchases": {
        "table": "purchases", "id": "id", "contact": "user_id", "cursor": "id",
        "at": "created_at", "name": "Conversion",
    }},
}


def test_an_app_on_sqlite_with_text_times(api: Sandbox, tmp_path: Path) -> None:
    file = tmp_path / "app.db"

    def execute(sql: str) -> None:
        with sqlite3.connect(file) as conn:
            conn.executescript(sql)
        conn.close()

    execute(APP)
    user = NewUser(f"sqlite:///{file}", api, tmp_path)

    told = user.init()

    assert user.proposed() == APP_PROPOSAL, told
    first = as_they_are(
        user, execute, range(1, 51), 30,
        edit="UPDATE users SET city = 'Lund' WHERE id = 8",
        edited="8",
        delete="DELETE FROM users WHERE id = 44",  # has no purchases
        deleted="44",
        reinsert="INSERT INTO users VALUES "
                 "(44, 'Back', '+46705550144', NULL, '2025-07-01T00:00:00Z')")
    # Purchases 1 and 26 of user 2, their text times with Z as written.
    assert [at for contact, at in first["at"] if contact == "2"] == [
        "2025-06-01T11:00:00Z", "2025-06-02T12:00:00Z"]


# -- 3. a PostgreSQL CRM with CamelCase quoted names ---------------------------------------

CRM = """
CREATE TABLE "Contacts" (
    "ContactId"   bigint PRIMARY KEY,
    "FirstName"   text,
    "LastName"    text,
    "MobilePhone" text,
    "City"        text,
    "CreatedOn"   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE "Deals" (
    "DealId"    bigint PRIMARY KEY,
    "ContactId" bigint NOT NULL REFERENCES "Contacts" ("ContactId"),
    "Amount"    numeric(12, 2),
    "ClosedAt"  timestamptz NOT NULL
);
INSERT INTO "Contacts" ("ContactId", "FirstName", "LastName", "MobilePhone", "City")
SELECT i, 'Given' || i, 'Family' || i, '+46 70 ' || (3000000 + i), 'City' || (i % 9)
FROM generate_series(1, 60) AS i;
INSERT INTO "Deals" SELECT i, 1 + i % 30, 1000 + i, now() - interval '1 day' * i
FROM generate_series(1, 12) AS i;
"""

CRM_PROPOSAL = {
    "contacts": {"contacts": {
        "table": "public.Contacts", "id": "ContactId", "on_delete": {"event": "OptOut"},
        "cursor": "none",
        "personal": {"phoneNumber": {"column": "MobilePhone", "region": "SE"},
                     "givenName": "FirstName", "surName": "LastName"},
        "general": {"city": "City", "timeOfRegistration": "CreatedOn"},
    }},
    "events": {"deals": {
        "table": "public.Deals", "id": "DealId", "contact": "ContactId", "cursor": "DealId",
        "at": "ClosedAt", "name": "Conversion",
    }},
}


def test_a_postgresql_crm_with_camelcase_names(db: Database, api: Sandbox,
                                               tmp_path: Path) -> None:
    db.execute(CRM)
    user = NewUser(db.url, api, tmp_path)

    told = user.init()

    assert user.proposed() == CRM_PROPOSAL, told
    as_they_are(
        user, db.execute, range(1, 61), 12,
        edit='UPDATE "Contacts" SET "City" = \'Lund\' WHERE "ContactId" = 42',
        edited="42",
        delete='DELETE FROM "Contacts" WHERE "ContactId" = 55',  # has no deals
        deleted="55",
        reinsert='INSERT INTO "Contacts" ("ContactId", "FirstName", "MobilePhone") '
                 "VALUES (55, 'Back', '+46 70 555 01 55')")
