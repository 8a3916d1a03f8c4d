"""The connector's memory: one SQLite file.

What it holds, per stream: the watermark (the highest `(cursor, id)` fully handled), a
digest of each contact as last delivered, the campaign links made, a ledger of the events
sent, the rows held back (dead letters and events waiting for their contact), and a short
history of runs. Digests and ids only: no names, no phone numbers.

The schema is an ordered list of migrations, each applied in one transaction. A page's
outcome (watermark, digests, links, ledger, held rows) is written in one transaction, so
the watermark never runs ahead of what Wiraya accepted.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Self

from connector.errors import StateError, StateLockedError
from connector.values import Counts, Digest, HeldState, Outcome, PassKind, Position

MIGRATIONS: list[str] = [
    # 1: the first schema.
    """
    CREATE TABLE streams (
        name        TEXT PRIMARY KEY,
        high        TEXT,              -- Position as typed JSON
        checkpoints TEXT,              -- recent (time, high cursor) pairs, JSON
        updated_at  TEXT
    );
    CREATE TABLE contacts (
        stream         TEXT NOT NULL,
        contact_id     TEXT NOT NULL,
        input_digest   BLOB,           -- of the source values and the mapping (or an
                                       -- integer hash the database computed)
        payload_digest BLOB NOT NULL,  -- of the contact as Wiraya accepted it
        delivered_at   INTEGER NOT NULL,
        PRIMARY KEY (stream, contact_id)
    ) WITHOUT ROWID;
    CREATE TABLE links (
        contact_id TEXT NOT NULL,
        campaign   TEXT NOT NULL,
        iteration  TEXT NOT NULL,      -- '' when the link has no iteration
        linked_at  INTEGER NOT NULL,
        PRIMARY KEY (contact_id, campaign, iteration)
    ) WITHOUT ROWID;
    CREATE TABLE ledger (
        stream  TEXT NOT NULL,
        row_id  TEXT NOT NULL,
        sent_at INTEGER NOT NULL,
        PRIMARY KEY (stream, row_id)
    ) WITHOUT ROWID;
    CREATE TABLE flags (
        stream     TEXT NOT NULL,
        contact_id TEXT NOT NULL,
        event      TEXT NOT NULL,
        active     INTEGER NOT NULL,
        PRIMARY KEY (stream, contact_id, event)
    ) WITHOUT ROWID;
    CREATE TABLE held (
        stream         TEXT NOT NULL,
        row_key        TEXT NOT NULL,
        state          TEXT NOT NULL CHECK (state IN ('dead', 'waiting')),
        reason         TEXT NOT NULL,
        retriable      INTEGER NOT NULL,
        attempts       INTEGER NOT NULL,
        contact_id     TEXT,
        cursor         TEXT,           -- typed JSON, to find a row that has no id
        payload_digest BLOB,
        first_seen     TEXT NOT NULL,
        last_seen      TEXT NOT NULL,
        PRIMARY KEY (stream, row_key)
    );
    CREATE INDEX held_by_contact ON held (contact_id) WHERE state = 'waiting';
    CREATE TABLE runs (
        id          INTEGER PRIMARY KEY,
        stream      TEXT NOT NULL,
        kind        TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        outcome     TEXT NOT NULL,
        read        INTEGER NOT NULL DEFAULT 0,
        sent        INTEGER NOT NULL DEFAULT 0,
        skipped     INTEGER NOT NULL DEFAULT 0,
        dead        INTEGER NOT NULL DEFAULT 0,
        waiting     INTEGER NOT NULL DEFAULT 0,
        error       TEXT
    );
    CREATE INDEX runs_by_stream ON runs (stream, id);
    CREATE TABLE backfills (
        stream      TEXT NOT NULL,
        range_key   TEXT NOT NULL,     -- since/until as given
        position    TEXT,              -- Position reached, typed JSON
        done        INTEGER NOT NULL DEFAULT 0,
        rows        INTEGER NOT NULL DEFAULT 0,
        started_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (stream, range_key)
    );
    """,
    # 2: a run's counts kept whole, as JSON (the columns above stay for older readers).
    """
    ALTER TABLE runs ADD COLUMN counts TEXT;
    """,
    # 3: what an event was (a digest of its contact and time), so that a new row that
    # reuses a sent row's id (a truncated or recreated table, an id given out again) is
    # told apart from it. NULL for events sent before: those match by id alone.
    # And what the database says of each stream's table (PostgreSQL: oid and file node),
    # which changes when the table is truncated or recreated.
    """
    ALTER TABLE ledger ADD COLUMN identity BLOB;
    ALTER TABLE streams ADD COLUMN table_identity TEXT;
    """,
    # 4: tries of an event that went out and got no reply, over all passes: such an event
    # may have arrived, so its tries have a total budget (see deliver.py).
    """
    ALTER TABLE held ADD COLUMN unanswered INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: full comparisons (`cursor: none`, reconcile). Each complete read of a stream's table
    # has a number; a contact on record carries the number of the last read that saw it, so
    # that the contacts a complete read did not see are known, inside SQLite. And the count
    # of contacts found deleted, for `status`.
    """
    ALTER TABLE contacts ADD COLUMN seen INTEGER;
    ALTER TABLE streams ADD COLUMN compare_pass INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE streams ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    """,
]

RUNS_KEPT = 500  # per stream; the history stays bounded
_CHUNK = 900  # ids per IN (...) list


def _now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _marks(items: Sequence[Any]) -> str:
    return ",".join("?" * len(items))


@dataclass(frozen=True)
class Held:
    """A row held back: dead-lettered with its reason, or an event waiting for its contact."""

    stream: str
    row_key: str
    state: HeldState
    reason: str
    retriable: bool = False
    attempts: int = 1
    contact_id: str | None = None
    cursor: str | None = None
    payload_digest: Digest | None = None
    first_seen: str = ""
    last_seen: str = ""
    unanswered: int = 0  # tries that got no reply; on a commit, added to those on record


class Delivered(NamedTuple):
    """A contact as last delivered: the digest of its source values (None until its links
    and events are done too) and of the payload Wiraya accepted."""

    key: str
    input_digest: Digest | None
    payload_digest: bytes


class LinkKey(NamedTuple):
    """A contact's link to a campaign; `iteration` is '' when the link has none."""

    contact_id: str
    campaign: str
    iteration: str


class FlagState(NamedTuple):
    """Whether a column-defined event's condition holds for a contact."""

    contact_id: str
    event: str
    active: bool


class BackfillProgress(NamedTuple):
    position: Position | None
    done: bool
    rows: int


class Sent(NamedTuple):
    """An event Wiraya accepted: its row's key and what the event was (`event_identity`)."""

    key: str
    identity: bytes | None


@dataclass
class Commit:
    """Everything one page produced, written in one transaction."""

    watermark: Position | None = None
    contacts: list[Delivered] = field(default_factory=list)
    links: list[LinkKey] = field(default_factory=list)
    flags: list[FlagState] = field(default_factory=list)
    ledger: list[Sent] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)
    # Contacts written whole as their replies came (nothing after the upsert could fail for
    # them): on record already, not written again; their waiting events may go.
    recorded: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Run:
    id: int
    stream: str
    kind: PassKind
    started_at: str
    finished_at: str | None
    outcome: Outcome
    error: str | None
    counts: Counts

    def summary(self) -> dict[str, Any]:
        """The run as plain data (for `status --json`): its fields and its counts."""
        return {"id": self.id, "stream": self.stream, "kind": self.kind,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "outcome": self.outcome, **self.counts.as_dict(), "error": self.error}


class _File:
    """The SQLite file itself: opening, migrations, write transactions."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    # -- opening ----------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, create: bool = True, timeout: float = 30.0) -> Self:
        path = Path(path)
        if not path.exists():
            if not create:
                raise StateError(f"no state file at {path}; run a pass first (connector sync)")
            _create_private(path)
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=timeout,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            state = cls(conn, path)
            state._migrate()
        except sqlite3.Error as exc:
            raise _refusal(path, exc) from None
        return state

    @classmethod
    def for_dry_run(cls, path: Path, timeout: float = 30.0) -> Self:
        """The state as a dry run sees it, never created nor written: the file opened
        read-only, or (no file yet, or one of an older schema) a copy in memory."""
        path = Path(path)
        memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        if not path.exists():
            state = cls(memory, path)
            state._migrate()
            return state
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                   isolation_level=None, timeout=timeout,
                                   check_same_thread=False)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == len(MIGRATIONS):
                memory.close()
                return cls(conn, path)
            conn.backup(memory)
            conn.close()
            state = cls(memory, path)
            state._migrate()
        except sqlite3.Error as exc:
            raise _refusal(path, exc) from None
        return state

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StateError(f"state file {self.path} was written by a newer connector (schema "
                             f"{version}, this one knows {len(MIGRATIONS)}); upgrade the "
                             "connector or point state: at another file")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            try:
                self._conn.executescript(
                    f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
            except sqlite3.Error:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                # Another process (a backfill started beside the daemon) read the same old
                # version and migrated first, holding the write lock we waited for: done.
                if self.schema_version >= number:
                    continue
                raise

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StateError(f"state file {self.path} is locked by another process ({exc}); "
                             "wait for it to finish, or stop the other connector") from None
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StateError(f"cannot write state file {self.path}: {exc}") from None



class _Memory(_File):
    """What the state file knows: watermarks, delivered contacts, links, flags, the event
    ledger and the held rows."""

    # -- watermarks -------------------------------------------------------------------

    def watermark(self, stream: str) -> Position | None:
        row = self._conn.execute("SELECT high FROM streams WHERE name = ?", (stream,)).fetchone()
        return Position.from_json(row[0]) if row and row[0] else None

    def set_watermark(self, stream: str, position: Position | None) -> None:
        """Set or clear a stream's watermark (for `connector reset`-style repairs and tests)."""
        with self._write() as db:
            self._put_watermark(db, stream, position)

    def _put_watermark(self, db: sqlite3.Connection, stream: str,
                       position: Position | None) -> None:
        db.execute("INSERT INTO streams (name, high, updated_at) VALUES (?, ?, ?) "
                   "ON CONFLICT (name) DO UPDATE SET high = excluded.high, "
                   "updated_at = excluded.updated_at",
                   (stream, position.to_json() if position else None, _now_text()))

    def table_identity(self, stream: str) -> str | None:
        row = self._conn.execute("SELECT table_identity FROM streams WHERE name = ?",
                                 (stream,)).fetchone()
        return row[0] if row else None

    def restart_stream(self, stream: str, identity: str | None) -> None:
        """The stream's table is new (truncated, recreated): forget where it was read to,
        keep what was delivered (digests, ledger), and note the table's identity."""
        with self._write() as db:
            db.execute("INSERT INTO streams (name, table_identity, updated_at) VALUES (?, ?, ?) "
                       "ON CONFLICT (name) DO UPDATE SET high = NULL, checkpoints = NULL, "
                       "table_identity = excluded.table_identity, "
                       "updated_at = excluded.updated_at", (stream, identity, _now_text()))

    def note_table_identity(self, stream: str, identity: str) -> None:
        with self._write() as db:
            db.execute("INSERT INTO streams (name, table_identity, updated_at) VALUES (?, ?, ?) "
                       "ON CONFLICT (name) DO UPDATE SET table_identity = "
                       "excluded.table_identity", (stream, identity, _now_text()))

    def checkpoints(self, stream: str) -> list[tuple[float, str]]:
        """Recent `(unix time, high position JSON)` pairs, oldest first."""
        row = self._conn.execute("SELECT checkpoints FROM streams WHERE name = ?",
                                 (stream,)).fetchone()
        return [tuple(item) for item in json.loads(row[0])] if row and row[0] else []

    def add_checkpoint(self, stream: str, at: float, position: Position, keep: int = 64) -> None:
        items = [*self.checkpoints(stream), (at, position.to_json())][-keep:]
        with self._write() as db:
            db.execute("INSERT INTO streams (name, checkpoints, updated_at) VALUES (?, ?, ?) "
                       "ON CONFLICT (name) DO UPDATE SET checkpoints = excluded.checkpoints",
                       (stream, json.dumps(items), _now_text()))

    # -- lookups for one page -----------------------------------------------------------

    def known_contacts(self, stream: str, keys: Sequence[str]) -> dict[str, Delivered]:
        """The contacts on record among `keys`, by contact id."""
        found: dict[str, Delivered] = {}
        for part in _chunks(keys):
            rows = self._conn.execute(
                "SELECT contact_id, input_digest, payload_digest FROM contacts "
                f"WHERE stream = ? AND contact_id IN ({_marks(part)})", (stream, *part))
            found.update((row[0], Delivered(*row)) for row in rows)
        return found

    def changed_contacts(self, stream: str, digests: dict[str, int]) -> list[str]:
        """The contact ids whose input digest (an integer the database computed) is not the
        one on record, or that have none. The comparison runs inside SQLite, so an unchanged
        page builds nothing in Python."""
        changed: list[str] = []
        items = list(digests.items())
        for start in range(0, len(items), 5000):
            pairs = json.dumps(items[start:start + 5000])
            rows = self._conn.execute(
                "SELECT json_extract(p.value, '$[0]') FROM json_each(?) AS p "
                "LEFT JOIN contacts AS c ON c.stream = ? "
                "AND c.contact_id = json_extract(p.value, '$[0]') "
                "WHERE c.input_digest IS NULL "
                "OR c.input_digest IS NOT json_extract(p.value, '$[1]')", (pairs, stream))
            changed.extend(row[0] for row in rows)
        return changed

    def delivered(self, streams: Sequence[str], contact_ids: Sequence[str]) -> set[str]:
        """The contact ids that any of `streams` has delivered to Wiraya."""
        found: set[str] = set()
        if not streams:
            return found
        for part in _chunks(contact_ids, _CHUNK - len(streams)):
            rows = self._conn.execute(
                f"SELECT contact_id FROM contacts WHERE stream IN ({_marks(streams)}) "
                f"AND contact_id IN ({_marks(part)})", (*streams, *part))
            found.update(row[0] for row in rows)
        return found

    def known_links(self, contact_ids: Sequence[str]) -> set[LinkKey]:
        found: set[LinkKey] = set()
        for part in _chunks(contact_ids):
            rows = self._conn.execute(
                "SELECT contact_id, campaign, iteration FROM links "
                f"WHERE contact_id IN ({_marks(part)})", tuple(part))
            found.update(LinkKey(*row) for row in rows)
        return found

    def known_flags(self, stream: str, contact_ids: Sequence[str]) -> dict[tuple[str, str], bool]:
        found: dict[tuple[str, str], bool] = {}
        for part in _chunks(contact_ids):
            rows = self._conn.execute(
                "SELECT contact_id, event, active FROM flags "
                f"WHERE stream = ? AND contact_id IN ({_marks(part)})", (stream, *part))
            for contact_id, event, active in rows:
                found[(contact_id, event)] = bool(active)
        return found

    def sent_events(self, stream: str, keys: Sequence[str]) -> dict[str, bytes | None]:
        """`{row key: identity}` of the events on record among these keys (identity None:
        sent by a connector that did not keep it)."""
        found: dict[str, bytes | None] = {}
        for part in _chunks(keys):
            rows = self._conn.execute(
                "SELECT row_id, identity FROM ledger WHERE stream = ? "
                f"AND row_id IN ({_marks(part)})", (stream, *part))
            found.update((key, identity) for key, identity in rows)
        return found

    def held(self, stream: str, keys: Sequence[str] | None = None,
             state: HeldState | None = None, limit: int | None = None) -> list[Held]:
        """Held rows of a stream: all of them, or those with the given keys."""
        sql = "SELECT * FROM held WHERE stream = ?"
        args: list[Any] = [stream]
        if state:
            sql += " AND state = ?"
            args.append(state)
        if keys is None:
            sql += " ORDER BY last_seen, row_key"
            if limit is not None:
                sql += f" LIMIT {int(limit)}"
            return [_held(row) for row in self._conn.execute(sql, args)]
        found: list[Held] = []
        for part in _chunks(keys):
            rows = self._conn.execute(f"{sql} AND row_key IN ({_marks(part)})", (*args, *part))
            found.extend(_held(row) for row in rows)
        return found

    def all_held(self, state: str | None = None) -> list[Held]:
        sql = "SELECT * FROM held" + (" WHERE state = ?" if state else "")
        sql += " ORDER BY stream, first_seen, row_key"
        return [_held(row) for row in self._conn.execute(sql, (state,) if state else ())]

    def waiting_for(self, contact_ids: Sequence[str]) -> list[Held]:
        found: list[Held] = []
        for part in _chunks(contact_ids):
            rows = self._conn.execute(
                "SELECT * FROM held WHERE state = 'waiting' "
                f"AND contact_id IN ({_marks(part)})", tuple(part))
            found.extend(_held(row) for row in rows)
        return found

    def touch_held(self, stream: str, keys: Sequence[str]) -> None:
        """Mark held rows as looked at, so the next re-check takes others first."""
        now = _now_text()
        with self._write() as db:
            for part in _chunks(keys):
                db.execute(f"UPDATE held SET last_seen = ? WHERE stream = ? "
                           f"AND row_key IN ({_marks(part)})", (now, stream, *part))

    def holds_contacts(self, stream: str) -> bool:
        """Whether any contact of the stream is on record."""
        return self._conn.execute("SELECT 1 FROM contacts WHERE stream = ? LIMIT 1",
                                  (stream,)).fetchone() is not None

    def has_held(self, stream: str) -> bool:
        return self._conn.execute("SELECT 1 FROM held WHERE stream = ? LIMIT 1",
                                  (stream,)).fetchone() is not None

    def held_counts(self) -> dict[tuple[str, str], int]:
        rows = self._conn.execute("SELECT stream, state, count(*) FROM held GROUP BY 1, 2")
        return {(stream, state): count for stream, state, count in rows}



class _History(_File):
    """Runs and backfills: what happened, and how far a backfill got."""


    # -- runs -----------------------------------------------------------------------------

    def start_run(self, stream: str, kind: PassKind) -> int:
        with self._write() as db:
            cursor = db.execute("INSERT INTO runs (stream, kind, started_at, outcome) "
                                "VALUES (?, ?, ?, 'running')", (stream, kind, _now_text()))
            return int(cursor.lastrowid or 0)

    def finish_run(self, run_id: int, outcome: Outcome, counts: Counts,
                   error: str | None = None) -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET finished_at = ?, outcome = ?, read = ?, sent = ?, "
                       "skipped = ?, dead = ?, waiting = ?, error = ?, counts = ? WHERE id = ?",
                       (_now_text(), outcome, counts.read, counts.sent, counts.skipped,
                        counts.dead, counts.waiting, error, json.dumps(counts.as_dict()),
                        run_id))
            db.execute("DELETE FROM runs WHERE stream = (SELECT stream FROM runs WHERE id = ?) "
                       "AND id <= (SELECT id FROM runs r WHERE r.stream = "
                       "(SELECT stream FROM runs WHERE id = ?) ORDER BY id DESC LIMIT 1 OFFSET ?)",
                       (run_id, run_id, RUNS_KEPT))

    def runs(self, stream: str | None = None, limit: int = 10) -> list[Run]:
        sql = ("SELECT id, stream, kind, started_at, finished_at, outcome, error, counts, "
               "read, sent, skipped, dead, waiting FROM runs"
               + (" WHERE stream = ?" if stream else ""))
        sql += f" ORDER BY id DESC LIMIT {int(limit)}"
        return [_run(row) for row in self._conn.execute(sql, (stream,) if stream else ())]

    # -- backfills ------------------------------------------------------------------------

    def backfill(self, stream: str, range_key: str) -> BackfillProgress | None:
        row = self._conn.execute("SELECT position, done, rows FROM backfills "
                                 "WHERE stream = ? AND range_key = ?",
                                 (stream, range_key)).fetchone()
        if row is None:
            return None
        return BackfillProgress(Position.from_json(row[0]) if row[0] else None, bool(row[1]),
                                int(row[2]))

    def save_backfill(self, stream: str, range_key: str, position: Position | None,
                      rows: int, done: bool = False) -> None:
        now = _now_text()
        with self._write() as db:
            db.execute("INSERT INTO backfills VALUES (?, ?, ?, ?, ?, ?, ?) "
                       "ON CONFLICT (stream, range_key) DO UPDATE SET position = "
                       "excluded.position, done = excluded.done, rows = excluded.rows, "
                       "updated_at = excluded.updated_at",
                       (stream, range_key, position.to_json() if position else None, int(done),
                        rows, now, now))

    # -- counts for status ------------------------------------------------------------------

    def count(self, table: str, stream: str) -> int:
        if table not in {"contacts", "ledger", "flags"}:
            raise ValueError(table)
        row = self._conn.execute(f"SELECT count(*) FROM {table} WHERE stream = ?",
                                 (stream,)).fetchone()
        return int(row[0])

    # -- for the daemon: a state file lost or full under a running process -------------------

    def probe_write(self) -> None:
        """Commit a one-page write (the schema version, unchanged), so that a full disk or a
        file that cannot be written shows as a `StateError` before a pass sends anything."""
        version = self.schema_version
        with self._write() as db:
            db.execute(f"PRAGMA user_version = {int(version)}")

    def backup_to(self, target: Path) -> None:
        """Copy the whole state, as this connection sees it (even from a deleted file), into a
        new SQLite file at `target` (SQLite's online backup API)."""
        copy = sqlite3.connect(target)
        try:
            self._conn.backup(copy)
        finally:
            copy.close()

    def reopen(self) -> None:
        """Close the connection, then open the file at `self.path` again (after it was put
        back). Closed first: SQLite removes a closing connection's -wal and -shm by name."""
        self._conn.close()
        self._conn = State.open(self.path, create=False)._conn

    def finish_unfinished_runs(self, streams: Sequence[str], after_id: int, outcome: str,
                               note: str) -> int:
        """Close the runs still marked running (a pass cut short), newer than `after_id`."""
        with self._write() as db:
            cursor = db.execute(
                f"UPDATE runs SET outcome = ?, error = ?, finished_at = ? WHERE id > ? AND "
                f"outcome = 'running' AND stream IN ({_marks(streams)})",
                (outcome, note, _now_text(), after_id, *streams))
            return int(cursor.rowcount)


class _Compare(_File):
    """Full comparisons: which contacts on record a complete read of the table saw."""

    def next_compare(self, stream: str) -> int:
        """The number of a new full comparison of `stream` (1, 2, ...)."""
        with self._write() as db:
            db.execute("INSERT INTO streams (name, compare_pass, updated_at) VALUES (?, 1, ?) "
                       "ON CONFLICT (name) DO UPDATE SET compare_pass = compare_pass + 1",
                       (stream, _now_text()))
            row = db.execute("SELECT compare_pass FROM streams WHERE name = ?",
                             (stream,)).fetchone()
        return int(row[0])

    def mark_seen(self, stream: str, keys: Sequence[str], number: int) -> None:
        """The contacts `keys` were in the table during full comparison `number`."""
        if not keys:
            return
        with self._write() as db:
            db.execute("UPDATE contacts SET seen = ? WHERE stream = ? AND contact_id IN "
                       "(SELECT value FROM json_each(?))", (number, stream, json.dumps(keys)))

    def unseen(self, stream: str, number: int, after: str = "", limit: int = 1000
               ) -> list[str]:
        """Contacts on record that full comparison `number` did not see, in id order from
        `after` on. A contact first delivered while it ran (by another pass, whose row that
        read may have passed already) is born seen by it (`State.commit`)."""
        rows = self._conn.execute(
            "SELECT contact_id FROM contacts WHERE stream = ? AND contact_id > ? "
            "AND (seen IS NULL OR seen < ?) ORDER BY contact_id LIMIT ?",
            (stream, after, number, limit))
        return [row[0] for row in rows]

    def changed_packed(self, stream: str, packed: str, seen: int | None,
                       held: bool) -> list[str]:
        """`changed_contacts` for a page of `{id: digest}` as JSON text (`Page.packed`), with
        the ids held back (when `held`); marks every id seen by comparison `seen`."""
        with self._write() as db:
            if seen is not None:
                db.execute("UPDATE contacts SET seen = ?3 WHERE stream = ?2 AND contact_id IN "
                           "(SELECT key FROM json_each(?1))", (packed, stream, seen))
            rows = db.execute(
                "SELECT p.key FROM json_each(?1) AS p LEFT JOIN contacts AS c "
                "ON c.stream = ?2 AND c.contact_id = p.key WHERE c.input_digest IS NOT p.value"
                + (" UNION SELECT row_key FROM held WHERE stream = ?2 AND row_key IN "
                   "(SELECT key FROM json_each(?1))" if held else ""),
                (packed, stream)).fetchall()
        return [row[0] for row in rows]

    def forget_deleted(self, stream: str, keys: Sequence[str]) -> None:
        """Contacts whose rows are gone: their digests and flags forgotten (a row that comes
        back with the same id is a new upsert), and counted."""
        if not keys:
            return
        with self._write() as db:
            for part in _chunks(keys):
                for table in ("contacts", "flags"):
                    db.execute(f"DELETE FROM {table} WHERE stream = ? AND contact_id IN "
                               f"({_marks(part)})", (stream, *part))
            db.execute("INSERT INTO streams (name, deleted, updated_at) VALUES (?, ?, ?) "
                       "ON CONFLICT (name) DO UPDATE SET deleted = deleted + excluded.deleted",
                       (stream, len(keys), _now_text()))

    def deleted(self, stream: str) -> int:
        """How many contacts of `stream` full comparisons have found deleted, in all."""
        row = self._conn.execute("SELECT deleted FROM streams WHERE name = ?",
                                 (stream,)).fetchone()
        return int(row[0]) if row else 0


class State(_Memory, _History, _Compare):
    """The state file. Use from one thread; other processes may share the file (WAL)."""

    def commit(self, stream: str, page: Commit) -> None:
        """Write what a page produced in one transaction."""
        stamp = int(time.time())
        text_now = _now_text()
        with self._write() as db:
            if page.contacts:
                db.executemany(
                    # A contact new on record counts as seen by the comparison running
                    # now: that read may have passed its row already (see `unseen`).
                    "INSERT INTO contacts (stream, contact_id, input_digest, payload_digest, "
                    "delivered_at, seen) VALUES (?, ?, ?, ?, ?, (SELECT compare_pass FROM "
                    "streams WHERE name = ?)) ON CONFLICT (stream, contact_id) "
                    "DO UPDATE SET input_digest = excluded.input_digest, "
                    "payload_digest = excluded.payload_digest, "
                    "delivered_at = CASE WHEN contacts.payload_digest = excluded.payload_digest "
                    "THEN contacts.delivered_at ELSE excluded.delivered_at END",
                    [(stream, c.key, c.input_digest, c.payload_digest, stamp, stream)
                     for c in page.contacts])
            if page.links:
                db.executemany("INSERT OR IGNORE INTO links VALUES (?, ?, ?, ?)",
                               [(*link, stamp) for link in page.links])
            if page.flags:
                db.executemany("INSERT INTO flags VALUES (?, ?, ?, ?) ON CONFLICT "
                               "(stream, contact_id, event) DO UPDATE SET active = excluded.active",
                               [(stream, cid, event, int(on)) for cid, event, on in page.flags])
            if page.ledger:
                db.executemany("INSERT INTO ledger (stream, row_id, sent_at, identity) "
                               "VALUES (?, ?, ?, ?) ON CONFLICT (stream, row_id) DO UPDATE "
                               "SET sent_at = excluded.sent_at, identity = excluded.identity",
                               [(stream, key, stamp, identity)
                                for key, identity in page.ledger])
            if page.cleared:
                for part in _chunks(page.cleared):
                    db.execute(f"DELETE FROM held WHERE stream = ? AND row_key IN ({_marks(part)})",
                               (stream, *part))
            if page.held:
                db.executemany(
                    "INSERT INTO held (stream, row_key, state, reason, retriable, attempts, "
                    "contact_id, cursor, payload_digest, first_seen, last_seen, unanswered) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (stream, row_key) "
                    "DO UPDATE SET state = excluded.state, reason = excluded.reason, "
                    "retriable = excluded.retriable, attempts = held.attempts + 1, "
                    "contact_id = excluded.contact_id, cursor = excluded.cursor, "
                    "payload_digest = excluded.payload_digest, last_seen = excluded.last_seen, "
                    "unanswered = held.unanswered + excluded.unanswered",
                    [(stream, h.row_key, h.state, h.reason, int(h.retriable), h.attempts,
                      h.contact_id, h.cursor, h.payload_digest, text_now, text_now,
                      h.unanswered) for h in page.held])
            if page.watermark is not None:
                self._put_watermark(db, stream, page.watermark)


    # -- forgetting one stream (connector state reset) --------------------------------------

    def stream_footprint(self, stream: str) -> dict[str, int]:
        """What the file holds of one stream, by kind, for `state reset` to tell."""
        queries = {
            "watermark": "SELECT count(*) FROM streams WHERE name = ? AND high IS NOT NULL",
            "digests": "SELECT count(*) FROM contacts WHERE stream = ?",
            "dead": "SELECT count(*) FROM held WHERE stream = ? AND state = 'dead'",
            "waiting": "SELECT count(*) FROM held WHERE stream = ? AND state = 'waiting'",
            "backfills": "SELECT count(*) FROM backfills WHERE stream = ?",
            "events": "SELECT (SELECT count(*) FROM ledger WHERE stream = ?1) "
                      "+ (SELECT count(*) FROM flags WHERE stream = ?1)",
            "runs": "SELECT count(*) FROM runs WHERE stream = ?",
        }
        return {kind: int(self._conn.execute(sql, (stream,)).fetchone()[0])
                for kind, sql in queries.items()}

    def reset_stream(self, stream: str, *, forget_events: bool = False) -> None:
        """Forget a stream's watermark, digests, held rows and backfill progress, so its
        next pass reads from the start; its sent events (ledger and flags) only when asked,
        since forgetting them sends every event again. Links and runs are kept."""
        tables = ["contacts", "held", "backfills"] + (["ledger", "flags"] if forget_events
                                                       else [])
        with self._write() as db:
            db.execute("DELETE FROM streams WHERE name = ?", (stream,))
            for table in tables:
                db.execute(f"DELETE FROM {table} WHERE stream = ?", (stream,))


def _refusal(path: Path, exc: sqlite3.Error) -> StateError:
    """Why a state file cannot be used, and what to do about it."""
    if isinstance(exc, sqlite3.OperationalError):
        if "locked" in str(exc) or "busy" in str(exc):
            return StateError(f"state file {path} is locked by another process; wait for it "
                              "to finish, or stop the other connector")
        return StateError(f"cannot use state file {path}: {exc}")
    return StateError(f"state file {path} is corrupt or not a connector state file ({exc}); "
                      "move it aside to start afresh (the next pass then resends every "
                      "contact) or restore a backup")


def _run(row: tuple[Any, ...]) -> Run:
    (id_, stream, kind, started_at, finished_at, outcome, error, counts, read, sent, skipped,
     dead, waiting) = row
    if counts:
        whole = Counts.from_dict(json.loads(counts))
    else:  # a run recorded before the counts were kept whole
        whole = Counts(read=read, sent=sent, skipped=skipped, dead=dead, waiting=waiting)
    return Run(id_, stream, kind, started_at, finished_at, outcome, error, whole)


def _held(row: sqlite3.Row | tuple[Any, ...]) -> Held:
    (stream, row_key, state, reason, retriable, attempts, contact_id, cursor, payload_digest,
     first_seen, last_seen, unanswered) = row
    return Held(stream, row_key, state, reason, bool(retriable), attempts, contact_id, cursor,
                payload_digest, first_seen, last_seen, unanswered)


def _create_private(path: Path) -> None:
    """Create the state file readable by its owner only (and its folder, if new)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StateError(f"cannot create state file {path}: {exc.strerror}; check that the "
                         "folder exists and is writable, or set state: to another path") from None
    os.close(fd)


# ---------------------------------------------------------------------------
# Locks shared with other processes on this machine


def _lock_path(state: Path, name: str) -> Path:
    folder = state.parent / f".{state.name}.locks"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder / name


class DaemonLock:
    """Only one daemon may own a state file; the lock goes with the process, even a killed one."""

    def __init__(self, state: Path) -> None:
        self.path = _lock_path(state, "daemon")
        self._fd: int | None = None

    def acquire(self) -> DaemonLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateLockedError(f"another connector daemon (pid {owner}) already uses this "
                                   "state file; stop it first, or give this one its own "
                                   "state: path") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@asynccontextmanager
async def stream_lock(state: Path, stream: str, wait: bool = True) -> AsyncIterator[bool]:
    """Hold a stream while one page is handled and committed, across processes.

    The daemon and a backfill of the same stream take turns page by page, so an event is
    never checked against the ledger by both before either has written it. With
    `wait=False` the lock is tried once; the body learns whether it got it.
    """
    fd = os.open(_lock_path(state, f"stream-{stream}"), os.O_RDWR | os.O_CREAT, 0o600)
    got = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
                break
            except BlockingIOError:
                if not wait:
                    break
                await _pause(0.02)
        yield got
    finally:
        if got:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


async def _pause(seconds: float) -> None:
    # asyncio is imported here, not at the top: commands that only read the state file
    # (status, runs) need not pay for it.
    import asyncio

    await asyncio.sleep(seconds)
