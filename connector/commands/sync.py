"""`sync`, `run`, `backfill` and `dead-letters retry`: the commands that run passes."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from connector import logs
from connector.commands import output, setup
from connector.commands.payloads import Shown
from connector.errors import ConfigError

if TYPE_CHECKING:
    from connector.config import Settings
    from connector.sync import Report

# The counts a pass reports, in the order they are told; a dry run tells what it would do.
COUNTS = ("read", "sent", "skipped", "linked", "events", "released", "waiting", "dead")
ALWAYS = ("read", "sent", "skipped")
DRY_WORDS = {"sent": "to send", "linked": "to link", "events": "events to send",
             "released": "to release", "waiting": "would wait", "dead": "would be dead"}


def sync(args: argparse.Namespace) -> int:
    if args.show is not None and not args.dry_run:
        raise ConfigError([("--show", "goes with --dry-run (a real pass sends, it does not "
                                      "show); add --dry-run")], "arguments")
    if args.redact and args.show is None:
        raise ConfigError([("--redact", "goes with --show N; add --show 10")], "arguments")
    from connector import session
    from connector.sync import Reconcile

    loaded = _settings(args)
    names = session.pick_streams(loaded, args.streams)
    shown = Shown(args.show, args.redact) if args.show is not None else None

    async def go() -> list[Report]:
        async with session.opened(loaded, dry_run=args.dry_run,
                                  stop=session.stop_on_signals(), one_shot=True) as ctx:
            ctx.on_send = shown
            return await session.run_streams(ctx, names,
                                             Reconcile() if args.reconcile else None)

    reports = asyncio.run(go())
    if args.json:
        output.as_json(summary(reports, args.dry_run, shown))
    else:
        _print(reports, args.dry_run, shown)
    return max((report.exit_code for report in reports), default=0)


def _settings(args: argparse.Namespace) -> Settings:
    loaded = setup.settings(args, quiet=True)
    # A dry run opens no API client, which would register the key: mask it here too.
    logs.register_secret(loaded.wiraya.api_key.get_secret_value())
    return loaded


def _print(reports: list[Report], dry_run: bool, shown: Shown | None) -> None:
    if shown is not None:
        for payload in shown.items:
            output.line(payload.line())
        output.line(f"({len(shown.items)} of {shown.total} payload(s) shown)")
    for report in reports:
        output.line(line(report, dry_run))
    if dry_run:
        output.line("dry run: nothing was sent, no state was changed")


def line(report: Report, dry_run: bool) -> str:
    """`customers: 30 read, 30 sent, 0 skipped in 0.05s`; a dry run says `30 to send`."""
    if not dry_run:
        return report.line()
    parts = [f"{report.counts[name]} {DRY_WORDS.get(name, name)}" for name in COUNTS
             if report.counts[name] or name in ALWAYS]
    text = f"{report.stream}: {', '.join(parts)} in {report.seconds:.2f}s"
    return text + (f"; FAILED: {report.error}" if report.error else "")


def summary(reports: list[Report], dry_run: bool, shown: Shown | None) -> dict[str, Any]:
    """`sync --json`: one object, counts as numbers, each stream's outcome and error."""
    outcomes = {report.outcome for report in reports}
    overall = next((o for o in ("failed", "stopped") if o in outcomes), "ok")
    words = DRY_WORDS if dry_run else {}
    streams = {}
    for report in reports:
        counts = report.counts.as_dict()
        names = [*COUNTS, *(name for name in counts if name not in COUNTS)]
        streams[report.stream] = {
            "outcome": report.outcome, "error": report.error,
            "seconds": round(report.seconds, 3),
            "counts": {words.get(name, name).replace(" ", "_"): counts[name]
                       for name in names}}
    document: dict[str, Any] = {
        "dry_run": dry_run, "outcome": overall,
        "exit_code": max((report.exit_code for report in reports), default=0),
        "streams": streams}
    if shown is not None:
        document["payloads"] = {"total": shown.total,
                                "shown": [payload.as_dict() for payload in shown.items]}
    return document


def run(args: argparse.Namespace) -> int:
    from connector import daemon

    return daemon.run(setup.settings(args))


def backfill(args: argparse.Namespace) -> int:
    from connector import daemon

    loaded = setup.settings(args, quiet=True)
    return daemon.backfill(loaded, args.stream, cursor_arg(args.since, "--since"),
                           cursor_arg(args.until, "--until"), resend=args.resend,
                           restart=args.restart, console=output.rich_console(stderr=True))


def cursor_arg(text: str | None, flag: str) -> Any:
    """A --since/--until value: an integer, a date, or a timestamp (UTC when no zone)."""
    if text is None:
        return None
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError([(flag, f"{text!r} is not an integer, a date (2026-01-31) or a "
                                  "timestamp (2026-01-31T12:00:00Z)")], "arguments") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def dead_retry(args: argparse.Namespace) -> int:
    from connector import session
    from connector.sync import Retry

    loaded = setup.settings(args, quiet=True)
    names = session.pick_streams(loaded, [args.stream] if args.stream else [])

    async def go() -> list[Report]:
        async with session.opened(loaded, stop=session.stop_on_signals(),
                                  one_shot=True) as ctx:
            return await session.run_streams(ctx, names, Retry())

    reports = asyncio.run(go())
    for item in reports:
        if item.counts["read"] or item.counts["resolved"] or item.error:
            output.line(item.line() + (f", {item.counts['resolved']} resolved"
                                       if item.counts["resolved"] else ""))
    if not any(item.counts["read"] or item.counts["resolved"] for item in reports):
        output.line("no dead letters to retry")
    return max((item.exit_code for item in reports), default=0)
