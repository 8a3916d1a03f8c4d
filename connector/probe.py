"""A live pass's probe: did anything change in its window since the last pass read it?

An idle live pass would read its whole window again (the watermark less the lookback, ten
minutes by default), only to find every row as it was. Before reading, it now asks the
database one aggregate over the cursor index (`Source.probe`): how many rows lie in the
window, the highest cursor among them, and the sum of their cursor values as exact numbers.
When these, the window's floor and the watermark are what the last pass of the stream saw
just before it read, no row entered the window, left it or had its cursor moved, and the
pass reads nothing. The figures kept are those taken before the read, so a change that
commits while a pass reads is seen by the next probe.

Seen by the probe: an insert in the window (the count), an update that moves a row's cursor
(the sum; a row from below the floor also the count), a transaction that commits late
anything of these, a delete (the count).

Blind spot, exactly: a change that leaves every cursor value in the window as it was (a row
rewritten without its cursor moving: a cursor of whole seconds or a date written twice with
the same value, or a writer that sets the cursor itself), and changes in one interval whose
counts and cursor sums cancel out (a row deleted and another inserted, or moved, with exactly
the same cursor value). Rows with a NULL id or cursor are outside any keyset read anyway.

The bound: the window is read in full at least every `reread` (a stream's key, 1 minute by
default; `0s` never skips a read), and held rows (dead letters, waiting events) are looked
at again on those reads. A change in the blind spot thus arrives at most `reread` plus one
`every` late, as long as it is still inside the lookback then (`reread` may not exceed
`lookback`). What was seen is kept in the process: a one-shot `connector sync` always reads,
and takes no probe (its figures would die with it).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from connector import config
from connector.context import Context
from connector.cursor import Lookback
from connector.page import StreamPages
from connector.values import Position


@dataclass(frozen=True)
class Look:
    """What a probe saw of a window: where it started and the aggregate over it."""

    watermark: Position | None
    floor: Any
    rows: int
    highest: Any
    total: Any  # the sum of the cursors, as exact numbers relative to the floor


@dataclass(frozen=True)
class Seen:
    look: Look  # taken just before the last full read
    read_at: float  # time.monotonic() of that read


def reread_seconds(stream: config.ContactStream | config.EventStream,
                   lookback: Lookback | None = None) -> float:
    """The stream's `reread`, no longer than its lookback as a duration: the one written, or
    `lookback`, the one the pass uses (a default one too). `lookback: 0s` turns the probe
    off. An integer cursor's lookback is a count of values: nothing bounds `reread` there."""
    reread = stream.reread
    for window in (stream.lookback, lookback):
        if isinstance(window, timedelta):
            reread = min(reread, window)
    return reread.total_seconds()


def unchanged(seen: Seen | None, look: Look, now: float, reread: float) -> bool:
    """Whether a pass may skip its read: the window is as the last full read found it,
    and that read is less than `reread` seconds old. Pure."""
    return seen is not None and now - seen.read_at < reread and seen.look == look


async def look(ctx: Context, pages: StreamPages, watermark: Position | None,
               floor: Any, lookback: Lookback) -> Look | None:
    """The window as the database has it now; None when a pass must read whatever the
    probe says (the first pass, a window from the start, `reread: 0s`, a one-shot pass that
    keeps nothing for a next one)."""
    if ctx.probes is None or floor is None or reread_seconds(pages.stream, lookback) <= 0:
        return None
    rows, highest, total = await asyncio.to_thread(ctx.source.probe, pages.bound, floor)
    return Look(watermark, floor, rows, highest, total)


def may_skip(ctx: Context, pages: StreamPages, seen_now: Look | None,
             lookback: Lookback) -> bool:
    """Whether this pass reads nothing: its window did not change since the last read."""
    if seen_now is None or ctx.probes is None:
        return False
    seen = ctx.probes.get(pages.name)
    return unchanged(seen if isinstance(seen, Seen) else None, seen_now, time.monotonic(),
                     reread_seconds(pages.stream, lookback))


def remember(ctx: Context, pages: StreamPages, seen_now: Look | None, started: float) -> None:
    """After a full read that ended well: what its probe saw, begun at `started`."""
    if ctx.probes is None:
        return
    if seen_now is None:
        ctx.probes.pop(pages.name, None)
    else:
        ctx.probes[pages.name] = Seen(seen_now, started)
