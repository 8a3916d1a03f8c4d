"""Held rows (connector.held): recheck, reread, release, unreachable rows.

A real SQLite source and state file in a temp folder; no server. The page handler is a
recorder that keeps the pages `held` hands it, so each test sees exactly which rows were
read again and what was committed.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector import config, held
from connector.context import Context
from connector.source import BoundStream, Rows, Source
from connector.state import Commit, Delivered, Held, State
from connector.values import Counts
from connector.wiraya import Wiraya

# As SQLAlchemy writes a SQLite DATETIME: its text compares with the values it binds.
NOON = "2026-11-27 12:00:00.000000"
HALF_PAST = "2026-11-27 12:30:00.000000"


@dataclass
class Recorder:
    """A page handler that keeps what it is given (and commits what it is told to)."""

    state: State
    name: str
    bound: BoundStream
    page_size: int = 2
    counts: Counts = field(default_factory=Counts)
    pages: list[tuple[list[Any], bool]] = field(default_factory=list)

    async def step(self, rows: Rows, force: bool) -> None:
        self.pages.append(([self.bound.id_of(row) for row in rows.rows], force))
        self.counts.sent += len(rows)

    async def commit_locked(self, commit: Commit) -> None:
        self.state.commit(self.name, commit)


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    database = tmp_path / "shop.db"
    with sqlite3.connect(database) as conn:
        conn.executescript(f"""
            CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, mobile TEXT,
                                    updated_at TIMESTAMP NOT NULL);
            CREATE TABLE orders (order_id INTEGER, customer_id INTEGER, created_at TIMESTAMP);
            INSERT INTO orders VALUES (1, 10, '{NOON}'), (2, 10, '{NOON}'), (3, 20, '{NOON}'),
                                      (NULL, 30, '{HALF_PAST}'), (5, 30, NULL);
        """)
    document = {
        "source": {"url": f"sqlite:///{database}"},
        "wiraya": {"base_url": "http://127.0.0.1:9", "api_key": "unused"},
        "state": str(tmp_path / "state.db"),
        "contacts": {"customers": {"table": "customers", "id": "customer_id",
                                   "cursor": "updated_at",
                                   "personal": {"phoneNumber": "mobile"}}},
        "events": {"orders": {"table": "orders", "id": "order_id", "contact": "customer_id",
                              "cursor": "created_at", "name": "Conversion"}},
    }
    path = tmp_path / "connector.yaml"
    path.write_text(yaml.safe_dump(document))
    settings = config.load(path)
    source = Source(settings.source)
    state = State.open(settings.state)
    # Never called: the recorder stands in for the page handler; a client makes it no dry run.
    api = Wiraya(settings.wiraya)
    yield Context(settings, source, state, api)
    asyncio.run(api.close())
    state.close()
    source.close()


def recorder(ctx: Context, name: str = "orders") -> Recorder:
    bound = ctx.source.bind(name, ctx.settings.streams[name], "events")
    return Recorder(ctx.state, name, bound)


def dead(key: str, cursor: str | None = None) -> Held:
    return Held("orders", key, "dead", "refused", cursor=cursor)


def waiting(key: str, contact_id: str) -> Held:
    return Held("orders", key, "waiting", f"contact {contact_id} not yet delivered",
                contact_id=contact_id)


def test_reread_reads_held_rows_again_in_pages_and_lets_go_of_rows_that_are_gone(
        ctx: Context) -> None:
    pages = recorder(ctx)
    ctx.state.commit("orders", Commit(held=[dead("1"), dead("2"), dead("3"), dead("99")]))
    gone = asyncio.run(held.reread(ctx, pages, ctx.state.held("orders"), force=True))
    assert pages.pages == [([1, 2], True), ([3], True)]
    assert gone == 1
    assert sorted(h.row_key for h in ctx.state.held("orders")) == ["1", "2", "3"]


def test_a_row_held_for_having_no_id_is_found_again_at_its_cursor(ctx: Context) -> None:
    pages = recorder(ctx)
    without_id = Held("orders", "(no id) at cursor 2026-11-27T12:30:00", "dead", "no id",
                      cursor='{"cursor": ["datetime", "2026-11-27T12:30:00"], "id": null}')
    ctx.state.commit("orders", Commit(held=[without_id]))
    # Still without an id: still held, nothing handled.
    assert asyncio.run(held.reread(ctx, pages, [without_id], force=False)) == 0
    assert pages.pages == [] and len(ctx.state.held("orders")) == 1
    with sqlite3.connect(ctx.source.engine.url.database or "") as conn:
        conn.execute("UPDATE orders SET order_id = 4 WHERE order_id IS NULL")
    assert asyncio.run(held.reread(ctx, pages, [without_id], force=False)) == 1
    assert pages.pages == [([4], False)]
    assert ctx.state.held("orders") == []


def test_rows_a_keyset_walk_cannot_reach_are_held_with_a_reason(ctx: Context) -> None:
    pages = recorder(ctx)
    assert asyncio.run(held.unreachable(ctx, pages, None)) == 2
    found = {h.row_key: h.reason for h in ctx.state.held("orders")}
    assert found == {
        "(no id) at cursor 2026-11-27T12:30:00":
            "id column order_id is NULL; give the row an id",
        "5": "cursor column created_at is NULL; the row cannot be read in order until it has "
             "a value"}


def test_recheck_rereads_dead_letters_and_only_the_waiting_events_whose_contact_arrived(
        ctx: Context) -> None:
    pages = recorder(ctx)
    ctx.state.commit("orders", Commit(held=[waiting("1", "10"), waiting("3", "20"),
                                            dead("2")]))
    ctx.state.commit("customers", Commit(contacts=[Delivered("10", b"i", b"p")]))
    stream = ctx.settings.events["orders"]
    asyncio.run(held.recheck(ctx, pages, stream, skip=set()))
    assert pages.pages == [([1, 2], False)]  # 3 waits on: contact 20 has not arrived
    pages.pages.clear()
    asyncio.run(held.recheck(ctx, pages, stream, skip={"1", "2"}))  # held by this pass
    assert pages.pages == []


def test_release_sends_the_events_that_waited_for_these_contacts(ctx: Context) -> None:
    ctx.state.commit("orders", Commit(held=[waiting("1", "10"), waiting("2", "10"),
                                            waiting("3", "20")]))
    asked: list[Recorder] = []

    def pages_for(stream: str) -> Recorder:
        asked.append(recorder(ctx, stream))
        return asked[-1]

    sent = asyncio.run(held.release_waiting(ctx, ["10"], pages_for))
    assert sent == 2
    assert [(pages.name, pages.pages) for pages in asked] == [("orders", [([1, 2], False)])]
