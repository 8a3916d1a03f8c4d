"""The `connector` command.

Exit codes: 0 all went well, 1 a pass failed (or a check found a problem), 2 bad config.
Errors are one clear line on stderr; secrets never reach the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from connector import __version__, config, logs
from connector.errors import ConfigError, ConnectorError
from connector.logs import mask

# Wide enough for the status table when output goes to a file or a pipe.
_WIDTH = max(shutil.get_terminal_size((160, 24)).columns, 100)
out = Console(highlight=False, soft_wrap=True, width=_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        err.print(mask(str(exc)), markup=False)
        return exc.exit_code
    except ConnectorError as exc:
        err.print(f"error: {mask(str(exc))}", markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connector", description="Keep Wiraya up to date from your own database.")
    parser.add_argument("--version", action="version", version=f"connector {__version__}")
    parser.add_argument("-c", "--config", help="config file (default: $CONNECTOR_CONFIG, "
                                               "then ./connector.yaml)")
    parser.add_argument("--log-format", choices=["text", "json"], help="log line format")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    sync = command("sync", _sync, "run one pass of each stream (or the named ones) now")
    sync.add_argument("streams", nargs="*", metavar="STREAM")
    sync.add_argument("--dry-run", action="store_true",
                      help="read and compare, send nothing, change no state")
    sync.add_argument("--reconcile", action="store_true",
                      help="compare the whole table of each contact stream now (changes "
                           "that left the cursor alone, deleted rows)")

    command("run", _run, "run as a daemon: every stream on its schedule")

    backfill = command("backfill", _backfill,
                       "read a stream's history (or a range of it) without moving its watermark")
    backfill.add_argument("stream", metavar="STREAM")
    backfill.add_argument("--since", help="first cursor value (inclusive), e.g. 2026-01-01")
    backfill.add_argument("--until", help="last cursor value (exclusive)")
    backfill.add_argument("--resend", action="store_true",
                          help="send every row, even those Wiraya already has as they are")
    backfill.add_argument("--restart", action="store_true",
                          help="start the range from its beginning instead of resuming")

    status = command("status", _status, "streams, watermarks, lag, last runs, held rows")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    command("check", _check, "check the config, the database, the tables and the API login")

    dead = command("dead-letters", None, "list or retry the rows held as dead letters")
    dead_commands = dead.add_subparsers(title="actions", metavar="ACTION")
    listing = dead_commands.add_parser("list", help="list dead letters and waiting events")
    listing.set_defaults(handler=_dead_list)
    listing.add_argument("--stream")
    listing.add_argument("--json", action="store_true")
    retry = dead_commands.add_parser("retry", help="read the rows again and send them")
    retry.set_defaults(handler=_dead_retry)
    retry.add_argument("--stream")

    sandbox = command("sandbox", _sandbox, "serve a local fake Wiraya API (for trials and tests)")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8900)
    sandbox.add_argument("--api-key", default="sandbox-key")
    sandbox.add_argument("--latency", type=float, default=0.0, help="seconds added to each reply")
    sandbox.add_argument("--error-rate", type=float, default=0.0, help="share of 503 replies")
    sandbox.add_argument("--drop-rate", type=float, default=0.0,
                         help="share of calls whose connection is dropped")
    sandbox.add_argument("--rate-limit", type=float, default=None,
                         help="requests per second before 429")
    sandbox.add_argument("--token-lifetime", type=float, default=300.0)
    sandbox.add_argument("--bulk-item-limit", type=int, default=None)

    demo = command("demo", _demo, "the whole flow on an embedded database and a local sandbox")
    demo.add_argument("--dir", help="keep the demo's files here (default: a temporary folder)")
    return parser


def _settings(args: argparse.Namespace, quiet: bool = False) -> config.Settings:
    """Load the config and set up logging; one-shot commands log warnings and errors only,
    since their own output already tells what each pass did."""
    settings = config.load(args.config)
    level = "debug" if args.verbose else settings.logging.level
    if quiet and level in {"debug", "info"} and not args.verbose:
        level = "warning"
    logs.setup(args.log_format or settings.logging.format, level)
    return settings


# -- sync ---------------------------------------------------------------------------------


def _sync(args: argparse.Namespace) -> int:
    from connector import session
    from connector.sync import Reconcile

    settings = _settings(args, quiet=True)
    names = session.pick_streams(settings, args.streams)

    async def go() -> list[Any]:
        async with session.opened(settings, dry_run=args.dry_run,
                                  stop=session.stop_on_signals()) as ctx:
            return await session.run_streams(ctx, names, Reconcile() if args.reconcile else None)

    reports = asyncio.run(go())
    verb = "would send" if args.dry_run else "sent"
    for report in reports:
        out.print(report.line().replace(" sent", f" {verb}"), markup=False)
    return max((report.exit_code for report in reports), default=0)


def _run(args: argparse.Namespace) -> int:
    from connector import daemon

    settings = _settings(args)
    return daemon.run(settings)


def _backfill(args: argparse.Namespace) -> int:
    from connector import daemon

    settings = _settings(args, quiet=True)
    return daemon.backfill(settings, args.stream, _cursor_arg(args.since, "--since"),
                           _cursor_arg(args.until, "--until"), resend=args.resend,
                           restart=args.restart, console=err)


def _cursor_arg(text: str | None, flag: str) -> Any:
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


# -- status and dead letters --------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    from connector import report

    settings = _settings(args, quiet=True)
    rows = report.status(settings)
    if args.json:
        out.print_json(json.dumps(rows, default=str))
        return 0
    table = Table(title=f"connector status ({settings.state})", title_justify="left")
    for column in ("stream", "kind", "watermark", "lag", "last run", "outcome", "read", "sent",
                   "skipped", "waiting", "dead"):
        table.add_column(column, justify="right" if column in {
            "read", "sent", "skipped", "waiting", "dead", "lag"} else "left")
    for row in rows:
        last = row["last_run"] or {}
        table.add_row(row["stream"], row["kind"], row["watermark"] or "-", row["lag"] or "-",
                      last.get("finished_at") or last.get("started_at") or "never",
                      last.get("outcome", "-"), str(last.get("read", "-")),
                      str(last.get("sent", "-")), str(last.get("skipped", "-")),
                      str(row["waiting"]), str(row["dead"]))
    out.print(table)
    for row in rows:
        error = (row["last_run"] or {}).get("error")
        if error:
            out.print(f"{row['stream']}: last error: {error}", markup=False)
        if row.get("deleted"):
            out.print(f"{row['stream']}: {row['deleted']} contact(s) found deleted from the "
                      "table so far", markup=False)
    return 0


def _dead_list(args: argparse.Namespace) -> int:
    from connector import report

    settings = _settings(args, quiet=True)
    held = report.held(settings, args.stream)
    if args.json:
        out.print_json(json.dumps(held))
        return 0
    if not held:
        out.print("no dead letters and no waiting events")
        return 0
    table = Table(title_justify="left")
    for column in ("stream", "id", "state", "reason", "attempts", "first seen", "last seen"):
        table.add_column(column, overflow="fold")
    for item in held:
        table.add_row(item["stream"], item["id"], item["state"], item["reason"],
                      str(item["attempts"]), item["first_seen"], item["last_seen"])
    out.print(table)
    return 0


def _dead_retry(args: argparse.Namespace) -> int:
    from connector import session
    from connector.sync import Retry

    settings = _settings(args, quiet=True)
    names = session.pick_streams(settings, [args.stream] if args.stream else [])

    async def go() -> list[Any]:
        async with session.opened(settings, stop=session.stop_on_signals()) as ctx:
            return await session.run_streams(ctx, names, Retry())

    reports = asyncio.run(go())
    for item in reports:
        if item.counts["read"] or item.counts["resolved"] or item.error:
            out.print(item.line() + (f", {item.counts['resolved']} resolved"
                                     if item.counts["resolved"] else ""), markup=False)
    if not any(item.counts["read"] or item.counts["resolved"] for item in reports):
        out.print("no dead letters to retry")
    return max((item.exit_code for item in reports), default=0)


# -- check ----------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    from connector import report

    settings = _settings(args, quiet=True)
    findings = asyncio.run(report.check(settings))
    marks = {"ok": "[green]ok[/]  ", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}
    for level, message in findings:
        out.print(f"{marks[level]} {_escape(message)}")
    failed = sum(1 for level, _ in findings if level == "fail")
    warned = sum(1 for level, _ in findings if level == "warn")
    out.print(f"{failed} problem(s), {warned} warning(s)")
    return 1 if failed else 0


def _escape(text: str) -> str:
    return mask(text).replace("[", "\\[")


# -- sandbox and demo ---------------------------------------------------------------------


def _sandbox(args: argparse.Namespace) -> int:
    from connector.sandbox import Faults, Sandbox

    faults = Faults(latency=args.latency, error_rate=args.error_rate, drop_rate=args.drop_rate,
                    rate_limit=args.rate_limit, token_lifetime=args.token_lifetime,
                    bulk_item_limit=args.bulk_item_limit)
    server = Sandbox(api_keys=[args.api_key], faults=faults, host=args.host, port=args.port)
    try:
        server.start()
    except OSError as exc:
        err.print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}; "
                  "pick another --port", markup=False)
        return 1
    out.print(f"sandbox Wiraya API on {server.url} (API key: {args.api_key}); Ctrl-C stops it",
              markup=False)
    out.print(f"what it received: {server.url}/_sandbox/summary", markup=False)
    try:
        while True:
            import time

            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from connector import demo

    logs.setup("text", "debug" if args.verbose else "error")
    return demo.run(Path(args.dir) if args.dir else None, out)


if __name__ == "__main__":
    sys.exit(main())
