"""One pass of one stream: the page loop that wires the stages.

    source (Page) -> window (live: where to read, how far the watermark may move)
                  -> page.StreamPages: plan -> deliver -> state (one transaction per page)
                  -> held rows (recheck, unreachable rows; waiting events released)

A pass reads keyset pages; for each page it plans what changed, sends it, and commits the
page's outcome with the new watermark in one state transaction. The next page is read
while the current one is delivered.

Kinds of pass:
- `Live()`: from the watermark less the lookback on; moves the watermark.
- `Backfill(since, until, resend, restart)`: a bounded `[since, until)` range, resumable;
  never moves the watermark.
- `Retry()`: the rows held as dead letters, read again by id, sent whatever the digests say.
- `Reconcile()`: a full comparison of a contact stream's table (`compare.py`): rows changed
  without their cursor moving, and deleted rows. A `cursor: none` stream's live pass is one.
  On an event stream, a live pass (a deleted event row is history).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from connector import checks, compare, held, probe, recorder, restart
from connector.context import Context, StopFlag
from connector.cursor import Lookback, after, range_key, resolve_lookback
from connector.errors import ConnectorError
from connector.logs import for_stream
from connector.page import StreamPages, read_ahead
from connector.source import Page
from connector.values import Counts, Outcome, PassKind, Position, now_utc, to_utc
from connector.window import Checkpoint, Window, live_window

log = logging.getLogger("connector.sync")

__all__ = ["Backfill", "Context", "How", "Live", "Reconcile", "Report", "Retry", "StopFlag",
           "range_key", "run_pass"]


@dataclass(frozen=True)
class Live:
    kind: ClassVar[PassKind] = "live"


@dataclass(frozen=True)
class Backfill:
    since: Any = None
    until: Any = None
    resend: bool = False  # send every row, whatever the digests say
    restart: bool = False  # start the range again instead of resuming it
    kind: ClassVar[PassKind] = "backfill"


@dataclass(frozen=True)
class Retry:
    kind: ClassVar[PassKind] = "retry"


@dataclass(frozen=True)
class Reconcile:
    kind: PassKind = "reconcile"


How = Live | Backfill | Retry | Reconcile


@dataclass
class Report:
    """The outcome of one pass, for the CLI, the daemon and the run history."""

    stream: str
    kind: PassKind
    counts: Counts = field(default_factory=Counts)
    outcome: Outcome = "ok"
    error: str | None = None
    exit_code: int = 0
    seconds: float = 0.0
    watermark: Position | None = None

    def line(self) -> str:
        parts = [f"{self.counts[name]} {name}" for name in
                 ("read", "sent", "skipped", "linked", "events", "released", "waiting", "dead",
                  "deleted")
                 if self.counts[name] or name in ("read", "sent", "skipped")]
        text = f"{self.stream}: {', '.join(parts)} in {self.seconds:.2f}s"
        if self.error:
            text += f"; FAILED: {self.error}"
        return text


async def run_pass(ctx: Context, name: str, how: How | None = None) -> Report:
    """Run one pass of one stream and record it; failures are reported, not raised."""
    how = how if how is not None else Live()
    report = Report(name, how.kind)
    started = time.monotonic()
    run_id = None if ctx.dry_run else ctx.state.start_run(name, how.kind)
    slog = for_stream(name)
    try:
        pages = StreamPages(ctx, name, report.counts)
        stream = ctx.settings.streams[name]
        if pages.contacts is not None and (isinstance(how, Reconcile) or (
                isinstance(how, Live) and pages.bound.cursor_kind == "none")):
            await compare.whole_table(ctx, pages, reconcile=isinstance(how, Reconcile))
        elif isinstance(how, Live | Reconcile):
            lookback = resolve_lookback(f"{_section(ctx, name)}.{name}", stream.cursor,
                                        pages.bound.cursor_kind, stream.lookback)
            report.watermark = await _live(ctx, pages, lookback)
        elif isinstance(how, Backfill):
            await _backfill(ctx, pages, how)
        else:
            dead = ctx.state.held(name, state="dead")
            report.counts.resolved += await held.reread(ctx, pages, dead, force=True)
        if ctx.stop.is_set():
            report.outcome = "stopped"
    except ConnectorError as exc:
        report.outcome, report.error, report.exit_code = "failed", str(exc), exc.exit_code
        slog.error("pass failed: %s", exc)
    except Exception as exc:  # a bug: keep the daemon alive, say what happened
        report.outcome, report.exit_code = "failed", 1
        report.error = f"{type(exc).__name__}: {exc}"
        slog.exception("pass failed unexpectedly")
    report.seconds = time.monotonic() - started
    _record(ctx, report, run_id)
    if report.outcome != "failed":  # a failure was logged above, with its cause
        # A pass that found nothing to do says so at debug: at `every: 250ms` they are many.
        slog.log(logging.INFO if report.counts != Counts() else logging.DEBUG,
                 "%s pass %s: %s", how.kind, report.outcome, report.line().split(": ", 1)[1])
    return report


def _section(ctx: Context, name: str) -> str:
    return "contacts" if name in ctx.settings.contacts else "events"


def _record(ctx: Context, report: Report, run_id: int | None) -> None:
    """The pass in the metrics and, unless a dry run, in the state file's run history."""
    name = report.stream
    if run_id is not None:
        ctx.state.finish_run(run_id, report.outcome, report.counts, report.error)
    metrics = recorder.live()
    if metrics is None:
        return
    metrics.PASSES.labels(name, report.outcome).inc()
    for outcome in ("read", "sent", "skipped", "dead", "waiting", "deleted"):
        metrics.ROWS.labels(name, outcome).inc(report.counts[outcome])
    if report.watermark is not None and isinstance(report.watermark.cursor, datetime):
        lag = now_utc() - to_utc(report.watermark.cursor, ctx.settings.source.zone)
        metrics.LAG.labels(name).set(max(0.0, lag.total_seconds()))
    if report.outcome == "ok":
        metrics.LAST_SUCCESS.labels(name).set(time.time())
    if run_id is not None:
        counts = ctx.state.held_counts()
        metrics.DEAD_LETTERS.labels(name).set(counts.get((name, "dead"), 0))
        metrics.WAITING.labels(name).set(counts.get((name, "waiting"), 0))


async def _live(ctx: Context, pages: StreamPages, lookback: Lookback) -> Position | None:
    """From the watermark less the lookback on; returns the watermark reached."""
    high = restart.watermark_of_this_table(ctx, pages)
    window = _window(ctx, pages, high, lookback)
    if window.restarted and high is not None:
        restart.from_the_start(ctx, pages, f"the highest {pages.stream.cursor} is now below "
                                           f"the watermark ({high.cursor})")
        high = None
    if window.held_back_by is not None:
        pages.log.info("a transaction open since %s holds the read back",
                       window.held_back_by.isoformat())
    started, seen = time.monotonic(), await probe.look(ctx, pages, high, window.floor,
                                                       lookback)
    if probe.may_skip(ctx, pages, seen, lookback):
        return high  # the window is as the last read left it: nothing to read
    async for page in _pages(ctx, pages, floor=window.floor):
        last = page.last
        if window.cap is not None and last.cursor > window.cap:
            last = Position(window.cap, None)  # rows may still appear below here: stay
        if high is None or after(last, high):
            high = last
        await pages.step(page, watermark=high)
    if ctx.stop.is_set():
        return high
    pages.counts.dead += await held.unreachable(ctx, pages, window.floor)
    pages.counts.resolved += await held.recheck(ctx, pages, pages.stream, pages.held_now)
    probe.remember(ctx, pages, seen, started)
    return high


def _window(ctx: Context, pages: StreamPages, high: Position | None,
            lookback: Lookback) -> Window:
    """What the window needs from the database and the state file, handed to `window`."""
    source, state, kind = ctx.source, ctx.state, pages.bound.cursor_kind
    checks.note_standby(source)  # a standby's guard sees no transaction of the primary
    oldest = source.oldest_open_transaction()
    now = source.now()
    visible: Any = None
    points: list[Checkpoint] = []
    if kind in ("integer", "number"):
        visible = source.highest_cursor(pages.bound)
        if not ctx.dry_run and visible is not None:
            state.add_checkpoint(pages.name, now.timestamp(), Position(visible))
        points = [Checkpoint(at, Position.from_json(text).cursor)
                  for at, text in state.checkpoints(pages.name)]
    return live_window(kind, high, lookback, now=now, oldest=oldest,
                       zone=ctx.settings.source.zone, visible=visible, checkpoints=points)


async def _backfill(ctx: Context, pages: StreamPages, how: Backfill) -> None:
    state, name = ctx.state, pages.name
    key = range_key(how.since, how.until, how.resend)
    saved = None if how.restart else state.backfill(name, key)
    position = saved.position if saved else None
    done_rows = saved.rows if saved else 0
    if saved and saved.done:
        position, done_rows = None, 0  # that range was finished before: do it again
    since = ctx.source.coerce(pages.bound, how.since) if how.since is not None else None
    async for page in _pages(ctx, pages, floor=since, start=position, until=how.until):
        await pages.step(page, force=how.resend)
        done_rows += page.size
        position = page.last
        if not ctx.dry_run:
            state.save_backfill(name, key, position, done_rows)
    if not ctx.dry_run and not ctx.stop.is_set():
        state.save_backfill(name, key, position, done_rows, done=True)


async def _pages(ctx: Context, pages: StreamPages, floor: Any = None,
                 start: Position | None = None, until: Any = None) -> AsyncIterator[Page]:
    """Keyset pages; the next page is read while the caller handles this one."""
    source, bound, size = ctx.source, pages.bound, pages.page_size
    # With no contact of the stream on record (a first sync) every row is new: pages are
    # read whole at once, not narrow and then again by id.
    whole = pages.contacts is not None and not ctx.state.holds_contacts(pages.name)

    def read(position: Position | None) -> Page | None:
        return source.read_page(bound, size, after=position, floor=floor, until=until,
                                whole=whole)

    async for page in read_ahead(ctx.stop, read, size, start):
        yield page
