"""Times stored as text (SQLite's usual ISO 8601: `T` or a space, `Z`, an offset or none) as
`cursor` and `at`: compared as times, not as text, and `check` says what cannot work."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from connector import config, report
from connector.sandbox import Sandbox
from tests.conftest import run_passes

APP = """
CREATE TABLE users (
    id         integer PRIMARY KEY,
    name       text,
    mobile     text,
    updated_at DATETIME
);
CREATE TABLE purchases (
    id       integer PRIMARY KEY,
    user_id  integer,
    paid_at  text
);
"""


def app_db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(APP)
    return path


def execute(path: Path, sql: str, params: Any = ()) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql, params)


def add_user(path: Path, user: int, at: str) -> None:
    execute(path, "INSERT INTO users VALUES (?, ?, ?, ?)",
            (user, f"Name{user}", f"+46701{user:06d}", at))


def users_stream(**extra: Any) -> dict[str, Any]:
    stream: dict[str, Any] = {
        "table": "users", "id": "id", "cursor": "updated_at", "lookback": "0s",
        "personal": {"phoneNumber": {"column": "mobile", "region": "SE"}, "givenName": "name"},
    }
    stream.update(extra)
    return stream


def test_iso_text_with_z_in_a_datetime_column_syncs(tmp_path: Path, api: Sandbox,
                                                    write_config) -> None:
    # Once: "can't compare offset-naive and offset-aware datetimes" at every pass.
    database = app_db(tmp_path)
    for user in range(1, 6):
        add_user(database, user, f"2026-01-01T10:0{user}:00Z")
    path = write_config(contacts={"users": users_stream()},
                        source={"url": f"sqlite:///{database}"})
    first = run_passes(path)["users"]
    assert first.outcome == "ok", first.error
    assert first.counts.sent == 5
    assert first.watermark is not None
    assert first.watermark.cursor.isoformat() == "2026-01-01T10:05:00+00:00"
    second = run_passes(path)["users"]
    assert (second.outcome, second.counts.sent) == ("ok", 0)


def test_times_in_every_shape_are_compared_as_times(tmp_path: Path, api: Sandbox,
                                                    write_config) -> None:
    database = app_db(tmp_path)
    add_user(database, 1, "2026-01-01T10:00:00Z")
    path = write_config(contacts={"users": users_stream()},
                        source={"url": f"sqlite:///{database}"})
    assert run_passes(path)["users"].counts.sent == 1

    # Later than the watermark, though each sorts below it as text: a space sorts before
    # `T`, and 12:00+02:00 is 10:00Z (the same time: the id breaks the tie).
    add_user(database, 2, "2026-01-01 10:30:00")
    add_user(database, 3, "2026-01-01T12:00:00+02:00")
    # Earlier than the watermark, though it sorts above it as text: not read again.
    add_user(database, 4, "2026-01-01T11:00:00+05:00")
    before = api.contact_writes
    second = run_passes(path)["users"]
    assert second.outcome == "ok", second.error
    assert api.contact_writes - before == Counter({"2": 1, "3": 1})


def test_mixed_offsets_need_utc(tmp_path: Path, api: Sandbox, write_config) -> None:
    database = app_db(tmp_path)
    add_user(database, 1, "2026-01-01T10:00:00Z")
    add_user(database, 2, "2026-01-01 10:30:00")
    path = write_config(contacts={"users": users_stream()},
                        source={"url": f"sqlite:///{database}",
                                "timezone": "Europe/Stockholm"})
    failed = run_passes(path)["users"]
    assert failed.outcome == "failed"
    assert failed.error is not None
    assert "contacts.users.cursor: updated_at holds times with an offset (or Z) and times " \
           "without one" in failed.error
    assert "set source.timezone: UTC" in failed.error
    assert not api.contact_writes


def test_check_names_cursor_text_that_is_no_time(tmp_path: Path, api: Sandbox,
                                                 write_config) -> None:
    database = app_db(tmp_path)
    add_user(database, 1, "2026-01-01T10:00:00Z")
    add_user(database, 2, "yesterday")
    path = write_config(contacts={"users": users_stream()},
                        source={"url": f"sqlite:///{database}"})
    findings = asyncio.run(report.check(config.load(path)))
    failures = [text for level, text in findings if level == "fail"]
    assert failures == [
        "contacts.users.cursor: 1 row(s) hold a updated_at that is not a time SQLite can "
        "read (ISO 8601: 2026-11-27T10:00:00Z, 2026-11-27 10:00:00, with or without an "
        "offset); they cannot be read in order and are held as dead letters: fix those "
        "values"]
    execute(database, "UPDATE users SET updated_at = '2026-01-02' WHERE id = 2")
    findings = asyncio.run(report.check(config.load(path)))
    assert [text for level, text in findings if level == "fail"] == []


def test_text_event_times_as_cursor_and_at(tmp_path: Path, api: Sandbox,
                                           write_config) -> None:
    database = app_db(tmp_path)
    api.faults.strict_order = False  # the contacts come from elsewhere
    execute(database, "INSERT INTO purchases VALUES (1, 7, '2026-03-01T12:00:00+02:00'), "
                      "(2, 7, '2026-03-01 11:00:00Z'), (3, 8, '2026-03-01T09:30:00.250Z')")
    path = write_config(events={"purchases": {
        "table": "purchases", "id": "id", "contact": "user_id", "cursor": "paid_at",
        "lookback": "0s", "name": "Conversion", "wait_for_contact": False}},
        source={"url": f"sqlite:///{database}"},
        wiraya={"concurrency": 1})  # one call at a time: they arrive in the order read
    first = run_passes(path)["purchases"]
    assert first.outcome == "ok", first.error
    # In time order, each at its own time in UTC.
    assert [(contact, body["at"]) for contact, body in api.events] == [
        ("8", "2026-03-01T09:30:00.25Z"), ("7", "2026-03-01T10:00:00Z"),
        ("7", "2026-03-01T11:00:00Z")]
    execute(database, "INSERT INTO purchases VALUES (4, 8, '2026-03-01T13:00:00+02:00')")
    second = run_passes(path)["purchases"]
    assert second.counts.sent == 1
    assert api.events[-1] == ("8", {"schema": 1, "name": "Conversion",
                                    "at": "2026-03-01T11:00:00Z"})
