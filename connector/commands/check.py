"""`check`: the config, the database, the tables, the state file and the API login."""

from __future__ import annotations

import argparse
import asyncio

from connector.commands import output, setup

_MARKS = {"ok": ("ok  ", "green"), "warn": ("warn", "yellow"), "fail": ("FAIL", "red")}


def check(args: argparse.Namespace) -> int:
    from connector import report

    loaded = setup.settings(args, quiet=True)
    findings = asyncio.run(report.check(loaded))
    failed = sum(1 for level, _ in findings if level == "fail")
    warned = sum(1 for level, _ in findings if level == "warn")
    if args.json:
        output.as_json({"ok": not failed, "problems": failed, "warnings": warned,
                        "findings": [{"level": level, "message": message}
                                     for level, message in findings]})
    else:
        for level, message in findings:
            mark, color = _MARKS[level]
            output.line(f"{output.paint(mark, color)} {message}")
        output.line(f"{failed} problem(s), {warned} warning(s)")
    return 1 if failed else 0
