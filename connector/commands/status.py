"""`status`, `runs` and `dead-letters list`: what the state file tells, nothing else opened
(no database, no API), so they answer at once even when those are down."""

from __future__ import annotations

import argparse
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from connector.commands import output, setup

if TYPE_CHECKING:
    from connector.config import Settings
    from connector.state import State
    from connector.values import Position

_COUNTS = frozenset({"read", "sent", "skipped", "dead", "waiting", "delivered", "attempts",
                     "lag", "id"})


def _open(loaded: Settings) -> State | None:
    from connector.state import State

    if not loaded.state.exists():
        return None
    return State.open(loaded.state, create=False)


# -- status -------------------------------------------------------------------------------


def status(args: argparse.Namespace) -> int:
    loaded = setup.settings(args, quiet=True)
    rows = status_rows(loaded)
    if args.json:
        output.as_json(rows)
        return 0
    output.line(f"state: {loaded.state}" + ("" if loaded.state.exists() else
                                            " (not yet written: no pass has run)"))
    output.table(["stream", "kind", "watermark", "lag", "last run", "outcome", "read", "sent",
                  "skipped", "waiting", "dead"], [_status_cells(row) for row in rows],
                 right=_COUNTS)
    for row in rows:
        error = (row["last_run"] or {}).get("error")
        if error:
            output.line(f"{row['stream']}: last error: {error}")
        if row["deleted"]:
            output.line(f"{row['stream']}: {row['deleted']} contact(s) found deleted from the "
                        "table so far")
    return 0


def _status_cells(row: dict[str, Any]) -> list[Any]:
    last = row["last_run"] or {}
    return [row["stream"], row["kind"], watermark_text(row["watermark"]),
            _lag_text(row["lag_seconds"]), _when(row["last_run"]), last.get("outcome"),
            last.get("read"), last.get("sent"), last.get("skipped"), row["waiting"],
            row["dead"]]


def status_rows(loaded: Settings) -> list[dict[str, Any]]:
    """One entry per configured stream: watermark, lag in seconds, last run, held rows."""
    state = _open(loaded)
    try:
        counts = state.held_counts() if state else {}
        rows = []
        for name in [*loaded.contacts, *loaded.events]:
            kind = "contacts" if name in loaded.contacts else "events"
            watermark = state.watermark(name) if state else None
            runs = state.runs(name, 1) if state else []
            rows.append({
                "stream": name, "kind": kind, "watermark": position_json(watermark),
                "lag_seconds": _lag(watermark, loaded),
                "last_run": runs[0].summary() if runs else None,
                "delivered": state.count("contacts" if kind == "contacts" else "ledger", name)
                if state else 0,
                "waiting": counts.get((name, "waiting"), 0),
                "dead": counts.get((name, "dead"), 0),
                "deleted": state.deleted(name) if state else 0})
        return rows
    finally:
        if state:
            state.close()


def position_json(position: Position | None) -> dict[str, Any] | None:
    if position is None:
        return None
    return {"cursor": _plain(position.cursor), "id": _plain(position.id)}


def _plain(value: Any) -> Any:
    """A cursor or id value as JSON: numbers stay numbers, times become ISO 8601 text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def watermark_text(watermark: dict[str, Any] | None) -> str | None:
    if watermark is None:
        return None
    text = str(watermark["cursor"])
    return text if watermark["id"] is None else f"{text} (id {watermark['id']})"


def _lag(position: Position | None, loaded: Settings) -> int | None:
    """Whole seconds from a time watermark to now; None for other cursors."""
    from connector.values import now_utc, to_utc

    if position is None or not isinstance(position.cursor, datetime):
        return None
    behind = now_utc() - to_utc(position.cursor, loaded.source.zone)
    return max(0, int(behind.total_seconds()))


def _lag_text(seconds: int | None) -> str | None:
    return None if seconds is None else str(timedelta(seconds=seconds))


def _when(run: dict[str, Any] | None) -> str:
    if run is None:
        return "never"
    return str(run.get("finished_at") or run.get("started_at"))


# -- runs ---------------------------------------------------------------------------------


def runs(args: argparse.Namespace) -> int:
    loaded = setup.settings(args, quiet=True)
    setup.known_stream(loaded, args.stream)
    state = _open(loaded)
    try:
        history = [run.summary() for run in state.runs(args.stream, args.limit)] if state else []
    finally:
        if state:
            state.close()
    if args.json:
        output.as_json(history)
        return 0
    if not history:
        output.line("no runs yet")
        return 0
    output.table(["id", "stream", "kind", "started", "finished", "outcome", "read", "sent",
                  "skipped", "dead", "waiting", "error"],
                 [[run[name] for name in ("id", "stream", "kind", "started_at", "finished_at",
                                          "outcome", "read", "sent", "skipped", "dead",
                                          "waiting", "error")] for run in history],
                 right=_COUNTS)
    return 0


# -- dead letters -------------------------------------------------------------------------


def dead_list(args: argparse.Namespace) -> int:
    loaded = setup.settings(args, quiet=True)
    setup.known_stream(loaded, args.stream)
    state = _open(loaded)
    try:
        items = state.all_held() if state else []
    finally:
        if state:
            state.close()
    held = [{"stream": h.stream, "id": h.row_key, "state": h.state, "reason": h.reason,
             "retriable": h.retriable, "attempts": h.attempts, "contact_id": h.contact_id,
             "first_seen": h.first_seen, "last_seen": h.last_seen}
            for h in items if args.stream is None or h.stream == args.stream]
    if args.json:
        output.as_json(held)
        return 0
    if not held:
        output.line("no dead letters and no waiting events")
        return 0
    output.table(["stream", "id", "state", "attempts", "first seen", "last seen", "reason"],
                 [[item[name] for name in ("stream", "id", "state", "attempts", "first_seen",
                                           "last_seen", "reason")] for item in held],
                 right=_COUNTS)
    return 0
