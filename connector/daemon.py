"""The long-running daemon, and the backfill command.

`run`: one APScheduler job per stream at its `every` interval, all on one event loop and
one API client (so the rate limit and a `Retry-After` hold cover every stream). A stream
never runs twice at once, and overdue runs coalesce into one. A failing stream (database
down, API down) is logged and tried again at its next run; the others go on. SIGTERM and
SIGINT stop the daemon after the current page, with state committed, and exit 0.

`backfill`: a bounded range of one stream with a progress bar; resumable; never moves the
live watermark; may run beside the daemon (they take turns page by page).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from connector import config, metrics, session
from connector.errors import ConnectorError
from connector.state import DaemonLock
from connector.sync import Backfill, Context, Report, range_key, run_pass

log = logging.getLogger("connector.daemon")


class Health:
    """What `/healthz` tells: up or stopping, and each stream's last pass."""

    def __init__(self, streams: list[str]) -> None:
        self.started = time.time()
        self.stopping = False
        self.last: dict[str, dict[str, Any]] = {name: {"outcome": "pending"} for name in streams}
        self._lock = threading.Lock()

    def record(self, report: Report) -> None:
        with self._lock:
            self.last[report.stream] = {
                "outcome": report.outcome, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "read": report.counts["read"], "sent": report.counts["sent"],
                "error": report.error}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"status": "stopping" if self.stopping else "ok",
                    "uptime_seconds": round(time.time() - self.started),
                    "streams": dict(self.last)}


def _serve_endpoint(address: tuple[str, int], health: Health) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, kind, status = generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST, 200
            elif self.path == "/healthz":
                snapshot = health.snapshot()
                body = json.dumps(snapshot).encode()
                kind, status = "application/json", 200 if snapshot["status"] == "ok" else 503
            else:
                body, kind, status = b"not found\n", "text/plain", 404
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(address, Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


def run(settings: config.Settings) -> int:
    """Run until SIGTERM or SIGINT; returns the exit code."""
    lock = DaemonLock(settings.state).acquire()
    try:
        return asyncio.run(_daemon(settings))
    finally:
        lock.release()


async def _daemon(settings: config.Settings) -> int:
    loop = asyncio.get_running_loop()
    stop = session.stop_on_signals()
    names = session.pick_streams(settings, [])
    health = Health(names)
    endpoint = None
    if settings.metrics is not None:
        endpoint = _serve_endpoint(settings.metrics.address, health)
        log.info("health and metrics on http://%s:%d (/healthz, /metrics)",
                 *settings.metrics.address)
    running: set[asyncio.Task[Any]] = set()

    async with session.opened(settings, stop=stop) as ctx:
        async def job(name: str) -> None:
            task = asyncio.current_task()
            assert task is not None
            running.add(task)
            try:
                health.record(await run_pass(ctx, name))
            finally:
                running.discard(task)

        scheduler = AsyncIOScheduler(event_loop=loop)
        # A skipped run (the stream is still busy) is normal here, not worth a warning.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        now = datetime.now(UTC)
        for name in names:
            stream = settings.streams[name]
            # Event streams start a moment after the contacts, whose events wait for them.
            first = now if name in settings.contacts else now + timedelta(seconds=1)
            scheduler.add_job(job, "interval", args=[name], id=name, name=name,
                              seconds=stream.every.total_seconds(), next_run_time=first,
                              max_instances=1, coalesce=True, misfire_grace_time=None)
        scheduler.start()
        log.info("daemon started: %s", ", ".join(
            f"{name} every {settings.streams[name].every.total_seconds():g}s" for name in names))
        await stop.wait()
        health.stopping = True
        log.info("stopping: finishing the current page of %d running pass(es)", len(running))
        scheduler.shutdown(wait=False)
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    if endpoint is not None:
        endpoint.shutdown()
        endpoint.server_close()
    log.info("daemon stopped")
    return 0


def backfill(settings: config.Settings, stream: str, since: Any, until: Any, *, resend: bool,
             restart: bool, console: Console) -> int:
    """Read `[since, until)` of one stream (all of it by default), with a progress bar."""
    session.pick_streams(settings, [stream])  # an unknown name is a clear error

    async def go() -> Report:
        async with session.opened(settings, stop=session.stop_on_signals()) as ctx:
            total = await _range_size(ctx, stream, since, until)
            saved = None if restart else ctx.state.backfill(stream, range_key(since, until,
                                                                              resend))
            already = saved[2] if saved and not saved[1] else 0
            columns = [TextColumn(f"backfill {stream}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("rows"), TextColumn("{task.fields[rate]}"),
                       TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn()]
            with Progress(*columns, console=console, transient=False) as progress:
                task = progress.add_task("rows", total=total, completed=already, rate="")
                started = time.monotonic()
                done = 0

                def on_page(name: str, rows: int) -> None:
                    nonlocal done
                    if name != stream:
                        return
                    done += rows
                    rate = done / max(time.monotonic() - started, 1e-6)
                    progress.update(task, advance=rows, rate=f"{rate:,.0f}/s")

                ctx.on_page = on_page
                return await run_pass(ctx, stream, Backfill(since, until, resend, restart))

    report = asyncio.run(go())
    console.print(report.line() + ("" if report.outcome != "stopped"
                                   else "; stopped, run the same command to resume"),
                  markup=False)
    return report.exit_code


async def _range_size(ctx: Context, stream: str, since: Any, until: Any) -> int:
    section = "contacts" if stream in ctx.settings.contacts else "events"
    try:
        bound = ctx.source.bind(stream, ctx.settings.streams[stream], section)
        return await asyncio.to_thread(ctx.source.count, bound,
                                       ctx.source.coerce(bound, since) if since else None,
                                       ctx.source.coerce(bound, until) if until else None)
    except ConnectorError:
        return 0  # the pass itself will report the problem
