"""`state reset STREAM`: forget what the connector knows of one stream, after saying what
goes and what stays, and after a yes.

The event ledger stays unless asked: forgetting it sends every event of the stream again,
and Wiraya counts a resent event as a second one. Contacts are safe to send again (an
upsert replaces), so their digests go.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from connector.commands import output, setup
from connector.commands.status import position_json, watermark_text
from connector.errors import ConfigError, StateError, StateLockedError
from connector.state import DaemonLock, State, stream_lock


def reset(args: argparse.Namespace) -> int:
    loaded = setup.settings(args, quiet=True)
    name = args.stream
    if not loaded.state.exists():
        output.line(f"nothing to reset: no state file at {loaded.state}")
        return 0
    with State.open(loaded.state, create=False) as state:
        footprint = state.stream_footprint(name)
        if name not in loaded.streams and not any(footprint.values()):
            raise ConfigError([(name, "no such stream in the config or the state file "
                                      f"(known: {', '.join(loaded.streams)})")], "streams")
        lock = _daemon_lock(loaded.state)
        try:
            watermark = watermark_text(position_json(state.watermark(name)))
            for text in plan(name, footprint, watermark, name in loaded.events,
                             args.resend_events):
                output.line(text)
            if not args.yes and not _confirmed(f"reset {name}? [y/N] "):
                output.line("nothing was reset")
                return 1
            asyncio.run(_reset(state, name, args.resend_events))
        finally:
            lock.release()
    output.line(f"{name}: reset; its next pass reads the table from the start")
    return 0


def plan(name: str, footprint: dict[str, int], watermark: str | None, is_events: bool,
         resend_events: bool) -> list[str]:
    """What a reset forgets and keeps, in words, with the counts of the state file."""
    events = f"{footprint['events']} sent event(s) in the ledger"
    forgets = [f"the watermark {watermark}" if watermark else "no watermark (none yet)"]
    forgets.append(f"{footprint['waiting']} waiting event(s)" if is_events
                   else f"{footprint['digests']} contact digest(s)")
    forgets += [f"{footprint['dead']} dead letter(s)", f"{footprint['backfills']} backfill "
                                                       "range(s)"]
    keeps = ["campaign links", f"{footprint['runs']} run(s) of history"]
    if resend_events:
        forgets.append(events)
    else:
        keeps.insert(0, f"{events} (--resend-events forgets them)")
    if is_events:
        then = "sends every event again" if resend_events else \
            "sends none of the events already sent"
    else:
        then = "sends every contact again" + (", and every event again" if resend_events
                                              else "")
    return [f"forgets: {', '.join(forgets)}",
            f"keeps:   {', '.join(keeps)}",
            f"then:    the next pass of {name} reads the table from the start and {then}"]


def _daemon_lock(path: Path) -> DaemonLock:
    lock = DaemonLock(path)
    try:
        return lock.acquire()
    except StateLockedError:
        pid = lock.path.read_text().strip() or "unknown"
        raise StateError(f"a connector daemon (pid {pid}) uses {path}; stop it, then reset "
                         "the stream") from None


def _confirmed(question: str) -> bool:
    try:
        answer = input(question)
    except EOFError:
        output.line("")
        return False
    return answer.strip().lower() in {"y", "yes"}


async def _reset(state: State, name: str, forget_events: bool) -> None:
    """Reset while holding the stream's page lock, so no pass commits a page halfway."""
    async with stream_lock(state.path, name):
        state.reset_stream(name, forget_events=forget_events)
