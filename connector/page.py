"""One page of one stream through the stages: plan -> deliver -> state.

`StreamPages.step` takes a page (narrow or full rows), asks the state file what it knows of
those rows, plans, delivers, and commits the page's outcome in one state transaction, under
the stream's page lock (shared with a backfill in another process). After contacts are
committed, the events that were waiting for them are released (`held.release_waiting`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from connector import config, held, plan
from connector.context import Context, StopFlag
from connector.deliver import Delivery
from connector.logs import for_stream
from connector.mapping import ContactMapper, EventMapper, Rejected, as_key
from connector.source import Page, Rows
from connector.state import Commit, Held, stream_lock
from connector.values import Counts, Position, short


class StreamPages:
    """One stream's page handler; `counts` adds up what its pages did."""

    def __init__(self, ctx: Context, name: str, counts: Counts | None = None,
                 lock_wait: bool = True) -> None:
        self.ctx = ctx
        self.name = name
        self.stream = stream = ctx.settings.streams[name]
        self.counts = counts if counts is not None else Counts()
        self.lock_wait = lock_wait  # False: skip a page whose stream another pass holds
        self.log = for_stream(name)
        zone = ctx.settings.source.zone
        self.contacts: ContactMapper | None = None
        self.events: EventMapper | None = None
        if isinstance(stream, config.ContactStream):
            bound = ctx.source.bind(name, stream, "contacts")
            self.contacts = ContactMapper(stream, bound.names, zone)
            # Where the server can digest rows, pages are read narrow (cursor, id, digest)
            # and only the changed rows in full.
            bound = ctx.source.narrowed(bound, self.contacts.salt)
        else:
            bound = ctx.source.bind(name, stream, "events")
            self.events = EventMapper(stream, bound.names, zone)
        self.bound = bound
        self.columns = plan.Columns(bound.id_index, bound.cursor_index)
        self.page_size = ctx.settings.page_size(stream)
        self.held_now: set[str] = set()  # rows this pass has just held: not re-checked now
        self.seen: int | None = None  # the full comparison running (compare.py), if any
        self.any_held = ctx.state.has_held(name)  # else no held row is looked up per page
        self.delivery = Delivery(name, ctx.api, self._record_now, zone, ctx.on_send,
                                 self.counts, ctx.settings.wiraya.max_attempts)

    @asynccontextmanager
    async def lock(self) -> AsyncIterator[bool]:
        """This stream's page lock (shared with a backfill in another process)."""
        if self.ctx.dry_run:
            yield True
            return
        async with stream_lock(self.ctx.state.path, self.name, wait=self.lock_wait) as got:
            yield got

    async def step(self, rows: Rows | Page, force: bool = False,
                   watermark: Position | None = None) -> None:
        """Handle one page and commit its outcome, holding the stream's lock throughout.
        A narrow page is first narrowed to the rows that changed, read then in full."""
        async with self.lock() as got:
            if not got:
                return  # another pass has the stream: it will see these rows
            if isinstance(rows, Page):
                self.counts.read += rows.size
                full = rows.full if rows.full is not None else await self._changed(rows, force)
            else:
                self.counts.read += len(rows)
                full = rows
            commit = await self._handle(full, force)
            commit.watermark = watermark
            await self._commit(commit)
        if self.ctx.on_page is not None:
            self.ctx.on_page(self.name, len(rows) if isinstance(rows, Rows) else rows.size)

    async def commit_locked(self, commit: Commit) -> None:
        async with self.lock() as got:
            if got:
                await self._commit(commit)

    async def _changed(self, page: Page, force: bool) -> Rows:
        """The full rows of a narrow page whose digest is not the one on record."""
        if page.packed is not None:
            return await self._changed_packed(page.packed, page.size, force)
        digests: dict[str, int] = {}
        odd: list[str] = []  # ids that are not clean keys: the full path holds them
        for item in page.narrow or ():
            key = item.text
            if key is None:
                try:
                    key = as_key(item.id)
                except Rejected:
                    odd.append(str(item.id))
                    continue
            digests[key] = item.digest
        state = self.ctx.state
        if force:
            fetch = list(digests)
        else:
            fetch = state.changed_contacts(self.name, digests)
            if self.any_held:
                chosen = set(fetch)
                fetch += [h.row_key for h in state.held(self.name, list(digests))
                          if h.row_key not in chosen]
        self.counts.skipped += len(digests) - len(fetch)
        if not fetch and not odd:
            return Rows([])
        return await asyncio.to_thread(self.ctx.source.rows_by_id, self.bound, fetch + odd)

    async def _changed_packed(self, packed: str, size: int, force: bool) -> Rows:
        """As `_changed`, for a page the server packed: the comparison (and the seen
        marks of a full comparison) run inside the state file."""
        if force:
            fetch = list(json.loads(packed))
        elif self.ctx.dry_run:
            fetch = self.ctx.state.changed_contacts(self.name, json.loads(packed))
        else:
            fetch = self.ctx.state.changed_packed(self.name, packed, self.seen, self.any_held)
        self.counts.skipped += size - len(fetch)
        if not fetch:
            return Rows([])
        return await asyncio.to_thread(self.ctx.source.rows_by_id, self.bound, fetch)

    async def _handle(self, rows: Rows, force: bool) -> Commit:
        if self.contacts is not None:
            return await self._contacts(self.contacts, rows, force)
        assert self.events is not None
        return await self._events(self.events, rows, force)

    def _held_of(self, keys: list[str]) -> dict[str, Held]:
        if not self.any_held:
            return {}
        return {h.row_key: h for h in self.ctx.state.held(self.name, keys)}

    async def _contacts(self, mapper: ContactMapper, rows: Rows, force: bool) -> Commit:
        state = self.ctx.state
        keyed = plan.key_rows(self.name, rows, mapper.key, self.columns)
        keys = list(keyed.index)
        on_record = self._held_of(keys)
        mapped = plan.map_contacts(self.name, rows, keyed, mapper, self.columns,
                                   state.known_contacts(self.name, keys), on_record, force)
        ids = list(mapped.mapped)
        wants_links = any(contact.links for contact in mapped.mapped.values())
        wants_flags = any(contact.flags for contact in mapped.mapped.values())
        todo = plan.plan_contacts(mapped, state.known_links(ids) if wants_links else set(),
                                  state.known_flags(self.name, ids) if wants_flags else {},
                                  force)
        self.counts.add(todo.counts)
        return await self.delivery.contacts(todo)

    async def _events(self, mapper: EventMapper, rows: Rows, force: bool) -> Commit:
        state = self.ctx.state
        keyed = plan.key_rows(self.name, rows, mapper.key, self.columns)
        keys = list(keyed.index)
        on_record = self._held_of(keys)
        mapped = plan.map_events(self.name, rows, keyed, mapper, self.columns,
                                 state.sent_events(self.name, keys), on_record)
        if mapped.reused:
            self.log.info("%d row(s) reuse the id of an event sent before, with another "
                          "contact or time (a truncated or recreated table, or ids given out "
                          "again): sent as new events, e.g. id %s", len(mapped.reused),
                          short(mapped.reused[0], 40))
        assert isinstance(self.stream, config.EventStream)
        waits_for = self.ctx.settings.contact_streams_for(self.stream)
        absent: dict[str, str] = {}
        if waits_for:
            ids = mapped.contact_ids()
            ready = state.delivered(waits_for, ids)
            missing = [cid for cid in ids if cid not in ready]
            dead = {stream: state.held(stream, missing, state="dead")
                    for stream in (waits_for if missing else [])}
            absent = plan.why_absent(missing, waits_for, dead)
        todo = plan.plan_events(self.name, mapped, on_record, absent, force)
        self.counts.add(todo.counts)
        return await self.delivery.events(todo)

    def _record_now(self, commit: Commit) -> None:
        if not self.ctx.dry_run:
            self.ctx.state.commit(self.name, commit)

    async def _commit(self, commit: Commit) -> None:
        for item in commit.held:
            if item.state == "dead":
                self.log.warning("row %s held as a dead letter: %s", short(item.row_key, 60),
                                 item.reason)
                self.held_now.add(item.row_key)
        if self.ctx.dry_run:
            return
        self.ctx.state.commit(self.name, commit)
        if commit.held:
            self.any_held = True
        if self.contacts is not None and (commit.contacts or commit.recorded):
            # Only now, with the contacts on record, may their waiting events go.
            self.counts.released += await held.release_waiting(
                self.ctx, [item.key for item in commit.contacts] + commit.recorded,
                lambda stream: StreamPages(self.ctx, stream, lock_wait=False))



async def read_ahead(stop: StopFlag, read: Callable[[Position | None], Page | None],
                     size: int, start: Position | None = None) -> AsyncIterator[Page]:
    """Pages from `read(after)` until one is short; the next page is read (in a thread)
    while the caller handles this one. Stops after the page in hand when `stop` is set."""
    pending: asyncio.Future[Page | None] | None = asyncio.ensure_future(
        asyncio.to_thread(read, start))
    try:
        while pending is not None:
            page = await pending
            pending = None
            if page is None:
                return
            if page.size == size and not stop.is_set():
                pending = asyncio.ensure_future(asyncio.to_thread(read, page.last))
            yield page
            if stop.is_set():
                return
    finally:
        if pending is not None:
            pending.cancel()
