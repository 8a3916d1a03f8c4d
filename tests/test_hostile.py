"""Hostile surroundings: an API that misbehaves, a state file that is broken, names that
look like SQL, and secrets that must not leak whatever fails."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import yaml

from connector.errors import StateError
from connector.sandbox import Sandbox
from connector.state import MIGRATIONS, State
from tests.conftest import (
    API_KEY,
    CUSTOMERS,
    DB_PASSWORD,
    Database,
    add_customers,
    cli,
    customers_stream,
    run_passes,
)


def held(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path.parent / "state" / "connector.db") as state:
        return list(state.execute("SELECT row_key, reason FROM held ORDER BY row_key"))


# -- an API that misbehaves -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["malformed_json", "wrong_types", "huge_body", "redirect",
                                  "hang"])
@pytest.mark.parametrize("bulk_size", [1, 50])
def test_a_misbehaving_api_loses_nothing(db: Database, api: Sandbox, write_config,
                                         mode: str, bulk_size: int) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 20)
    path = write_config(contacts={"customers": customers_stream()},
                        wiraya={"bulk_size": bulk_size, "timeout": "300ms",
                                "max_attempts": 2})
    api.faults.misbehave = mode
    started = time.monotonic()
    report = run_passes(path)["customers"]
    assert time.monotonic() - started < 30  # every wait is bounded

    # Nothing was accepted (a 200 whose body is not the API's answer is a failed call too):
    # the pass fails with a clear reason and nothing moves.
    assert report.outcome == "failed"
    assert "Wiraya accepted none of 20 contacts" in (report.error or "")
    assert report.watermark is None
    assert held(path) == []
    expected = {"huge_body": "reply larger than", "redirect": "redirect to 203.0.113.1",
                "hang": "no reply within the timeout", "malformed_json": "not Wiraya's answer",
                "wrong_types": "not Wiraya's answer"}[mode]
    assert expected in (report.error or "")

    # The API recovers: the next pass delivers every contact, each one once more at most.
    api.faults.misbehave = None
    api.reset()
    report = run_passes(path)["customers"]
    assert report.outcome == "ok"
    assert len(api.contacts) == 20


# -- a broken state file ----------------------------------------------------------------


@pytest.mark.slow
def test_a_corrupt_state_file_is_a_clear_error(db: Database, api: Sandbox,
                                               write_config) -> None:
    db.execute(CUSTOMERS)
    path = write_config(contacts={"customers": customers_stream()})
    state = path.parent / "state" / "connector.db"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"this is not a database" * 100)
    result = cli("--config", str(path), "sync")
    assert result.returncode == 1
    assert f"state file {state} is corrupt or not a connector state file" in result.stderr
    assert "move it aside to start afresh" in result.stderr


@pytest.mark.slow
def test_a_state_file_from_a_newer_connector_is_refused(db: Database, api: Sandbox,
                                                        write_config) -> None:
    db.execute(CUSTOMERS)
    path = write_config(contacts={"customers": customers_stream()})
    run_passes(path)
    state = path.parent / "state" / "connector.db"
    with sqlite3.connect(state) as conn:
        conn.execute("PRAGMA user_version = 99")
    result = cli("--config", str(path), "status")
    assert result.returncode == 1
    known = len(MIGRATIONS)
    assert f"was written by a newer connector (schema 99, this one knows {known})" \
        in result.stderr


def test_a_locked_state_file_is_waited_for_then_named(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    State.open(path).close()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StateError, match="is locked by another process"):
        state = State.open(path, timeout=0.3)
        state.set_watermark("s", None)

    threading.Timer(0.5, lambda: holder.execute("COMMIT")).start()
    state = State.open(path, timeout=10)  # a short lock is simply waited out
    state.set_watermark("s", None)
    state.close()
    holder.close()


def test_a_deleted_state_file_means_a_full_resend(db: Database, api: Sandbox,
                                                  write_config) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 30)
    path = write_config(contacts={"customers": customers_stream()})
    run_passes(path)
    (path.parent / "state" / "connector.db").unlink()
    report = run_passes(path)["customers"]
    assert report.outcome == "ok" and report.counts["sent"] == 30
    assert sum(api.contact_writes.values()) == 60


# -- names that look like SQL -----------------------------------------------------------


def test_names_with_quotes_and_keywords_are_only_names(db: Database, api: Sandbox,
                                                       write_config) -> None:
    db.execute('CREATE TABLE victim (x int)')
    db.execute('CREATE TABLE "we""ird; DROP TABLE victim; --" ('
               '"select" text PRIMARY KEY, "from" text, "my col;--" text, '
               '"order by" timestamptz NOT NULL DEFAULT now())')
    db.execute('INSERT INTO "we""ird; DROP TABLE victim; --" VALUES '
               "('a', '+46701234567', 'Anna', now())")
    stream = {"table": {"schema": "public", "name": 'we"ird; DROP TABLE victim; --'},
              "id": "select", "cursor": "order by",
              "personal": {"phoneNumber": "from", "givenName": "my col;--"}}
    path = write_config(contacts={"weird": stream})
    report = run_passes(path)["weird"]
    assert report.outcome == "ok", report.error
    assert api.contacts["a"]["personal"] == {"phoneNumber": "46701234567", "givenName": "Anna"}
    assert db.rows("SELECT count(*) FROM victim") == [(0,)]  # still there


# -- secrets never leak -----------------------------------------------------------------


@pytest.mark.slow  # child processes
def test_no_failure_shows_a_secret(db: Database, api: Sandbox, write_config,
                                   tmp_path: Path) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 5)
    db.execute("INSERT INTO customers (customer_id, mobile) VALUES (99, 'garbage')")
    path = write_config(contacts={"customers": customers_stream()},
                        wiraya={"timeout": "300ms", "max_attempts": 1})
    document = yaml.safe_load(path.read_text())
    outputs: list[str] = []

    def run(*args: str) -> None:
        result = cli("--config", str(path), "-v", "--log-format", "json", *args)
        outputs.extend([result.stdout, result.stderr])

    def rewrite(**changes: object) -> None:
        changed = json.loads(json.dumps(document))
        for dotted, value in changes.items():
            section, key = dotted.split("__")
            changed[section][key] = value
        path.write_text(yaml.safe_dump(changed))

    run("sync")  # works, holds the bad row
    run("check")
    run("status", "--json")
    run("dead-letters", "list", "--json")
    api.faults.misbehave = "hang"
    run("sync")
    api.faults.misbehave = "redirect"
    run("sync")
    api.faults.misbehave = None
    api.faults.error_rate = 1.0
    run("sync")
    run("dead-letters", "retry")
    api.faults.error_rate = 0.0
    rewrite(wiraya__api_key=API_KEY + "-wrong")
    run("sync")
    run("check")
    rewrite(source__url=db.url.replace("127.0.0.1", "127.0.0.2").replace(
        str(db.server.port), "1"))
    run("sync")
    run("check")
    rewrite(source__url=db.url.replace("connector:", "nobody:"))
    run("sync")
    rewrite(wiraya__base_url="http://example.com", source__timezone="Nowhere/None")
    run("sync")

    everything = "\n".join(outputs)
    assert "pass failed" in everything and "refused" in everything  # they did fail
    state = (tmp_path / "state" / "connector.db").read_bytes()
    for secret in (API_KEY, DB_PASSWORD):
        assert secret not in everything
        assert secret.encode() not in state
    assert b"garbage" not in state


# -- rows that try everything -----------------------------------------------------------


def test_every_hostile_row_is_delivered_or_held_with_a_reason(db: Database, api: Sandbox,
                                                             write_config) -> None:
    db.execute("CREATE TABLE people (id text, mobile text, name text, score float8, "
               "born date, seen timestamptz, changed timestamptz)")
    db.execute("CREATE INDEX ON people (changed)")
    rows = [
        ("plain", "+46701234501", "Anna", 1.5, "1980-01-01", "now()", "now()"),
        ("a/b?c#d%e f", "070-123 45 02", "Slash", 2, "1980-01-01", "now()", "now()"),
        ("ünï-çødé", "0046 70 123 45 03", "Unicode", 3, None, None, "now()"),
        ("big", "+46701234504", "x" * 100_000, 4, None, None, "now()"),
        ("empty-name", "+46701234505", "", 5, None, None, "now()"),
        ("ctl", "+46701234506", "bell\x07tab\tnl\n", 6, None, None, "now()"),
        ("nan", "+46701234507", "NaN", float("nan"), None, None, "now()"),
        ("inf", "+46701234508", "Inf", float("inf"), None, None, "now()"),
        ("future", "+46701234509", "Future", 9, "2999-01-01", None, "now()"),
        ("ancient", "+46701234510", "Old", 10, "1850-01-01", None, "now()"),
        ("garbage-phone", "call me maybe", "G", 11, None, None, "now()"),
        ("us-phone", "+1 (650) 253-0000", "US", 12, None, None, "now()"),
        ("dup", "+46701234513", "First", 13, None, None, "now() - interval '1 minute'"),
        ("dup", "+46701234514", "Second", 14, None, None, "now()"),
        (None, "+46701234515", "No id", 15, None, None, "now()"),
        ("no-cursor", "+46701234516", "No cursor", 16, None, None, None),
        ("   ", "+46701234517", "Blank id", 17, None, None, "now()"),
    ]
    with db.connect() as conn:
        for row in rows:
            conn.execute("INSERT INTO people VALUES (%s, %s, %s, %s, %s, "
                         f"{row[5] or 'NULL'}, {row[6] or 'NULL'})", row[:5])
    stream = {"table": "people", "id": "id", "cursor": "changed",
              "personal": {"phoneNumber": {"column": "mobile", "region": "SE"},
                           "givenName": "name", "birthDate": "born"},
              "general": {"score": "score", "lastSeen": "seen"}}
    path = write_config(contacts={"people": stream})
    report = run_passes(path)["people"]
    assert report.outcome == "ok", report.error

    delivered = set(api.contacts)
    reasons = dict(held(path))
    assert delivered == {"plain", "a/b?c#d%e f", "ünï-çødé", "empty-name", "ctl", "us-phone",
                         "dup"}
    assert api.contacts["dup"]["personal"]["givenName"] == "Second"  # the latest row wins
    assert api.contacts["ctl"]["personal"]["givenName"] == "bell\x07tab\tnl\n"
    assert api.contacts["us-phone"]["personal"]["phoneNumber"] == "16502530000"
    assert "givenName" not in api.contacts["empty-name"]["personal"]  # empty: left out
    expected_reasons = {
        "big": "personal.givenName (column name) is 100000 characters long",
        "nan": "general.score (column score) is not a finite number",
        "inf": "general.score (column score) is not a finite number",
        "future": "personal.birthDate (column born) is a birth date in the future",
        "ancient": "personal.birthDate (column born) is a birth date before 1900-01-01",
        "garbage-phone": "personal.phoneNumber (column mobile) is not a phone number",
        "no-cursor": "cursor column changed is NULL",
    }
    for key, start in expected_reasons.items():
        assert reasons[key].startswith(start), (key, reasons[key])
    no_id = [key for key in reasons if key.startswith("(no id)")]
    assert len(no_id) == 1 and "id column id is NULL" in reasons[no_id[0]]
    blank = [key for key in reasons if key.startswith("(bad id)")]
    assert len(blank) == 1 and reasons[blank[0]] == "id: id is empty"
    # Every row is accounted for: delivered, or held with its reason (two rows share "dup").
    assert len(delivered) + len(reasons) == len(rows) - 1


def test_text_that_is_not_utf8_is_held_not_fatal(tmp_path: Path, api: Sandbox) -> None:
    database = tmp_path / "shop.db"
    conn = sqlite3.connect(database)
    conn.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, mobile TEXT, name TEXT, "
                 "changed TIMESTAMP)")
    conn.execute("INSERT INTO c VALUES (1, '+46701234501', 'Anna', '2026-11-01 10:00:00')")
    conn.execute("INSERT INTO c VALUES (2, '+46701234502', CAST(X'416eff6e61' AS TEXT), "
                 "'2026-11-01 10:00:01')")  # 'An\xffna': not UTF-8
    conn.commit()
    conn.close()
    path = tmp_path / "connector.yaml"
    path.write_text(yaml.safe_dump({
        "source": {"url": f"sqlite:///{database}"},
        "wiraya": {"base_url": api.url, "api_key": API_KEY, "bulk_size": 1},
        "state": str(tmp_path / "state" / "connector.db"),
        "contacts": {"c": {"table": "c", "id": "id", "cursor": "changed",
                           "personal": {"phoneNumber": "mobile", "givenName": "name"}}}}))
    report = run_passes(path)["c"]
    assert report.outcome == "ok", report.error
    assert set(api.contacts) == {"1"}
    assert dict(held(path)) == {"2": "personal.givenName (column name) holds text that is "
                                     "not valid UTF-8"}
