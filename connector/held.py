"""Rows held back: dead letters and events waiting for their contact.

A live pass looks at held rows again (fixed rows flow, waiting events whose contact arrived
go), holds visibly the rows a keyset walk cannot reach (a NULL id or cursor), and right after
contacts are committed sends the events that were waiting for them. Held rows are always
read again from the database, so what is sent is the freshest data.

These functions drive a stream's page handler (`Pages`) and never reach into it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from connector import config
from connector.context import Context
from connector.cursor import cursor_value
from connector.logs import for_stream
from connector.mapping import Rejected, as_key
from connector.plan import NO_ID, bad_key, dead_letter
from connector.source import BoundStream, Rows
from connector.state import Commit, Held
from connector.values import Counts

RECHECK_LIMIT = 1000  # held rows looked at again per pass


class Pages(Protocol):
    """What held rows need of a stream's page handler."""

    @property
    def name(self) -> str: ...

    @property
    def bound(self) -> BoundStream: ...

    @property
    def page_size(self) -> int: ...

    @property
    def counts(self) -> Counts: ...

    async def step(self, rows: Rows, force: bool) -> None:
        """Handle full rows as one page and commit it."""

    async def commit_locked(self, commit: Commit) -> None:
        """Commit an outcome that is not a page's, under the stream's lock."""


async def recheck(ctx: Context, pages: Pages, stream: config.ContactStream | config.EventStream,
                  skip: set[str]) -> int:
    """Look again at held rows (but those in `skip`, held by this pass); rows resolved."""
    state = ctx.state
    held = [h for h in state.held(pages.name, limit=RECHECK_LIMIT) if h.row_key not in skip]
    if not held:
        return 0
    waiting = [h for h in held if h.state == "waiting"]
    if waiting and isinstance(stream, config.EventStream):
        ready = state.delivered(ctx.settings.contact_streams_for(stream),
                                sorted({h.contact_id for h in waiting if h.contact_id}))
        waiting = [h for h in waiting if h.contact_id in ready]
    dead = [h for h in held if h.state == "dead"]
    resolved = await reread(ctx, pages, waiting + dead, force=False)
    if not ctx.dry_run:
        state.touch_held(pages.name, [h.row_key for h in held])
    return resolved


async def reread(ctx: Context, pages: Pages, held: Sequence[Held], force: bool) -> int:
    """Read held rows again from the database and handle them; the rows that are gone (or
    now have an id) are no longer held. Returns how many that is."""
    if not held:
        return 0
    source, bound = ctx.source, pages.bound
    by_id = [h.row_key for h in held if not h.row_key.startswith(NO_ID)]
    rows = await asyncio.to_thread(source.rows_by_id, bound, by_id)
    found: set[str] = set()
    for start in range(0, len(rows), pages.page_size):
        part = rows.part(start, start + pages.page_size)
        for row in part.rows:
            with contextlib.suppress(Rejected):
                found.add(as_key(bound.id_of(row)))
        await pages.step(part, force)
    gone = [key for key in by_id if key not in found]
    for item in held:
        if item.row_key.startswith(NO_ID):
            gone += await _find_without_id(ctx, pages, item, force)
    if gone:
        for_stream(pages.name).info("%d held row(s) no longer exist in the database or now "
                                    "have an id; they are no longer held", len(gone))
        await pages.commit_locked(Commit(cleared=gone))
    return len(gone)


async def _find_without_id(ctx: Context, pages: Pages, item: Held, force: bool) -> list[str]:
    """A row held for having no id, looked for at its cursor value: gone when every row
    there has an id now (those are handled)."""
    cursor = cursor_value(item.cursor)
    at_cursor = await asyncio.to_thread(ctx.source.rows_at_cursor, pages.bound, cursor) \
        if cursor is not None else Rows([])
    if any(pages.bound.id_of(row) is None for row in at_cursor.rows):
        return []
    if len(at_cursor):
        await pages.step(at_cursor, force)
    return [item.row_key]


async def unreachable(ctx: Context, pages: Pages, floor: Any) -> int:
    """Rows with a NULL id or a NULL cursor cannot be read in order: hold them visibly.
    Returns how many were held."""
    bound = pages.bound
    rows = await asyncio.to_thread(ctx.source.rows_without_key, bound, floor, RECHECK_LIMIT)
    if not len(rows):
        return 0
    commit = Commit()
    for row in rows.rows:
        row_id, cursor = bound.id_of(row), bound.cursor_of(row)
        if row_id is None:
            commit.held.append(dead_letter(
                pages.name, bad_key(None, cursor),
                f"id column {bound.id.name} is NULL; give the row an id", cursor=cursor))
        else:
            commit.held.append(dead_letter(
                pages.name, _key_or_bad(row_id), f"cursor column {bound.cursor.name} is "
                "NULL; the row cannot be read in order until it has a value"))
    await pages.commit_locked(commit)
    return len(commit.held)


async def release_waiting(ctx: Context, contact_ids: Sequence[str],
                          pages_for: Callable[[str], Pages]) -> int:
    """Send, right after their contact, the events that were waiting for it; the number
    sent. `pages_for(stream)` gives a handler that skips a page whose stream another pass
    holds (that pass sends them itself)."""
    if ctx.dry_run:
        return 0
    by_stream: dict[str, list[Held]] = {}
    for item in ctx.state.waiting_for(contact_ids):
        by_stream.setdefault(item.stream, []).append(item)
    sent = 0
    for stream, items in by_stream.items():
        if stream not in ctx.settings.events:
            continue
        pages = pages_for(stream)
        before = pages.counts.sent
        await reread(ctx, pages, items, force=False)
        sent += pages.counts.sent - before
    return sent


def _key_or_bad(raw_id: Any) -> str:
    try:
        return as_key(raw_id)
    except Rejected:
        return bad_key(raw_id)
