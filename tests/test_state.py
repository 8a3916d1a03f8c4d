"""The state file (connector.state) on its own: a SQLite file in a temp folder, no server."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connector.errors import StateError
from connector.state import (
    MIGRATIONS,
    RUNS_KEPT,
    Commit,
    Delivered,
    FlagState,
    Held,
    LinkKey,
    Sent,
    State,
)
from connector.values import Counts, Position

HIGH = Position(datetime(2026, 11, 27, 9, 0, 0, 123456, tzinfo=UTC), 41)


@pytest.fixture
def state(tmp_path: Path) -> State:
    with State.open(tmp_path / "state.db") as opened:
        yield opened


def a_page() -> Commit:
    return Commit(watermark=HIGH,
                  contacts=[Delivered("1", b"in", b"out"), Delivered("2", None, b"out2")],
                  links=[LinkKey("1", "welcome", "")],
                  flags=[FlagState("1", "OptOut", True)],
                  ledger=[Sent("o-1", b"who-when")],
                  held=[Held("s", "3", "dead", "bad phone", payload_digest=b"x")])


def test_a_page_is_written_whole(state: State) -> None:
    state.commit("s", a_page())
    assert state.watermark("s") == HIGH
    assert state.known_contacts("s", ["1", "2", "9"]) == {
        "1": Delivered("1", b"in", b"out"), "2": Delivered("2", None, b"out2")}
    assert state.known_links(["1"]) == {LinkKey("1", "welcome", "")}
    assert state.known_flags("s", ["1"]) == {("1", "OptOut"): True}
    assert state.sent_events("s", ["o-1", "o-2"]) == {"o-1": b"who-when"}
    assert [(h.row_key, h.state, h.reason) for h in state.held("s")] == [
        ("3", "dead", "bad phone")]


def test_a_page_that_fails_to_write_leaves_nothing_behind(state: State) -> None:
    page = a_page()
    # The last statement fails (a held state the schema does not know): all or nothing.
    page.held.append(Held("s", "4", "lost", "no such state"))  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        state.commit("s", page)
    assert state.watermark("s") is None
    assert state.known_contacts("s", ["1", "2"]) == {}
    assert state.known_links(["1"]) == set()
    assert state.sent_events("s", ["o-1"]) == {}
    assert state.held("s") == []


def test_held_rows_are_cleared_and_counted(state: State) -> None:
    state.commit("s", a_page())
    assert state.has_held("s") and not state.has_held("other")
    state.commit("s", Commit(held=[Held("s", "3", "dead", "still bad")]))
    (again,) = state.held("s")
    assert (again.attempts, again.reason) == (2, "still bad")
    assert state.held_counts() == {("s", "dead"): 1}
    state.commit("s", Commit(cleared=["3"]))
    assert state.held("s") == [] and not state.has_held("s")


def test_a_run_keeps_its_counts_whole(state: State) -> None:
    counts = Counts(read=10, sent=4, skipped=3, linked=2, events=1, released=5, waiting=6,
                    dead=7, repeated=8, resolved=9)
    run_id = state.start_run("s", "live")
    state.finish_run(run_id, "ok", counts)
    (run,) = state.runs("s")
    assert (run.kind, run.outcome, run.counts) == ("live", "ok", counts)
    assert run.summary()["resolved"] == 9


def test_the_run_history_stays_bounded(state: State) -> None:
    for _ in range(RUNS_KEPT + 5):
        state.finish_run(state.start_run("s", "live"), "ok", Counts(read=1))
    state.finish_run(state.start_run("other", "live"), "ok", Counts())
    assert len(state.runs("s", limit=10 * RUNS_KEPT)) == RUNS_KEPT
    assert len(state.runs("other")) == 1


def first_schema_file(path: Path) -> None:
    """A state file as the first connector wrote it, with one finished run."""
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    conn.execute("INSERT INTO runs (stream, kind, started_at, finished_at, outcome, read, sent, "
                 "skipped, dead, waiting) VALUES ('s', 'live', 'a', 'b', 'ok', 5, 4, 3, 2, 1)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_an_older_state_file_is_migrated_and_its_runs_still_read(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    first_schema_file(path)
    with State.open(path) as state:
        assert state.schema_version == len(MIGRATIONS)
        (run,) = state.runs("s")
        assert run.counts == Counts(read=5, sent=4, skipped=3, dead=2, waiting=1)


def test_a_newer_state_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    State.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StateError, match="written by a newer connector"):
        State.open(path)


def test_a_dry_run_creates_no_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "state.db"
    with State.for_dry_run(path) as state:
        assert state.watermark("s") is None
        state.commit("s", a_page())  # in memory only
        assert state.watermark("s") == HIGH
    assert not path.parent.exists()


def test_a_dry_run_reads_an_existing_file_and_cannot_write_it(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with State.open(path) as state:
        state.commit("s", a_page())
    before = path.read_bytes()
    with State.for_dry_run(path) as state:
        assert state.watermark("s") == HIGH
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            state.set_watermark("s", None)
    assert path.read_bytes() == before


def test_a_dry_run_on_an_older_file_migrates_a_copy_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    first_schema_file(path)
    before = path.read_bytes()
    with State.for_dry_run(path) as state:
        assert state.schema_version == len(MIGRATIONS)
        assert state.runs("s")[0].counts.read == 5
    assert path.read_bytes() == before


def test_a_corrupt_file_is_named_with_what_to_do_whichever_way_it_is_opened(
        tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database" * 100)
    for opener in (State.open, State.for_dry_run):
        with pytest.raises(StateError) as caught:
            opener(path)
        assert str(caught.value).startswith(f"state file {path} is corrupt or not a "
                                            "connector state file")
        assert "move it aside to start afresh" in str(caught.value)


def test_two_processes_opening_a_new_state_file_at_once_both_get_it(tmp_path: Path) -> None:
    """A backfill started beside the daemon: both read schema 0, one migrates while the
    other waits for the write lock; the second then finds the work done, not an error."""
    path = tmp_path / "connector.db"
    path.touch()
    first = sqlite3.connect(path, isolation_level=None)
    first.execute("PRAGMA journal_mode=WAL")
    first.executescript("BEGIN IMMEDIATE;\n" + "\n".join(MIGRATIONS)
                        + f"\nPRAGMA user_version = {len(MIGRATIONS)};")  # not committed yet
    opened: list[object] = []
    second = threading.Thread(target=lambda: opened.append(_open_or_error(path)))
    second.start()
    time.sleep(0.5)  # the second has read schema 0 and waits for the lock
    first.execute("COMMIT")
    second.join(30)
    first.close()
    assert len(opened) == 1 and isinstance(opened[0], State), opened
    assert opened[0].schema_version == len(MIGRATIONS)
    opened[0].close()


def _open_or_error(path: Path) -> object:
    try:
        return State.open(path)
    except Exception as exc:
        return exc
