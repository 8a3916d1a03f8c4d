"""What `status`, `dead-letters list` and `check` tell: read from the state file, the
database and the API, returned as plain data for the CLI to print (or dump as JSON)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from connector import checks, config
from connector.cursor import resolve_lookback
from connector.dialects import mysql
from connector.errors import ConnectorError, SourceError, StateError
from connector.source import BoundStream, Source
from connector.state import State
from connector.values import Position, now_utc, to_utc
from connector.wiraya import Wiraya


def _open_state(settings: config.Settings) -> State | None:
    """The state file to read from; reading it never writes it (nor migrates it)."""
    if not settings.state.exists():
        return None
    return State.for_dry_run(settings.state)


def _show(position: Position | None) -> str | None:
    if position is None:
        return None
    cursor = position.cursor
    text = cursor.isoformat() if isinstance(cursor, datetime | date) else str(cursor)
    return text if position.id is None else f"{text} (id {position.id})"


def _lag(position: Position | None, settings: config.Settings) -> str | None:
    if position is None or not isinstance(position.cursor, datetime):
        return None
    behind = now_utc() - to_utc(position.cursor, settings.source.zone)
    seconds = max(0, int(behind.total_seconds()))
    return str(timedelta(seconds=seconds))


def status(settings: config.Settings) -> list[dict[str, Any]]:
    """One entry per configured stream: watermark, lag, last run, held rows."""
    state = _open_state(settings)
    rows = []
    try:
        counts = state.held_counts() if state else {}
        for name in [*settings.contacts, *settings.events]:
            kind = "contacts" if name in settings.contacts else "events"
            watermark = state.watermark(name) if state else None
            runs = state.runs(name, 1) if state else []
            last = runs[0].summary() if runs else None
            delivered = state.count("contacts" if kind == "contacts" else "ledger",
                                    name) if state else 0
            rows.append({
                "stream": name, "kind": kind, "watermark": _show(watermark),
                "lag": _lag(watermark, settings), "last_run": last,
                "delivered": delivered,
                "waiting": counts.get((name, "waiting"), 0),
                "dead": counts.get((name, "dead"), 0),
                "deleted": state.deleted(name) if state else 0,
            })
    finally:
        if state:
            state.close()
    return rows


def held(settings: config.Settings, stream: str | None = None) -> list[dict[str, Any]]:
    state = _open_state(settings)
    if state is None:
        return []
    try:
        items = state.all_held()
    finally:
        state.close()
    return [{"stream": h.stream, "id": h.row_key, "state": h.state, "reason": h.reason,
             "retriable": h.retriable, "attempts": h.attempts, "contact_id": h.contact_id,
             "first_seen": h.first_seen, "last_seen": h.last_seen}
            for h in items if stream is None or h.stream == stream]


async def check(settings: config.Settings) -> list[tuple[str, str]]:
    """Every check `connector check` runs, as `(ok|warn|fail, message)`."""
    findings: list[tuple[str, str]] = [
        ("ok", f"config: {len(settings.contacts)} contact stream(s), "
               f"{len(settings.events)} event stream(s)")]
    source = Source(settings.source)
    try:
        try:
            version = source.ping()
        except SourceError as exc:
            findings.append(("fail", f"database: {exc}"))
        else:
            findings.append(("ok", f"database: {version} at {settings.source.display_url}"))
            findings += _check_streams(settings, source)
            findings += checks.standby(settings, source) or _check_guard(source)
            findings += checks.timezone(settings, source)
    finally:
        source.close()
    try:
        state = State.open(settings.state)
    except StateError as exc:
        findings.append(("fail", f"state: {exc}"))
    else:
        findings.append(("ok", f"state: {settings.state} (schema {state.schema_version})"))
        state.close()
    try:
        async with Wiraya(settings.wiraya) as api:
            await api.login()
        findings.append(("ok", f"Wiraya: logged in at {settings.wiraya.base_url}"))
    except ConnectorError as exc:
        findings.append(("fail", f"Wiraya: {exc}"))
    else:
        findings += await checks.api_access(settings.wiraya)
    return findings


def _check_streams(settings: config.Settings, source: Source) -> list[tuple[str, str]]:
    findings = []
    for name, stream in settings.streams.items():
        section = "contacts" if name in settings.contacts else "events"
        place = f"{section}.{name}"
        try:
            bound = source.bind(name, stream, section)
            is_view = source.is_view(bound)
        except SourceError as exc:
            findings.append(("fail", str(exc)))
            continue
        order = f"cursor {stream.cursor} ({bound.cursor_kind})" if bound.cursor_kind != "none" \
            else "cursor none: each pass compares the whole table"
        findings.append(("ok", f"{place}: {stream.table} ({'view' if is_view else 'table'})"
                               f", id {stream.id}, {order}"))
        try:
            resolve_lookback(place, stream.cursor, bound.cursor_kind, stream.lookback)
        except SourceError as exc:
            findings.append(("fail", str(exc)))
        if is_view:
            findings.append(("warn", f"{place}: {stream.table} is a view; make sure the "
                                     f"table under it has an index on {stream.cursor}"))
        elif not source.cursor_indexed(bound):
            statement = mysql.index_statement(str(stream.table), stream.cursor, stream.id) \
                if source.dialect == "mysql" \
                else f"CREATE INDEX ON {stream.table} ({stream.cursor}, {stream.id})"
            findings.append(("warn", f"{place}: no index starts with {stream.cursor}, so every "
                                     f"pass reads the whole table; add one: {statement}"))
        if bound.cursor_nullable and bound.cursor_kind != "none":
            findings.append(("warn", f"{place}: {stream.cursor} may be NULL; such rows are held "
                                     "as dead letters until they get a value"))
        findings += _check_text_times(place, stream.cursor, source, bound)
    return findings


def _check_guard(source: Source) -> list[tuple[str, str]]:
    if source.dialect == "mysql":
        return [mysql.guard_finding(source.guard_visibility())]
    if source.dialect != "postgresql":
        return []
    visibility = source.guard_visibility()
    if visibility == "all":
        return [("ok", "open-transaction guard: active (the role sees every session)")]
    return [("warn", "open-transaction guard: sees only this role's own sessions; a row "
                     "committed later than the lookback by another role could be missed. "
                     "GRANT pg_read_all_stats TO the connector's role to close that gap")]


def _check_text_times(place: str, column: str, source: Source, bound: BoundStream
                      ) -> list[tuple[str, str]]:
    """Cursor values stored as text that SQLite cannot read as times: what cannot work."""
    unreadable = source.unreadable_times(bound)
    if not unreadable:
        return []
    return [("fail", f"{place}.cursor: {unreadable} row(s) hold a {column} that is not a time "
                     "SQLite can read (ISO 8601: 2026-11-27T10:00:00Z, 2026-11-27 10:00:00, "
                     "with or without an offset); they cannot be read in order and are held "
                     "as dead letters: fix those values")]
