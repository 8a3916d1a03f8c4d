"""Writing to the terminal without rich: plain lines, one JSON object, aligned tables.

Every text that may hold a value from the config or the database goes through `mask`, so a
secret that slipped into an error message is shown as `***`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from connector.logs import mask, mask_all

_COLORS = {"green": "32", "yellow": "33", "red": "31"}


def line(text: str = "") -> None:
    print(mask(text), file=sys.stdout, flush=True)


def error(text: str) -> None:
    print(mask(text), file=sys.stderr)


def as_json(document: dict[str, Any] | list[dict[str, Any]]) -> None:
    """One JSON document on one line (an object; a list of rows for listings); secrets
    masked inside every string."""
    print(json.dumps(mask_all(document), ensure_ascii=False), file=sys.stdout)


def paint(text: str, color: str) -> str:
    """`text` in a color when stdout is a terminal that wants colors (NO_COLOR unset)."""
    if os.environ.get("NO_COLOR") or not sys.stdout.isatty():
        return text
    return f"\x1b[{_COLORS[color]}m{text}\x1b[0m"


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]],
          right: frozenset[str] = frozenset()) -> None:
    """Columns two spaces apart; the `right` ones (counts) aligned right; None shows '-'."""
    cells = [[str(column) for column in columns]]
    cells += [["-" if value is None else str(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for row in cells:
        parts = [value.rjust(width) if column in right else value.ljust(width)
                 for value, width, column in zip(row, widths, columns, strict=True)]
        line("  ".join(parts).rstrip())


def rich_console(stderr: bool = False) -> Any:
    """A rich Console (imported only now) for the progress bar and the demo's tables; wide
    enough for them when output goes to a file or a pipe."""
    import shutil

    from rich.console import Console

    width = max(shutil.get_terminal_size((160, 24)).columns, 100)
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)
