"""One pass of one stream: source -> mapping -> diff -> Wiraya -> state.

This is the one module that orchestrates; the others do not import each other. A pass reads
keyset pages from `watermark - lookback` on; for each page it maps what changed, sends it,
and commits the page's outcome with the new watermark in one state transaction. The next
page is read while the current one is delivered.

Kinds of pass:
- live: from the watermark on; moves the watermark.
- backfill: a bounded `[since, until)` range, resumable; never moves the watermark.
- retry: the rows held as dead letters, read again by id, sent whatever the digests say.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from connector import config, diff, metrics
from connector.errors import ApiUnavailable, ConnectorError, SourceError
from connector.logs import for_stream
from connector.mapping import (
    ContactMapper,
    EventMapper,
    Link,
    MappedContact,
    MappedEvent,
    Rejected,
    as_key,
    event_body,
)
from connector.source import (
    Source,
    comparable_cursor,
    default_lookback,
    lookback_fits,
)
from connector.state import Commit, Held, State, stream_lock
from connector.values import Digest, Position, iso_z, now_utc, short, step_back, to_utc
from connector.wiraya import Result, Wiraya

log = logging.getLogger("connector.sync")

RECHECK_LIMIT = 1000  # held rows looked at again per pass


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


class _Never:
    def is_set(self) -> bool:
        return False


@dataclass
class Context:
    """What a pass needs: the settings and the three things it talks to."""

    settings: config.Settings
    source: Source
    state: State
    api: Wiraya | None  # None: a dry run, nothing is sent
    stop: StopFlag = field(default_factory=_Never)
    on_page: Callable[[str, int], None] | None = None  # (stream, rows) after each page
    # (kind "contact"|"link"|"event", contact id, body) for each payload a dry run would send
    on_send: Callable[[str, str, dict[str, Any]], None] | None = None

    @property
    def dry_run(self) -> bool:
        return self.api is None


@dataclass
class Report:
    """The outcome of one pass, for the CLI, the daemon and the run history."""

    stream: str
    kind: str
    counts: Counter[str] = field(default_factory=Counter)
    outcome: str = "ok"
    error: str | None = None
    exit_code: int = 0
    seconds: float = 0.0
    watermark: Position | None = None

    def line(self) -> str:
        parts = [f"{self.counts[name]} {name}" for name in
                 ("read", "sent", "skipped", "linked", "events", "released", "waiting", "dead")
                 if self.counts[name] or name in ("read", "sent", "skipped")]
        text = f"{self.stream}: {', '.join(parts)} in {self.seconds:.2f}s"
        if self.error:
            text += f"; FAILED: {self.error}"
        return text


# ---------------------------------------------------------------------------
# Entry points


async def run_pass(ctx: Context, name: str, kind: str = "live", *, since: Any = None,
                   until: Any = None, resend: bool = False, restart: bool = False) -> Report:
    """Run one pass of one stream and record it; failures are reported, not raised."""
    report = Report(name, kind)
    stream = ctx.settings.streams[name]
    started = time.monotonic()
    run_id = None if ctx.dry_run else ctx.state.start_run(name, kind)
    slog = for_stream(name)
    try:
        worker = _Pass(ctx, name, stream, report)
        if kind == "live":
            await worker.live()
        elif kind == "backfill":
            await worker.backfill(since, until, resend, restart)
        elif kind == "retry":
            await worker.retry_dead()
        else:
            raise ValueError(kind)
        if ctx.stop.is_set():
            report.outcome = "stopped"
    except ConnectorError as exc:
        report.outcome, report.error, report.exit_code = "failed", str(exc), exc.exit_code
        slog.error("pass failed: %s", exc)
    except Exception as exc:  # a bug: keep the daemon alive, say what happened
        report.outcome, report.error, report.exit_code = "failed", f"{type(exc).__name__}: " \
                                                                   f"{exc}", 1
        slog.exception("pass failed unexpectedly")
    report.seconds = time.monotonic() - started
    metrics.PASSES.labels(name, report.outcome).inc()
    for outcome in ("read", "sent", "skipped", "dead", "waiting"):
        metrics.ROWS.labels(name, outcome).inc(report.counts[outcome])
    if report.watermark is not None and isinstance(report.watermark.cursor, datetime):
        lag = now_utc() - to_utc(report.watermark.cursor, ctx.settings.source.zone)
        metrics.LAG.labels(name).set(max(0.0, lag.total_seconds()))
    if report.outcome == "ok":
        metrics.LAST_SUCCESS.labels(name).set(time.time())
    if run_id is not None:
        ctx.state.finish_run(run_id, report.outcome, dict(report.counts), report.error)
        counts = ctx.state.held_counts()
        metrics.DEAD_LETTERS.labels(name).set(counts.get((name, "dead"), 0))
        metrics.WAITING.labels(name).set(counts.get((name, "waiting"), 0))
    if report.outcome != "failed":  # a failure was logged above, with its cause
        slog.info("%s pass %s: %s", kind, report.outcome, report.line().split(": ", 1)[1])
    return report


# ---------------------------------------------------------------------------
# A pass


class _Pass:
    def __init__(self, ctx: Context, name: str, stream: config.ContactStream | config.EventStream,
                 report: Report) -> None:
        self.ctx = ctx
        self.name = name
        self.stream = stream
        self.report = report
        self.counts = report.counts
        self.is_contacts = isinstance(stream, config.ContactStream)
        section = "contacts" if self.is_contacts else "events"
        self.bound = ctx.source.bind(name, stream, section)
        self.page_size = ctx.settings.page_size(stream)
        zone = ctx.settings.source.zone
        self.zone = zone
        self.lookback = stream.lookback if stream.lookback is not None \
            else default_lookback(self.bound.cursor_kind)
        if not lookback_fits(self.bound.cursor_kind, self.lookback):
            raise SourceError(
                f"{section}.{name}.lookback: the cursor {stream.cursor!r} is "
                f"{self.bound.cursor_kind}; give "
                + ("a number of values (lookback: 1000)" if isinstance(self.lookback, timedelta)
                   else "a duration (lookback: 10m)"))
        # On PostgreSQL a contact stream lets the server digest each row: pages are then
        # read narrow (cursor, id, digest), and only the changed rows in full.
        self.thin = ctx.source.dialect == "postgresql" and isinstance(stream,
                                                                      config.ContactStream)
        self.contacts = ContactMapper(stream, self.bound.names, zone, self.thin) \
            if isinstance(stream, config.ContactStream) else None
        if self.thin and self.contacts is not None:
            self.bound = replace(self.bound, digest_salt=self.contacts.salt)
        self.events = EventMapper(stream, self.bound.names, zone) \
            if isinstance(stream, config.EventStream) else None
        self.cursor_index = self.bound.names.index(stream.cursor)
        self.id_index = self.bound.names.index(stream.id)
        self.log = for_stream(name)
        self.held_now: set[str] = set()  # rows this pass has just held: not re-checked now
        self.lock_wait = True  # False: skip a page whose stream another pass holds

    # -- kinds of pass ----------------------------------------------------------------------

    async def live(self) -> None:
        state = self.ctx.state
        high = state.watermark(self.name)
        floor, cap = self._window(high)
        async for rows in self._pages(floor=floor):
            last = self._position(rows[-1])
            if cap is not None and last.cursor > cap:
                last = Position(cap, None)  # rows may still appear below here: stay
            if high is None or _after(last, high):
                high = last
            await self._step(rows, watermark=high, thin=self.thin)
        self.report.watermark = high
        if self.ctx.stop.is_set():
            return
        await self._unreachable_rows(floor)
        await self._recheck_held()

    async def backfill(self, since: Any, until: Any, resend: bool, restart: bool) -> None:
        state = self.ctx.state
        key = range_key(since, until, resend)
        saved = None if restart else state.backfill(self.name, key)
        after = saved[0] if saved else None
        done_rows = saved[2] if saved else 0
        if saved and saved[1]:
            after, done_rows = None, 0  # that range was finished before: do it again
        if since is not None:
            since = self.ctx.source.coerce(self.bound, since)
        async for rows in self._pages(floor=since, after=after, until=until):
            await self._step(rows, force=resend, thin=self.thin)
            done_rows += len(rows)
            after = self._position(rows[-1])
            if not self.ctx.dry_run:
                state.save_backfill(self.name, key, after, done_rows)
        if not self.ctx.dry_run and not self.ctx.stop.is_set():
            state.save_backfill(self.name, key, after, done_rows, done=True)

    async def retry_dead(self) -> None:
        held = self.ctx.state.held(self.name, state="dead")
        await self._reread(held, force=True)

    # -- reading ------------------------------------------------------------------------

    def _window(self, high: Position | None) -> tuple[Any, Any]:
        """Where a live pass starts reading, and the highest cursor its watermark may take.

        The start is the watermark less the lookback. The cap keeps the watermark from
        passing a point after which rows may still appear: the pass's own start time (a
        later transaction may commit rows at earlier times) and, on PostgreSQL, the start
        of the oldest open transaction (it may commit rows at its start time, any time).
        For an integer cursor the same points are found among checkpoints of the highest
        visible value, since a transaction takes its ids after it starts.
        """
        source, bound, kind = self.ctx.source, self.bound, self.bound.cursor_kind
        oldest = source.oldest_open_transaction()
        now = source.now()
        if kind in {"timestamp", "timestamptz", "date"}:
            moment = min(now, oldest) if oldest is not None else now
            cap = comparable_cursor(kind, source.coerce(bound, moment))
        else:
            cap = self._integer_cap(now, oldest, high)
        floor = None if high is None else step_back(high.cursor, self.lookback)
        if floor is not None and cap is not None and cap < floor:
            if oldest is not None:
                self.log.info("a transaction open since %s holds the read back",
                              oldest.isoformat())
            floor = cap
        return floor, cap

    def _integer_cap(self, now: datetime, oldest: datetime | None,
                     high: Position | None) -> Any:
        state, name = self.ctx.state, self.name
        visible = self.ctx.source.highest_cursor(self.bound)
        if not self.ctx.dry_run and visible is not None:
            state.add_checkpoint(name, now.timestamp(), Position(visible))
        if oldest is None:
            return visible
        before = [Position.from_json(text).cursor for at, text in state.checkpoints(name)
                  if at < oldest.timestamp()]
        if before:
            return before[-1]
        return high.cursor if high is not None else None

    async def _pages(self, floor: Any = None, after: Position | None = None,
                     until: Any = None) -> Any:
        """Keyset pages; the next page is read while the caller handles this one."""
        source, bound, size = self.ctx.source, self.bound, self.page_size

        reader = source.digest_page if self.thin else source.page

        def read(after: Position | None) -> list[Any]:
            return reader(bound, size, after=after, floor=floor, until=until)

        pending: asyncio.Future[list[Any]] | None = asyncio.ensure_future(
            asyncio.to_thread(read, after))
        try:
            while pending is not None:
                rows = await pending
                pending = None
                if not rows:
                    return
                if len(rows) == size and not self.ctx.stop.is_set():
                    pending = asyncio.ensure_future(
                        asyncio.to_thread(read, self._position(rows[-1])))
                yield rows
                if self.ctx.stop.is_set():
                    return
        finally:
            if pending is not None:
                pending.cancel()

    def _position(self, row: Sequence[Any]) -> Position:
        """Where a page's row stands; a thin page's rows start with cursor and id."""
        cursor, id_ = (row[0], row[1]) if self.thin else (row[self.cursor_index],
                                                          row[self.id_index])
        return Position(comparable_cursor(self.bound.cursor_kind, cursor), id_)

    # -- handling a page ------------------------------------------------------------------

    @asynccontextmanager
    async def _lock(self) -> AsyncIterator[bool]:
        """This stream's page lock (shared with a backfill in another process)."""
        if self.ctx.dry_run:
            yield True
            return
        async with stream_lock(self.ctx.state.path, self.name, wait=self.lock_wait) as got:
            yield got

    async def _step(self, rows: Sequence[Sequence[Any]], force: bool = False,
                    watermark: Position | None = None, thin: bool = False) -> None:
        """Handle one page and commit its outcome, holding the stream's lock throughout.

        A thin page (`Source.digest_page`) is first narrowed to the rows that changed,
        which are then read in full.
        """
        async with self._lock() as got:
            if not got:
                return  # another pass has the stream: it will see these rows
            if thin:
                self.counts["read"] += len(rows)
                full = await self._changed_rows(rows, force)
                commit = await self._handle(full, force, count=False)
            else:
                commit = await self._handle(rows, force)
            commit.watermark = watermark
            await self._commit(commit)
        if self.ctx.on_page is not None:
            self.ctx.on_page(self.name, len(rows))

    async def _changed_rows(self, rows: Sequence[Sequence[Any]], force: bool
                            ) -> Sequence[Sequence[Any]]:
        """The full rows of a thin page whose digest is not the one on record."""
        digests: dict[str, int] = {}
        odd: list[str] = []  # ids that are not clean keys: the full path holds them
        for _cursor, raw_id, key, digest in rows:
            if key is None:
                try:
                    key = as_key(raw_id)
                except Rejected:
                    odd.append(str(raw_id))
                    continue
            digests[key] = digest
        state = self.ctx.state
        if force:
            fetch = list(digests)
        else:
            fetch = state.changed_contacts(self.name, digests)
            if self._has_held():
                chosen = set(fetch)
                fetch += [h.row_key for h in state.held(self.name, list(digests))
                          if h.row_key not in chosen]
        self.counts["skipped"] += len(digests) - len(fetch)
        if not fetch and not odd:
            return []
        return await asyncio.to_thread(self.ctx.source.rows_by_id, self.bound, fetch + odd)

    async def _handle(self, rows: Sequence[Sequence[Any]], force: bool = False,
                      count: bool = True) -> Commit:
        if count:
            self.counts["read"] += len(rows)
        if self.contacts is not None:
            return await self._handle_contacts(rows, force)
        return await self._handle_events(rows, force)

    async def _commit(self, commit: Commit) -> None:
        if self.ctx.dry_run:
            return
        self.ctx.state.commit(self.name, commit)
        if commit.held:
            self._held_cache = True
        if self.contacts is not None and commit.contacts:
            # Only now, with the contacts on record, may their waiting events go.
            await self._release_waiting([key for key, _, _ in commit.contacts])

    def _key_rows(self, rows: Sequence[Sequence[Any]], commit: Commit
                  ) -> dict[str, Sequence[Any]]:
        """Rows by key, the last of a repeated id winning; bad ids become dead letters."""
        mapper = self.contacts or self.events
        assert mapper is not None
        by_key: dict[str, Sequence[Any]] = {}
        for row in rows:
            try:
                key = mapper.key(row)
            except Rejected as exc:
                self._dead(commit, _bad_key(row[self.id_index]), f"id: {exc.reason}",
                           cursor=row[self.cursor_index])
                continue
            if key in by_key:
                self.counts["repeated"] += 1
            by_key[key] = row
        return by_key

    def _recall(self, keys: list[str]) -> tuple[dict[str, tuple[Digest | None, bytes]],
                                                  dict[str, Held]]:
        """What the state file knows of these rows: delivered contacts and held rows."""
        state = self.ctx.state
        known = state.known_contacts(self.name, keys) if self.contacts else {}
        held = {h.row_key: h for h in state.held(self.name, keys)} if self._has_held() else {}
        self._held_keys = set(held)
        return known, held

    @staticmethod
    def _memory(known: tuple[Digest | None, bytes] | None,
                held: Held | None) -> diff.Memory | None:
        if known is None and held is None:
            return None
        return diff.Memory(
            input_digest=known[0] if known else None,
            delivered=known[1] if known else None,
            refused=held.payload_digest if held and held.state == "dead" else None,
            refused_retriable=bool(held and held.retriable))

    def _has_held(self) -> bool:
        if not hasattr(self, "_held_cache"):
            counts = self.ctx.state.held_counts()
            self._held_cache = any(stream == self.name for stream, _ in counts)
        return self._held_cache

    async def _handle_contacts(self, rows: Sequence[Sequence[Any]], force: bool) -> Commit:
        assert self.contacts is not None
        mapper = self.contacts
        commit = Commit()
        by_key = self._key_rows(rows, commit)
        keys = list(by_key)
        known, held = self._recall(keys)
        memories: dict[str, diff.Memory | None] = {}
        inputs: dict[str, Digest] = {}
        mapped: dict[str, MappedContact] = {}
        skipped = 0
        input_digest = mapper.input_digest
        for key, row in by_key.items():
            digest = input_digest(row)
            seen = known.get(key)
            # The common case of a re-read, unchanged row, decided without more ado.
            if seen is not None and seen[0] == digest and not force and key not in held:
                skipped += 1
                continue
            memory = memories[key] = self._memory(seen, held.get(key))
            if not diff.must_map(digest, memory, force):
                skipped += 1
                continue
            inputs[key] = digest
            try:
                mapped[key] = mapper.map(row)
            except Rejected as exc:
                self._dead(commit, key, exc.reason, cursor=row[self.cursor_index], digest=digest)

        self.counts["skipped"] += skipped
        send: dict[str, dict[str, Any]] = {}
        digests: dict[str, bytes] = {}
        present: set[str] = set()  # contacts Wiraya has as mapped now
        for key, contact in mapped.items():
            digest = diff.payload_digest(contact.payload)
            digests[key] = digest
            decision = diff.decide(digest, memories.get(key), force)
            if decision == "send":
                send[key] = contact.payload
            elif decision == "same":
                present.add(key)
                self.counts["skipped"] += 1
            else:
                self.counts["skipped"] += 1  # refused before, unchanged since: not resent

        state = self.ctx.state
        wanted = [link.key for contact in mapped.values() for link in contact.links]
        todo_links = diff.links_to_make(wanted, state.known_links(list(mapped)) if wanted
                                        else set())
        current = {(key, flag.event): flag.active for key, contact in mapped.items()
                   for flag in contact.flags}
        emit, record = diff.flag_changes(current, state.known_flags(self.name, list(mapped))
                                         if current else {})

        # Upserts first: a link or an event needs its contact to exist.
        results = await self._send_contacts(send, digests)
        _fail_if_unreachable("contacts", results.values())
        failed_keys: set[str] = set()
        for key, result in results.items():
            if result.ok:
                present.add(key)
                self.counts["sent"] += 1
            else:
                failed_keys.add(key)
                self._dead(commit, key, result.reason, retriable=result.retriable,
                           digest=digests[key])

        link_items = [link for link in todo_links if link[0] in present]
        link_results = await self._send_links(link_items)
        for link, result in zip(link_items, link_results, strict=True):
            if result.ok:
                commit.links.append(link)
                self.counts["linked"] += 1
            else:
                failed_keys.add(link[0])
                self._dead(commit, link[0], result.reason, retriable=result.retriable)

        flag_at = {(key, flag.event): flag.at for key, contact in mapped.items()
                   for flag in contact.flags}
        event_items = [(_FLAG.join((key, event)), key,
                        event_body(event, flag_at[(key, event)] or iso_z(now_utc(), self.zone)))
                       for key, event in emit if key in present]
        event_results = await self._send_events(event_items, lambda keys: Commit(
            flags=[(*_flag(key), True) for key in keys]))
        emitted_ok = {(key, event) for (item_key, key, body) in event_items
                      for event in [body["name"]] if event_results[item_key].ok}
        for item_key, key, _body in event_items:
            result = event_results[item_key]
            if result.ok:
                self.counts["events"] += 1
            else:
                failed_keys.add(key)
                self._dead(commit, key, result.reason, retriable=result.retriable)
        for key, event, active in record:
            if key in present and (not active or (key, event) in emitted_ok):
                commit.flags.append((key, event, active))

        for key in present:
            # A contact whose link or event failed is mapped again next time it is read.
            commit.contacts.append((key, None if key in failed_keys else inputs[key],
                                    digests[key]))
            if key not in failed_keys and key in self._held_keys:
                commit.cleared.append(key)
        return commit

    async def _handle_events(self, rows: Sequence[Sequence[Any]], force: bool) -> Commit:
        assert self.events is not None and isinstance(self.stream, config.EventStream)
        mapper = self.events
        commit = Commit()
        state = self.ctx.state
        by_key = self._key_rows(rows, commit)
        keys = list(by_key)
        sent = state.sent_events(self.name, keys)
        _, held = self._recall(keys)
        mapped: dict[str, MappedEvent] = {}
        for key in keys:
            if key in sent:
                self.counts["skipped"] += 1
                if key in self._held_keys:
                    commit.cleared.append(key)
                continue
            try:
                mapped[key] = mapper.map(by_key[key])
            except Rejected as exc:
                self._dead(commit, key, exc.reason, cursor=by_key[key][self.cursor_index])

        waits_for = self.ctx.settings.contact_streams_for(self.stream)
        ready = state.delivered(waits_for, sorted({e.contact_id for e in mapped.values()})) \
            if waits_for else None
        absent = sorted({e.contact_id for e in mapped.values()} - ready) if ready is not None \
            else []
        why = self._why_absent(absent, waits_for)
        todo: list[tuple[str, str, dict[str, Any]]] = []
        digests: dict[str, bytes] = {}
        for key, event in mapped.items():
            if event.contact_id in why:
                self.counts["waiting"] += 1
                commit.held.append(Held(self.name, key, "waiting", why[event.contact_id],
                                        False, contact_id=event.contact_id))
                continue
            digest = diff.payload_digest(event.body)
            digests[key] = digest
            memory = self._memory(None, held.get(key))
            if diff.decide(digest, memory, force) == "known-bad":
                self.counts["skipped"] += 1
                continue
            todo.append((key, event.contact_id, event.body))

        results = await self._send_events(todo, lambda keys: Commit(ledger=keys))
        _fail_if_unreachable("events", results.values())
        for key, result in results.items():
            if result.ok:
                commit.ledger.append(key)
                self.counts["sent"] += 1
                if key in self._held_keys:
                    commit.cleared.append(key)
            else:
                self._dead(commit, key, result.reason, retriable=result.retriable,
                           digest=digests[key], contact_id=mapped[key].contact_id)
        return commit

    # -- sending (or not, in a dry run) ---------------------------------------------------
    #
    # What Wiraya accepted is written to the state file as each reply comes (not only at
    # the end of the page), so a crash resends at most the requests that were in flight.
    # A contact is first recorded without its input digest: until the page is committed
    # whole, its links and events are not known to be done, so it is mapped again if read.

    def _record_now(self, commit: Commit) -> None:
        if not self.ctx.dry_run:
            self.ctx.state.commit(self.name, commit)

    async def _send_contacts(self, send: dict[str, dict[str, Any]],
                             digests: dict[str, bytes]) -> dict[str, Result]:
        if self.ctx.api is None:
            if self.ctx.on_send is not None:
                for key, body in send.items():
                    self.ctx.on_send("contact", key, body)
            return {key: Result.accepted() for key in send}

        def done(results: dict[str, Result]) -> None:
            self._record_now(Commit(contacts=[(key, None, digests[key])
                                              for key, result in results.items() if result.ok]))

        return await self.ctx.api.upsert_contacts(send, done)

    async def _send_links(self, links: list[tuple[str, str, str]]) -> list[Result]:
        if self.ctx.api is None:
            if self.ctx.on_send is not None:
                for cid, campaign, iteration in links:
                    self.ctx.on_send("link", cid, Link(cid, campaign, iteration or None).body())
            return [Result.accepted() for _ in links]

        def done(results: dict[int, Result]) -> None:
            self._record_now(Commit(links=[links[index] for index, result in results.items()
                                           if result.ok]))

        bodies = [(cid, Link(cid, campaign, iteration or None).body())
                  for cid, campaign, iteration in links]
        return await self.ctx.api.link_contacts(bodies, done)

    async def _send_events(self, events: list[tuple[str, str, dict[str, Any]]],
                           record: Callable[[list[str]], Commit]) -> dict[str, Result]:
        if self.ctx.api is None:
            if self.ctx.on_send is not None:
                for _, contact_id, body in events:
                    self.ctx.on_send("event", contact_id, body)
            return {key: Result.accepted() for key, _, _ in events}

        def done(results: dict[str, Result]) -> None:
            self._record_now(record([key for key, result in results.items() if result.ok]))

        return await self.ctx.api.send_events(events, done)

    # -- holding rows back ----------------------------------------------------------------

    def _dead(self, commit: Commit, key: str, reason: str, *, retriable: bool = False,
              digest: Digest | None = None, cursor: Any = None,
              contact_id: str | None = None) -> None:
        self.counts["dead"] += 1
        self.log.warning("row %s held as a dead letter: %s", short(key, 60), reason)
        self.held_now.add(key)
        commit.held.append(Held(self.name, key, "dead", reason[:500], retriable,
                                contact_id=contact_id,
                                cursor=_cursor_json(cursor), payload_digest=digest))

    def _why_absent(self, contact_ids: list[str], streams: list[str]) -> dict[str, str]:
        """Why each of these contacts is not there yet: not delivered, or a dead letter."""
        why = {cid: f"contact {cid} not yet delivered by {', '.join(streams)}"
               for cid in contact_ids}
        for stream in streams if contact_ids else []:
            for held in self.ctx.state.held(stream, contact_ids, state="dead"):
                why[held.row_key] = (f"contact {held.row_key} is a dead letter in {stream}: "
                                     f"{held.reason}")[:500]
        return why

    async def _release_waiting(self, contact_ids: list[str]) -> None:
        """Send, right after their contact, the events that were waiting for it."""
        if self.ctx.dry_run:
            return
        waiting = self.ctx.state.waiting_for(contact_ids)
        by_stream: dict[str, list[Held]] = {}
        for item in waiting:
            by_stream.setdefault(item.stream, []).append(item)
        for stream, items in by_stream.items():
            if stream not in self.ctx.settings.events:
                continue
            worker = _Pass(self.ctx, stream, self.ctx.settings.events[stream], Report(stream,
                                                                                    "release"))
            worker.lock_wait = False  # a pass of that stream now will send them itself
            await worker._reread(items, force=False)
            self.counts["released"] += worker.counts["sent"]

    async def _recheck_held(self) -> None:
        """Look again at held rows: fixed rows flow, waiting events whose contact arrived go."""
        held = [h for h in self.ctx.state.held(self.name, limit=RECHECK_LIMIT)
                if h.row_key not in self.held_now]
        if not held:
            return
        waiting = [h for h in held if h.state == "waiting"]
        if waiting and isinstance(self.stream, config.EventStream):
            ready = self.ctx.state.delivered(
                self.ctx.settings.contact_streams_for(self.stream),
                sorted({h.contact_id for h in waiting if h.contact_id}))
            waiting = [h for h in waiting if h.contact_id in ready]
        dead = [h for h in held if h.state == "dead"]
        await self._reread(waiting + dead, force=False)
        if not self.ctx.dry_run:
            self.ctx.state.touch_held(self.name, [h.row_key for h in held])

    async def _reread(self, held: list[Held], force: bool) -> None:
        """Read held rows again from the database (the freshest data) and handle them."""
        if not held:
            return
        source, bound = self.ctx.source, self.bound
        by_id = [h.row_key for h in held if not h.row_key.startswith(_NO_ID)]
        rows = await asyncio.to_thread(source.rows_by_id, bound, by_id)
        found: set[str] = set()
        for start in range(0, len(rows), self.page_size):
            page = rows[start:start + self.page_size]
            for row in page:
                with contextlib.suppress(Rejected):
                    found.add(as_key(row[self.id_index]))
            await self._step(page, force=force)
        gone = [key for key in by_id if key not in found]
        without_id = [h for h in held if h.row_key.startswith(_NO_ID)]
        for h in without_id:
            cursor = _cursor_value(h.cursor)
            at_cursor = await asyncio.to_thread(source.rows_at_cursor, bound, cursor) \
                if cursor is not None else []
            if all(row[self.id_index] is not None for row in at_cursor):
                gone.append(h.row_key)
                if at_cursor:
                    await self._step(at_cursor, force=force)
        if gone:
            self.log.info("%d held row(s) no longer exist in the database or now have an id; "
                          "they are no longer held", len(gone))
            async with self._lock() as got:
                if got:
                    await self._commit(Commit(cleared=gone))
            self.counts["resolved"] += len(gone)

    async def _unreachable_rows(self, floor: Any) -> None:
        """Rows with a NULL id or a NULL cursor cannot be read in order: hold them visibly."""
        rows = await asyncio.to_thread(self.ctx.source.rows_without_key, self.bound, floor,
                                       RECHECK_LIMIT)
        if not rows:
            return
        commit = Commit()
        for row in rows:
            row_id, cursor = row[self.id_index], row[self.cursor_index]
            if row_id is None:
                self._dead(commit, _bad_key(None, cursor), f"id column {self.stream.id} is "
                           "NULL; give the row an id", cursor=cursor)
            else:
                self._dead(commit, _key_or_bad(row_id), f"cursor column {self.stream.cursor} "
                           "is NULL; the row cannot be read in order until it has a value")
        async with self._lock() as got:
            if got:
                await self._commit(commit)


def _fail_if_unreachable(what: str, results: Iterable[Result]) -> None:
    """When Wiraya took nothing of a page and every failure may pass, the API is down (or
    broken): fail the pass, leaving the page unread, rather than hold every row of it."""
    outcomes = list(results)
    if outcomes and not any(r.ok for r in outcomes) and all(r.retriable for r in outcomes):
        raise ApiUnavailable(f"Wiraya accepted none of {len(outcomes)} {what} "
                             f"({outcomes[0].reason}); the pass stops here and the next one "
                             "starts from the same place")


_NO_ID = "(no id)"
_FLAG = "\x1f"  # joins a contact id and an event name into one key


def _flag(key: str) -> tuple[str, str]:
    contact_id, _, event = key.partition(_FLAG)
    return contact_id, event


def _bad_key(raw_id: Any, cursor: Any = None) -> str:
    if raw_id is None:
        where = f" at cursor {cursor.isoformat() if hasattr(cursor, 'isoformat') else cursor}" \
            if cursor is not None else ""
        return f"{_NO_ID}{where}"
    return f"(bad id) {short(repr(raw_id), 120)}"


def _key_or_bad(raw_id: Any) -> str:
    try:
        return as_key(raw_id)
    except Rejected:
        return _bad_key(raw_id)


def range_key(since: Any, until: Any, resend: bool) -> str:
    """How a backfill's range is known in the state file, to resume it."""
    return f"{_text(since)}..{_text(until)}" + (" resend" if resend else "")


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _cursor_json(cursor: Any) -> str | None:
    if cursor is None:
        return None
    try:
        return Position(cursor).to_json()
    except TypeError:
        return None


def _cursor_value(text: str | None) -> Any:
    return Position.from_json(text).cursor if text else None


def _after(position: Position, other: Position) -> bool:
    """Whether `position` is past `other` in `(cursor, id)` order (ids only break ties)."""
    if position.cursor != other.cursor:
        return bool(_comparable(position.cursor) > _comparable(other.cursor))
    if position.id is None or other.id is None:
        return position.id is not None
    try:
        return bool(position.id > other.id)
    except TypeError:
        return str(position.id) > str(other.id)


def _comparable(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return to_utc(value, value.tzinfo)
    return value


