"""`connector backfill`: a bounded range of one stream, with a progress bar.

Resumable; never moves the live watermark; may run beside the daemon (they take turns page by
page, under the stream's lock).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from connector import config, session
from connector.errors import ConnectorError
from connector.sync import Backfill, Context, Report, range_key, run_pass


def backfill(settings: config.Settings, stream: str, since: Any, until: Any, *, resend: bool,
             restart: bool, console: Console) -> int:
    """Read `[since, until)` of one stream (all of it by default), with a progress bar."""
    session.pick_streams(settings, [stream])  # an unknown name is a clear error

    async def go() -> Report:
        async with session.opened(settings, stop=session.stop_on_signals()) as ctx:
            total = await _range_size(ctx, stream, since, until)
            saved = None if restart else ctx.state.backfill(stream, range_key(since, until,
                                                                              resend))
            already = saved.rows if saved and not saved.done else 0
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
