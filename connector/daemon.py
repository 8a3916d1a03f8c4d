"""`connector run`: the long-running daemon.

One APScheduler job per stream at its `every` interval, all on one event loop and one API
client (so the rate limit and a `Retry-After` hold cover every stream). A stream never runs
twice at once, and overdue runs coalesce into one: a pass longer than `every` (which may be
under a second, `250ms`) makes the scheduler skip the ticks it covers, and the next pass
starts at the first tick after it ends. A failing stream (database down, API
down) is logged in one line and tried again at its next run; the others go on.

Stopping (SIGTERM, SIGINT): no new pass starts; each running pass finishes the page it has
in flight (sent and recorded, so a restart resends nothing) and stops, recorded as
"stopped". The wait is bounded by `daemon.stop_timeout` (default 30 s) or a second signal;
past it the passes are cut short, the log says which, and their runs are recorded as
"stopped". The exit code is 0 either way; 1 when the state file was lost for good; 2 when
the state folder cannot be used.

Before each pass the state file is checked (see `statefile`): deleted or replaced, it is put
back from the open file; not writable (a full disk), the pass is skipped with one line.
Health, readiness and metrics: see `health`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from connector import config, metrics, recorder, session
from connector.backfill import backfill
from connector.errors import ConnectorError
from connector.health import Endpoint, Health, PassOutcome
from connector.logs import for_stream
from connector.state import DaemonLock
from connector.statefile import StateWatch, folder_error
from connector.sync import Context, Reconcile, run_pass

__all__ = ["backfill", "run"]

log = logging.getLogger("connector.daemon")


def run(settings: config.Settings) -> int:
    """Run until SIGTERM or SIGINT; returns the exit code."""
    try:
        lock = DaemonLock(settings.state).acquire()
    except OSError as exc:  # a read-only or foreign folder: one line, not a traceback
        raise folder_error(settings.state, exc) from None
    recorder.start()  # the passes and the client record metrics for the endpoint
    daemon = _Daemon(settings, lock)
    try:
        return asyncio.run(daemon.main())
    finally:
        daemon.lock.release()  # the lock may have been taken again (see _keep_lock)


def _max_hold(settings: config.Settings) -> float:
    """`wiraya.max_hold` in seconds: a longer hold makes the daemon not ready."""
    return settings.wiraya.max_hold.total_seconds()


class _Daemon:
    def __init__(self, settings: config.Settings, lock: DaemonLock) -> None:
        self.settings = settings
        self.lock = lock
        self.names = session.pick_streams(settings, [])
        self.health = Health(self.names, settings.daemon.unready_after_failures,
                             _max_hold(settings))
        self.stop = asyncio.Event()
        self.hurry = asyncio.Event()  # a second signal: do not wait for the pages in flight
        self.running: dict[str, asyncio.Task[None]] = {}
        self.exit_code = 0

    async def main(self) -> int:
        self._on_signals()
        endpoint = None
        if self.settings.metrics is not None:
            endpoint = Endpoint(self.settings.metrics.address, self.health)
            log.info("health and metrics on http://%s:%d (/livez, /readyz, /metrics)",
                     *self.settings.metrics.address)
        try:
            async with session.opened(self.settings, stop=self.stop) as ctx:
                await self._serve(ctx)
        finally:
            if endpoint is not None:
                endpoint.close()
        log.info("daemon stopped")
        return self.exit_code

    def _on_signals(self) -> None:
        def signalled() -> None:
            if self.stop.is_set():
                log.warning("second signal: cutting the running passes short now")
                self.hurry.set()
            self.stop.set()

        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, signalled)

    async def _serve(self, ctx: Context) -> None:
        self.ctx = ctx
        self.watch = StateWatch(ctx.state)
        last = ctx.state.runs(limit=1)
        self.first_run = last[0].id if last else 0
        if ctx.api is not None:
            self.health.hold = ctx.api.hold_remaining
        scheduler = self._schedule()
        beat = asyncio.create_task(self._heartbeat())
        try:
            await self.stop.wait()
            self.health.stopping = True
            scheduler.pause()
            await self._finish_running()
        finally:
            scheduler.shutdown(wait=False)
            beat.cancel()

    def _schedule(self) -> AsyncIOScheduler:
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        # A skipped run (the stream is still busy) is normal here, not worth a warning.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        now = datetime.now(UTC)
        streams = self.settings.streams
        for name in self.names:
            # Event streams start a moment after the contacts, whose events wait for them.
            first = now if name in self.settings.contacts else now + timedelta(seconds=1)
            scheduler.add_job(self._job, "interval", args=[name], id=name, name=name,
                              seconds=streams[name].every.total_seconds(),
                              next_run_time=first, max_instances=1, coalesce=True,
                              misfire_grace_time=None)
            reconcile = getattr(streams[name], "reconcile", None)
            if reconcile is not None:  # a whole-table comparison, first after one interval
                scheduler.add_job(self._job, "interval", args=[name, True],
                                  id=f"{name} reconcile", name=f"{name} reconcile",
                                  seconds=reconcile.total_seconds(), max_instances=1,
                                  coalesce=True, misfire_grace_time=None)
        scheduler.start()
        log.info("daemon started: %s", ", ".join(
            f"{name} every {streams[name].every.total_seconds():g}s" for name in self.names))
        return scheduler

    async def _heartbeat(self) -> None:
        while True:
            self.health.beat()
            await asyncio.sleep(1.0)

    async def _job(self, name: str, reconcile: bool = False) -> None:
        """The scheduler's job. The pass runs in a task of its own, shielded: the scheduler
        and the loop's teardown must never cancel a page whose events are on the wire."""
        key = f"{name} (reconcile)" if reconcile else name
        if self.stop.is_set() or key in self.running:
            return
        task = asyncio.create_task(self._pass(name, reconcile), name=f"pass {key}")
        self.running[key] = task
        task.add_done_callback(lambda _done: self.running.pop(key, None))
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)

    async def _pass(self, name: str, reconcile: bool = False) -> None:
        slog = for_stream(name)
        problem = self.watch.check() or self._keep_lock()
        if problem is not None:  # the state is lost for good: stop before anything is sent
            self.health.state_problem = problem
            self.exit_code = 1
            self.stop.set()
            return
        problem = self.watch.probe()
        self.health.state_problem = problem
        if problem is not None:
            slog.error("pass skipped: %s", problem)
            self.health.record(name, PassOutcome("failed", problem))
            return
        try:
            report = await run_pass(self.ctx, name, Reconcile() if reconcile else None)
        except (ConnectorError, sqlite3.Error) as exc:  # the run history could not be written
            slog.error("pass failed: %s", exc)
            self.health.record(name, PassOutcome("failed", str(exc)))
            return
        metrics.PASS_DURATION.labels(name).observe(report.seconds)
        self.health.record(name, PassOutcome(
            report.outcome, report.error, fatal=report.exit_code == 2,
            read=report.counts["read"], sent=report.counts["sent"]))

    def _keep_lock(self) -> str | None:
        """Take the daemon lock again if its file went with a deleted state folder, so that
        a second daemon is still refused."""
        if self.lock.path.exists():
            return None
        self.lock.release()
        try:
            self.lock = DaemonLock(self.settings.state).acquire()
        except (ConnectorError, OSError) as exc:
            problem = f"the daemon lock {self.lock.path} was deleted and cannot be taken " \
                      f"again ({exc}); stopping"
            log.error(problem)
            return problem
        log.warning("the daemon lock %s was deleted; taken again", self.lock.path)
        return None

    async def _finish_running(self) -> None:
        """Let the running passes finish their page, within `daemon.stop_timeout`."""
        tasks = dict(self.running)
        if not tasks:
            return
        timeout = self.settings.daemon.stop_timeout.total_seconds()
        log.info("stopping: finishing the page in flight of %s (at most %gs: "
                 "daemon.stop_timeout; a second signal stops at once)", ", ".join(tasks), timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        hurry = asyncio.create_task(self.hurry.wait())
        pending = set(tasks.values())
        while pending and not self.hurry.is_set() and loop.time() < deadline:
            await asyncio.wait([*pending, hurry], timeout=deadline - loop.time(),
                               return_when=asyncio.FIRST_COMPLETED)
            pending = {task for task in pending if not task.done()}
        hurry.cancel()
        cut = [name for name, task in tasks.items() if not task.done()]
        if not cut:
            return
        for name in cut:
            tasks[name].cancel()
        await asyncio.gather(*(tasks[name] for name in cut), return_exceptions=True)
        note = "cut short at stop: the page in flight was not recorded"
        with contextlib.suppress(ConnectorError, sqlite3.Error):
            self.ctx.state.finish_unfinished_runs([key.split(" (")[0] for key in cut],
                                                  self.first_run, "stopped", note)
        log.warning("stopped before the pass of %s finished its page (daemon.stop_timeout "
                    "%gs): what that page sent before it was recorded may be sent again at "
                    "the next start", ", ".join(cut), timeout)
