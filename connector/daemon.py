"""The long-running daemon and the backfill command (scheduler wiring comes with issue 5)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from connector import config


def run(settings: config.Settings) -> int:
    raise NotImplementedError("connector run")


def backfill(settings: config.Settings, stream: str, since: Any, until: Any, *, resend: bool,
             restart: bool, console: Console) -> int:
    raise NotImplementedError("connector backfill")
