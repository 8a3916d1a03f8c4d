"""`connector init` on schemas made here, as a new user would run it: the real command in a
child process, a real PostgreSQL server and real SQLite files. None of the schemas has an
`updated_at` column. The proposals are asserted exactly (stream names, id, cursor, fields,
events); where no `cursor: none` is proposed, the file is loaded with `config.load` and, on
PostgreSQL, `connector check` must pass on it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector import config
from connector.sandbox import Sandbox
from tests.conftest import API_KEY, DB_PASSWORD, Database, cli, dedent

ROOT = Path(__file__).parent.parent


def init(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    done = cli("init", *args, env=env)
    return done.returncode, done.stdout, done.stderr


def proposed(text: str) -> dict[str, Any]:
    """The streams of a written config, as YAML reads them."""
    document = yaml.safe_load(text)
    return {"contacts": document.get("contacts"), "events": document.get("events")}


def uncommented(text: str) -> str:
    """The file with the commented-out alternatives switched on (`#   name:` -> `  name:`)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("#   ") or line.startswith("# events:"):
            line = line[2:]
        lines.append(line)
    return "\n".join(lines) + "\n"


def sqlite_file(path: Path, script: str) -> str:
    with sqlite3.connect(path) as conn:
        conn.executescript(script)
    conn.close()
    return f"sqlite:///{path}"


# -- a PostgreSQL CRM with CamelCase quoted names ------------------------------------------

CRM = """
CREATE TABLE "Contacts" (
    "ContactId"    bigint PRIMARY KEY,
    "FirstName"    text,
    "LastName"     text,
    "MobilePhone"  text,
    "HomePhone"    text,
    "City"         text,
    "Country"      text,
    "DoNotCall"    boolean NOT NULL DEFAULT false,
    "Notes"        text,
    "LastModified" timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE "Deals" (
    "DealId"    bigint PRIMARY KEY,
    "ContactId" bigint NOT NULL REFERENCES "Contacts" ("ContactId"),
    "Amount"    numeric(12, 2),
    "CreatedAt" timestamptz NOT NULL DEFAULT now(),
    "ClosedAt"  timestamptz NOT NULL
);
CREATE TABLE "AuditLog" ("EntryId" bigint PRIMARY KEY, "Text" text, "At" timestamptz);
-- a table of the same name in another schema is not the contact table
CREATE SCHEMA archive;
CREATE TABLE archive."Contacts" ("ContactId" bigint PRIMARY KEY);
CREATE TABLE "OldDeals" ("OldDealId" bigint PRIMARY KEY, "ClosedAt" timestamptz,
                         "Ref" bigint REFERENCES archive."Contacts" ("ContactId"));
INSERT INTO "Contacts" ("ContactId", "FirstName", "LastName", "MobilePhone", "HomePhone",
                        "City", "Country", "Notes")
SELECT i, 'Given' || i, 'Family' || i, '+46 70 ' || (1000000 + i), '08-' || (5000000 + i),
       'City' || i, 'Sweden', 'call after 5'
FROM generate_series(1, 30) AS i;
INSERT INTO "Deals" SELECT i, i, 100, now(), now() FROM generate_series(1, 10) AS i;
"""

CRM_PROPOSAL = {
    "contacts": {"contacts": {
        "table": "public.Contacts", "id": "ContactId", "cursor": "LastModified",
        "personal": {"phoneNumber": {"column": "MobilePhone", "region": "SE"},
                     "givenName": "FirstName", "surName": "LastName"},
        "general": {"city": "City", "country": "Country"},
        "events": [{"name": "OptOut", "when": {"column": "DoNotCall", "equals": True}}],
    }},
    "events": {"deals": {
        "table": "public.Deals", "id": "DealId", "contact": "ContactId", "cursor": "DealId",
        "at": "ClosedAt", "name": "Conversion",
    }},
}


@pytest.mark.slow
def test_a_postgresql_crm_gets_a_config_that_check_accepts(db: Database, api: Sandbox,
                                                           tmp_path: Path) -> None:
    db.execute(CRM)
    db.execute('CREATE INDEX "Contacts_LastModified" ON "Contacts" ("LastModified")')
    path = tmp_path / "connector.yaml"

    code, stdout, stderr = init("--url", db.url, "--output", str(path))

    assert code == 0, stderr
    assert stdout == ""
    text = path.read_text()
    assert proposed(text) == CRM_PROPOSAL
    assert "index Contacts_LastModified starts with it" in text
    assert "# also phone-like: HomePhone" in text
    assert DB_PASSWORD not in text + stderr
    assert "url: ${DATABASE_URL}\n" in text and "api_key: ${WIRAYA_API_KEY}\n" in text
    assert stderr.splitlines()[0].startswith(
        "contacts.contacts: proposed: table Contacts, id ContactId, phone MobilePhone (by "
        "name; 30 of 30 sampled values are valid numbers; region SE: the most common country "
        "code in the sample), cursor LastModified (timestamptz, named like a change time)")
    assert stderr.splitlines()[2] == (
        "events.deals: Conversion events of contacts: table Deals, contact ContactId (a foreign "
        "key to Contacts.ContactId), at ClosedAt, cursor DealId (an integer primary key: each "
        "new row is read once)")
    assert "skipped AuditLog: no phone number column" in stderr
    assert "skipped OldDeals: no phone number column" in stderr
    env = {"DATABASE_URL": db.url, "WIRAYA_API_KEY": API_KEY, "WIRAYA_BASE_URL": api.url}
    settings = config.load(path, env=env)
    assert settings.contacts["contacts"].columns() == [
        "ContactId", "LastModified", "MobilePhone", "FirstName", "LastName", "City", "Country",
        "DoNotCall"]

    checked = cli("--config", str(path), "check", env=env)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "FAIL" not in checked.stdout
    assert "no index starts with" not in checked.stdout
    assert "0 problem(s)" in checked.stdout


def test_a_cursor_without_an_index_gets_the_create_index_to_add(db: Database,
                                                                tmp_path: Path) -> None:
    db.execute(CRM)

    code, stdout, stderr = init("--url", db.url, "--output", "-")

    assert code == 0, stderr
    assert proposed(stdout) == CRM_PROPOSAL
    assert ("    cursor: LastModified            # timestamptz, named like a change time\n"
            "    # no index starts with LastModified, so each pass reads the whole table; "
            "add one:\n"
            '    # CREATE INDEX ON public."Contacts" ("LastModified", "ContactId");\n') in stdout


# -- a SQLite app: ISO text times with Z, no change column ---------------------------------

APP = """
CREATE TABLE users (
    id                INTEGER PRIMARY KEY,
    email             TEXT NOT NULL,
    phone             TEXT,
    first_name        TEXT,
    last_name         TEXT,
    city              TEXT,
    marketing_consent BOOLEAN NOT NULL DEFAULT 1,
    created_at        TEXT NOT NULL
);
CREATE TABLE purchases (
    id             INTEGER PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users (id),
    amount         REAL NOT NULL,
    delivery_phone TEXT,
    created_at     TEXT NOT NULL
);
CREATE TABLE unsubscribes (
    id              INTEGER PRIMARY KEY,
    member          INTEGER NOT NULL REFERENCES users (id),
    unsubscribed_at TEXT NOT NULL
);
CREATE TABLE leads (lead_id INTEGER PRIMARY KEY, name TEXT, contact TEXT);
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT);
INSERT INTO users VALUES
    (1, 'a@example.com', '+44 7911 123456', 'Ann', 'Archer', 'Leeds', 1, '2026-01-02T10:00:00Z'),
    (2, 'b@example.com', '07911 123457', 'Bo', 'Baker', 'York', 0, '2026-01-03T11:30:00.5Z'),
    (3, 'c@example.com', '+44 20 7946 0958', 'Cy', 'Cole', 'Hull', 1, '2026-01-04T09:00:00Z');
INSERT INTO purchases VALUES (1, 1, 9.5, '+44 7911 123456', '2026-01-05T12:00:00Z'),
                             (2, 3, 20, '+44 20 7946 0958', '2026-01-06T08:00:00Z');
INSERT INTO unsubscribes VALUES (1, 2, '2026-01-07T08:00:00+01:00');
INSERT INTO leads VALUES (1, 'x', '+44 7911 123001'), (2, 'y', '+44 7911 123002'),
                         (3, 'z', '+44 7911 123003');
"""

APP_USERS = {
    "table": "users", "id": "id", "cursor": "none",
    "personal": {"phoneNumber": {"column": "phone", "region": "GB"},
                 "givenName": "first_name", "surName": "last_name"},
    "general": {"city": "city", "timeOfRegistration": "created_at"},
    "events": [{"name": "OptOut", "when": {"column": "marketing_consent", "equals": False}}],
}


def test_a_sqlite_app_with_text_times_and_no_change_column(tmp_path: Path) -> None:
    url = sqlite_file(tmp_path / "app.db", APP)

    code, stdout, stderr = init("--output", "-", env={"DATABASE_URL": url})

    assert code == 0, stderr
    assert proposed(stdout) == {
        "contacts": {"users": APP_USERS},
        "events": {
            # purchases has a phone column, but it points at users and has a time: events.
            "purchases": {"table": "purchases", "id": "id", "contact": "user_id",
                          "cursor": "id", "at": "created_at", "name": "Conversion"},
            # linked by its foreign key alone; an opt-out by its name
            "unsubscribes": {"table": "unsubscribes", "id": "id", "contact": "member",
                             "cursor": "id", "at": "unsubscribed_at", "name": "OptOut"}},
    }
    assert dedent("""
            # no column that changes with the row (updated_at, modified, ...):
            # each pass compares the whole table (narrow pages of id and digest;
            # only the rows that changed are read in full).
            cursor: none
        """) in dedent(stdout.split("  users:", 1)[1].split("personal:")[0] + "\n")
    # The leads table has a phone column by its values only: an alternative, commented out.
    assert proposed(uncommented(stdout))["contacts"]["leads"] == {
        "table": "leads", "id": "lead_id", "cursor": "none",
        "personal": {"phoneNumber": {"column": "contact", "region": "GB"}}}
    assert "skipped settings: no phone number column" in stderr
    assert "email" not in stdout.split("contacts:", 1)[1]


def test_local_numbers_take_the_region_given(tmp_path: Path) -> None:
    url = sqlite_file(tmp_path / "local.db", """
        CREATE TABLE members (member_id INTEGER PRIMARY KEY, tel TEXT, modified INTEGER);
        CREATE INDEX members_modified ON members (modified);
        INSERT INTO members VALUES (1, '070-123 45 67', 1), (2, '0701234568', 2),
                                   (3, '08-123 456 78', 3);""")
    expected = {"table": "members", "id": "member_id", "cursor": "modified",
                "personal": {"phoneNumber": {"column": "tel", "region": "SE"}}}

    code, stdout, stderr = init("--url", url, "--output", "-", "--region", "se")
    assert code == 0, stderr
    assert proposed(stdout)["contacts"] == {"members": expected}
    assert "3 of 3 sampled values are valid numbers; region SE from --region" in stderr

    code, stdout, stderr = init("--url", url, "--output", "-")
    assert code == 0, stderr
    assert proposed(stdout)["contacts"] == {"members": {
        **expected, "personal": {"phoneNumber": {"column": "tel"}}}}
    assert "0 of 3 sampled values are valid numbers; no region" in stderr


# -- the Chinook shape (SQLite) --------------------------------------------------------------

CHINOOK = """
CREATE TABLE employees (
    EmployeeId INTEGER PRIMARY KEY, LastName NVARCHAR(20) NOT NULL,
    FirstName NVARCHAR(20) NOT NULL, Title NVARCHAR(30),
    ReportsTo INTEGER REFERENCES employees (EmployeeId), BirthDate DATETIME, HireDate DATETIME,
    City NVARCHAR(40), Country NVARCHAR(40), PostalCode NVARCHAR(10), Phone NVARCHAR(24),
    Fax NVARCHAR(24), Email NVARCHAR(60));
CREATE TABLE customers (
    CustomerId INTEGER PRIMARY KEY, FirstName NVARCHAR(40) NOT NULL,
    LastName NVARCHAR(20) NOT NULL, Company NVARCHAR(80), Address NVARCHAR(70),
    City NVARCHAR(40), State NVARCHAR(40), Country NVARCHAR(40), PostalCode NVARCHAR(10),
    Phone NVARCHAR(24), Fax NVARCHAR(24), Email NVARCHAR(60) NOT NULL,
    SupportRepId INTEGER REFERENCES employees (EmployeeId));
CREATE TABLE invoices (
    InvoiceId INTEGER PRIMARY KEY, CustomerId INTEGER NOT NULL REFERENCES customers (CustomerId),
    InvoiceDate DATETIME NOT NULL, BillingCity NVARCHAR(40), Total NUMERIC(10, 2) NOT NULL);
CREATE TABLE genres (GenreId INTEGER PRIMARY KEY, Name NVARCHAR(120));
INSERT INTO employees VALUES (1, 'Adams', 'Andrew', 'General Manager', NULL,
    '1962-02-18 00:00:00', '2002-08-14 00:00:00', 'Edmonton', 'Canada', 'T5K 2N1',
    '+1 (780) 428-9482',
    '+1 (780) 428-3457', 'andrew@chinookcorp.com');
INSERT INTO customers VALUES
    (1, 'Luís', 'Gonçalves', 'Embraer', 'Av. Brigadeiro', 'São José dos Campos', 'SP', 'Brazil',
     '12227-000', '+55 (12) 3923-5555', '+55 (12) 3923-5566', 'luisg@embraer.com.br', 1),
    (2, 'Leonie', 'Köhler', NULL, 'Theodor-Heuss-Straße 34', 'Stuttgart', NULL, 'Germany',
     '70174', '+49 0711 2842222', '+49 0711 2842223', 'leonekohler@surfeu.de', 1),
    (3, 'François', 'Tremblay', NULL, '1498 rue Bélanger', 'Montréal', 'QC', 'Canada',
     'H2G 1A7', '+1 (514) 721-4711', '+1 (514) 721-4712', 'ftremblay@gmail.com', 1);
INSERT INTO invoices VALUES (1, 2, '2009-01-01 00:00:00', 'Stuttgart', 1.98);
"""


def test_the_chinook_shape(tmp_path: Path) -> None:
    url = sqlite_file(tmp_path / "chinook.db", CHINOOK)

    code, stdout, stderr = init("--url", url, "-o", "-")

    assert code == 0, stderr
    customers = {
        "table": "customers", "id": "CustomerId", "cursor": "none",
        "personal": {"phoneNumber": {"column": "Phone"}, "givenName": "FirstName",
                     "surName": "LastName"},
        "general": {"city": "City", "country": "Country", "postCode": "PostalCode"}}
    assert proposed(stdout) == {
        "contacts": {"customers": customers},
        "events": {"invoices": {"table": "invoices", "id": "InvoiceId",
                                "contact": "CustomerId", "cursor": "InvoiceId",
                                "at": "InvoiceDate", "name": "Conversion"}}}
    # Employees have phone numbers and more fields, but no event table points at them: an
    # alternative.
    assert proposed(uncommented(stdout))["contacts"]["employees"] == {
        "table": "employees", "id": "EmployeeId", "cursor": "none",
        "personal": {"phoneNumber": {"column": "Phone", "region": "US"},
                     "givenName": "FirstName", "surName": "LastName",
                     "birthDate": "BirthDate"},
        "general": {"city": "City", "country": "Country", "postCode": "PostalCode"}}
    assert "no region: no country holds most of the sample's numbers" in stderr
    assert "Fax" not in stdout
    assert stderr.splitlines()[-1] == ("skipped genres: no phone number column (by name or by "
                                       "its values); no column pointing at a contact table "
                                       "with a time column for at")


# -- odd names, secrets, files and errors --------------------------------------------------

ODD = """
CREATE TABLE "Kund: Register" (
    "Kund${ID}"     INTEGER PRIMARY KEY,
    "Mobil, nr"   TEXT,
    "first name"  TEXT,
    "Last Update" TIMESTAMP NOT NULL
);
CREATE INDEX "by update" ON "Kund: Register" ("Last Update");
INSERT INTO "Kund: Register" VALUES (1, '+46701234567', 'Eva', '2026-01-01 10:00:00');
"""


@pytest.mark.slow
def test_odd_names_are_written_so_that_they_read_back_the_same(tmp_path: Path,
                                                                api: Sandbox) -> None:
    url = sqlite_file(tmp_path / "odd.db", ODD)
    path = tmp_path / "odd.yaml"

    code, _stdout, stderr = init("--url", url, "--output", str(path))

    assert code == 0, stderr
    env = {"DATABASE_URL": url, "WIRAYA_API_KEY": API_KEY, "WIRAYA_BASE_URL": api.url}
    stream = config.load(path, env=env).contacts["kund_register"]
    assert (stream.table.name, stream.id, stream.cursor) == (
        "Kund: Register", "Kund${ID}", "Last Update")
    assert stream.personal["phoneNumber"].column == "Mobil, nr"
    assert stream.personal["givenName"].column == "first name"
    checked = cli("--config", str(path), "check", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_existing_file_is_kept_unless_forced(tmp_path: Path) -> None:
    url = sqlite_file(tmp_path / "app.db", APP)
    path = tmp_path / "connector.yaml"
    path.write_text("mine\n")

    code, _stdout, stderr = init("--url", url, "--output", str(path))
    assert code == 2
    assert stderr.strip().splitlines()[-1] == (
        f"  --output: {path} exists; pass --force to overwrite it, or --output PATH "
        "(- for stdout)")
    assert path.read_text() == "mine\n"

    code, _stdout, stderr = init("--url", url, "--output", str(path), "--force")
    assert code == 0, stderr
    assert proposed(path.read_text())["contacts"] == {"users": APP_USERS}
    assert stderr.splitlines()[-1] == (f"wrote {path}; next: set DATABASE_URL and "
                                       f"WIRAYA_API_KEY, then `connector --config {path} check`")


def test_a_database_it_cannot_reach_is_one_line_and_exit_1(tmp_path: Path) -> None:
    code, stdout, stderr = init("--url", "postgresql+psycopg://me:pw-9f1c@127.0.0.1:1/crm",
                                "--output", str(tmp_path / "c.yaml"))

    assert code == 1
    assert stdout == ""
    assert len(stderr.strip().splitlines()) == 1
    assert stderr.startswith("error: cannot reach the database at "
                             "postgresql+psycopg://me:***@127.0.0.1:1/crm: ")
    assert "pw-9f1c" not in stderr
    assert not (tmp_path / "c.yaml").exists()


@pytest.mark.slow
def test_no_url_says_where_to_give_one(tmp_path: Path) -> None:
    done = cli("init", env={"DATABASE_URL": ""}, cwd=tmp_path)

    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "  --url: no database URL: pass --url URL or set $DATABASE_URL")


@pytest.mark.slow
def test_example_prints_the_example_config_shipped_in_the_package() -> None:
    done = cli("init", "--example")

    assert done.returncode == 0
    assert done.stdout == (ROOT / "config" / "connector.example.yaml").read_text()
