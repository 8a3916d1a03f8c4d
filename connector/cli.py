"""The `connector` command: the parser and the dispatch; each command lives in
`connector.commands`, imported only when it runs, so `--help` and `status` start fast.

Exit codes: 0 all went well, 1 a pass failed (or a check found a problem), 2 bad config or
bad arguments. Errors are one clear line on stderr; secrets never reach the terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from connector import __version__, heap
from connector.errors import ConfigError, ConnectorError

Handler = Callable[[argparse.Namespace], int]


class _Help(argparse.HelpFormatter):
    """Shows each option's default after its help, unless the help already tells it."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=min(_columns(), 100))

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False
                or default == argparse.SUPPRESS or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


def _columns() -> int:
    try:
        return int(os.environ.get("COLUMNS", "")) or 100
    except ValueError:
        return 100


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # shell completion, when argcomplete is installed
        with contextlib.suppress(ImportError):
            importlib.import_module("argcomplete").autocomplete(parser)
    args = parser.parse_args(argv)
    handler: str | None = getattr(args, "handler", None)
    if handler is None:
        getattr(args, "help_of", parser).print_help(sys.stderr)
        return 2
    try:
        return int(_resolve(handler)(args) or 0)
    except ConfigError as exc:
        _fail(str(exc))
        return exc.exit_code
    except ConnectorError as exc:
        _fail(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The `connector` console script (and `python -m connector`): `main`, then exit; no
    garbage collection while the process starts (heap.py)."""
    heap.hold()
    code = main()
    heap.before_exit()
    sys.exit(code)


def _resolve(handler: str) -> Handler:
    """`module:function` -> the function; its module is imported only now."""
    module, _, name = handler.partition(":")
    function: Handler = getattr(importlib.import_module(module), name)
    return function


def _fail(text: str) -> None:
    from connector.logs import mask

    print(mask(text), file=sys.stderr)


# -- the parser ---------------------------------------------------------------------------

_CMD = "connector.commands"


def _global_options(parser: argparse.ArgumentParser, inherited: bool) -> None:
    """The options every command takes, before or after its name. Under a command their
    default is SUPPRESS, so a value given before the command is not reset by the command."""
    group = parser.add_argument_group("global options")

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if inherited else value

    group.add_argument("-c", "--config", metavar="PATH", default=default(None),
                       help="config file (default: $CONNECTOR_CONFIG, then ./connector.yaml)")
    group.add_argument("--log-format", choices=["text", "json"], default=default(None),
                       help="log line format (default: the config's logging.format)")
    group.add_argument("-v", "--verbose", action="store_true", default=default(False),
                       help="debug logging (default: the config's logging.level; one-shot "
                            "commands log warnings only)")


class _Commands:
    """Adds commands (and actions under a command) with the global options on each."""

    def __init__(self, parser: argparse.ArgumentParser, title: str, metavar: str) -> None:
        self.parser = parser
        self.group = parser.add_subparsers(title=title, metavar=metavar)

    def add(self, name: str, handler: str | None, text: str,
            epilog: str | None = None) -> argparse.ArgumentParser:
        sub = self.group.add_parser(name, help=text, description=text, epilog=epilog,
                                    formatter_class=_Help)
        if handler is None:
            sub.set_defaults(handler=None, help_of=sub)
        else:
            sub.set_defaults(handler=f"{_CMD}.{handler}")
        _global_options(sub, inherited=True)
        return sub


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connector", formatter_class=_Help,
        description="Keep Wiraya up to date from your own database.",
        epilog="Exit codes: 0 all went well, 1 a pass failed or a check found a problem, "
               "2 bad config or arguments. `connector COMMAND --help` tells more.")
    parser.add_argument("--version", action="version", version=f"connector {__version__}",
                        help="print the version and exit")
    _global_options(parser, inherited=False)
    commands = _Commands(parser, "commands", "COMMAND")
    _sync_commands(commands)
    _state_commands(commands)
    _other_commands(commands)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def _sync_commands(commands: _Commands) -> None:
    sync = commands.add(
        "sync", "sync:sync", "run one pass of each stream (or of the named ones) now",
        epilog="A dry run reads and compares, and sends nothing and writes no state; "
               "--show N prints what it would send.")
    sync.add_argument("streams", nargs="*", metavar="STREAM",
                      help="streams to run, contacts before events (default: all)")
    sync.add_argument("--dry-run", action="store_true",
                      help="read and compare, send nothing, change no state")
    sync.add_argument("--show", type=_positive, metavar="N",
                      help="with --dry-run: print up to N payloads it would send")
    sync.add_argument("--redact", action="store_true",
                      help="with --show: mask personal fields (phone number, names...)")
    sync.add_argument("--json", action="store_true",
                      help="print one JSON object instead of lines")
    sync.add_argument("--reconcile", action="store_true",
                      help="compare the whole table of each contact stream now (changes "
                           "that left the cursor alone, deleted rows)")

    commands.add("run", "sync:run", "run as a daemon: every stream on its schedule, until "
                                    "SIGTERM or Ctrl-C")

    backfill = commands.add("backfill", "sync:backfill", "read a stream's history (or a range "
                            "of it) without moving its watermark; resumable")
    backfill.add_argument("stream", metavar="STREAM", help="the stream to read")
    backfill.add_argument("--since", metavar="T",
                          help="first cursor value, inclusive: an integer, 2026-01-31 or "
                               "2026-01-31T12:00:00Z (default: the first row)")
    backfill.add_argument("--until", metavar="T",
                          help="last cursor value, exclusive (default: no end)")
    backfill.add_argument("--resend", action="store_true",
                          help="send every row, even those Wiraya already has as they are")
    backfill.add_argument("--restart", action="store_true",
                          help="start the range from its beginning instead of resuming")

    dead = commands.add("dead-letters", None, "list or retry the rows held back: dead letters "
                                              "and events waiting for their contact")
    actions = _Commands(dead, "actions", "ACTION")
    listing = actions.add("list", "status:dead_list", "list dead letters and waiting events, "
                                                    "with reason, attempts, first and last seen")
    listing.add_argument("--stream", metavar="STREAM", help="only this stream (default: all)")
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    retry = actions.add("retry", "sync:dead_retry", "read the dead letters again from the "
                                                    "database and send them")
    retry.add_argument("--stream", metavar="STREAM", help="only this stream (default: all)")


def _state_commands(commands: _Commands) -> None:
    status = commands.add("status", "status:status",
                          "streams, watermarks, lag, last runs, held rows (reads the state "
                          "file only)")
    status.add_argument("--json", action="store_true",
                        help="print one JSON object (lag in seconds)")

    runs = commands.add("runs", "status:runs", "the run history, newest first (the last "
                                               "500 runs of each stream are kept)")
    runs.add_argument("stream", nargs="?", metavar="STREAM",
                      help="only this stream (default: all)")
    runs.add_argument("--limit", type=_positive, default=20, metavar="N",
                      help="show the N newest runs")
    runs.add_argument("--json", action="store_true", help="print one JSON object")

    state = commands.add("state", None, "repair the state file")
    actions = _Commands(state, "actions", "ACTION")
    reset = actions.add(
        "reset", "reset:reset", "forget what the connector knows of one stream, so its next "
        "pass reads the table from the start",
        epilog="Forgets the watermark, the contact digests (every contact is sent again), "
               "dead letters, waiting events and backfill progress of the stream. Keeps the "
               "events it has sent (the ledger), so none is sent twice, unless "
               "--resend-events; keeps campaign links and the run history. Stop the daemon "
               "first.")
    reset.add_argument("stream", metavar="STREAM", help="the stream to reset")
    reset.add_argument("--resend-events", action="store_true",
                       help="forget the events sent too: every event of the stream is sent "
                            "again")
    reset.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def _other_commands(commands: _Commands) -> None:
    check = commands.add("check", "check:check", "check the config, the database, the tables "
                                                 "and the API login")
    check.add_argument("--json", action="store_true", help="print one JSON object")

    sandbox = commands.add("sandbox", "misc:sandbox",
                           "serve a local fake Wiraya API (for trials and tests)")
    sandbox.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sandbox.add_argument("--port", type=int, default=8900, help="port to listen on")
    sandbox.add_argument("--api-key", default="sandbox-key",
                         help="the API key the sandbox accepts")
    sandbox.add_argument("--latency", type=float, default=0.0, metavar="SECONDS",
                         help="seconds added to each reply")
    sandbox.add_argument("--error-rate", type=float, default=0.0, metavar="SHARE",
                         help="share of calls answered 503, 0 to 1")
    sandbox.add_argument("--drop-rate", type=float, default=0.0, metavar="SHARE",
                         help="share of calls whose connection is dropped, 0 to 1")
    sandbox.add_argument("--rate-limit", type=float, metavar="PER_SECOND",
                         help="requests per second before 429 (default: no limit)")
    sandbox.add_argument("--token-lifetime", type=float, default=300.0, metavar="SECONDS",
                         help="seconds a token stays valid")
    sandbox.add_argument("--bulk-item-limit", type=int, metavar="N",
                         help="items per bulk call before 400 bulkItemLimitExceeded "
                              "(default: no limit)")

    demo = commands.add("demo", "misc:demo",
                        "the whole flow on an embedded database and a local sandbox")
    demo.add_argument("--dir", metavar="DIR",
                      help="keep the demo's files here (default: a temporary folder, removed "
                           "at the end)")

    init = commands.add("init", "misc:init",
                        "look at a database and write a config that check accepts")
    init.add_argument("--url", metavar="URL",
                      help="the database (default: $DATABASE_URL); not written out")
    init.add_argument("-o", "--output", metavar="PATH",
                      help="where to write the config, - for stdout (default: --config, "
                           "else ./connector.yaml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.add_argument("--region", metavar="CC",
                      help="read phone numbers without a country code in this country, e.g. "
                           "SE (default: the sample's most common)")
    init.add_argument("--example", action="store_true",
                      help="print the full example config and exit")


if __name__ == "__main__":
    sys.exit(main())
