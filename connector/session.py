"""Opening what a pass needs (database, state file, API client) and running passes in order.

Shared by the one-shot commands, the daemon and the demo, so they all run passes the same way.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from connector import config, heap, logs
from connector.errors import ConfigError
from connector.source import Source
from connector.state import State
from connector.sync import Context, How, Report, StopFlag, run_pass
from connector.wiraya import Wiraya


@asynccontextmanager
async def opened(settings: config.Settings, dry_run: bool = False,
                 stop: StopFlag | None = None, one_shot: bool = False
                 ) -> AsyncIterator[Context]:
    """A pass context; everything opened here is closed on the way out. `one_shot`: the
    caller runs one pass per stream and ends (`connector sync`), so passes take no probe."""
    for secret in settings.source.secrets:
        logs.register_secret(secret)
    source = Source(settings.source)
    try:
        # A dry run never creates nor writes the state file.
        state = State.for_dry_run(settings.state) if dry_run else State.open(settings.state)
        try:
            api = None if dry_run else Wiraya(settings.wiraya)
            try:
                ctx = Context(settings, source, state, api)
                if stop is not None:
                    ctx.stop = stop
                if one_shot:
                    ctx.probes = None
                heap.release()  # what passes need is loaded: collect again from here
                yield ctx
            finally:
                if api is not None:
                    await api.close()
        finally:
            state.close()
    finally:
        source.close()


def pick_streams(settings: config.Settings, names: Sequence[str]) -> list[str]:
    """The streams to run, contacts before events (an event waits for its contact)."""
    unknown = [name for name in names if name not in settings.streams]
    if unknown:
        known = ", ".join(settings.streams)
        raise ConfigError([(name, f"no such stream (known: {known})") for name in unknown],
                          "streams")
    wanted = set(names) if names else set(settings.streams)
    return [name for name in [*settings.contacts, *settings.events] if name in wanted]


async def run_streams(ctx: Context, names: Sequence[str], how: How | None = None
                      ) -> list[Report]:
    reports = []
    for name in names:
        if ctx.stop.is_set():
            break
        reports.append(await run_pass(ctx, name, how))
    return reports


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: passes stop after the current page, state committed.

    Call from inside the running event loop.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    return stop
