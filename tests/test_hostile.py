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
from connector.state import State
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

    accepted_as_sent = mode in {"malformed_json", "wrong_types"} and bulk_size == 1
    if accepted_as_sent:
        # A 200 to a single upsert is an acceptance, whatever its body says.
        assert report.outcome == "ok" and report.counts["sent"] == 20
    else:
        # Nothing was accepted: the pass fails with a clear reason and nothing moves.
        assert report.outcome == "failed"
        assert "Wiraya accepted none of 20 contacts" in (report.error or "")
        assert report.watermark is None
        assert held(path) == []
        expected = {"huge_body": "reply larger than", "redirect": "redirect to 203.0.113.1",
                    "hang": "no reply within the timeout", "malformed_json": "unreadable",
                    "wrong_types": "unreadable"}[mode]
        assert expected in (report.error or "")

    # The API recovers: the next pass delivers every contact, each one once more at most.
    api.faults.misbehave = None
    api.reset()
    report = run_passes(path)["customers"]
    assert report.outcome == "ok"
    assert len(api.contacts) == (0 if accepted_as_sent else 20)


# -- a broken state file ----------------------------------------------------------------


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
    assert "was written by a newer connector (schema 99, this one knows 1)" in result.stderr


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
