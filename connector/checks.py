"""Checks that `connector check` runs beyond reading the config: what the database is (a
standby, a session time zone) and whether the API key may call the API, not only log in.

Each check returns findings as `(ok|warn|fail, message)`; a check that does not apply (not
PostgreSQL, no naive timestamp read) returns none. The PostgreSQL statements live here for
now; they read only server facts, never a customer table.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from connector import config, logs
from connector.cursor import default_lookback
from connector.errors import SourceError
from connector.source import APPLICATION_NAME, Source, describe

if TYPE_CHECKING:
    from httpx import AsyncClient

Finding = tuple[str, str]

log = logging.getLogger("connector.checks")

TOKEN_PATH = "/auth/token/apikey"  # noqa: S105 - a route, not a secret
PROBE_PATH = "/api/contact/_bulk"


# -- a standby ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recovery:
    """What a PostgreSQL server says about replication: a standby is in recovery."""

    standby: bool
    replay_lag: timedelta | None  # now() - the last replayed commit's time, when known


def recovery(source: Source) -> Recovery | None:
    """Whether the database is a standby (None: not PostgreSQL, or it did not answer)."""
    if source.dialect != "postgresql":
        return None
    query = sa.text("SELECT pg_is_in_recovery(), "
                    "CASE WHEN pg_is_in_recovery() "
                    "THEN now() - pg_last_xact_replay_timestamp() END")
    try:
        with source.engine.connect() as conn:
            row = conn.execute(query).one()
    except sa.exc.SQLAlchemyError:
        return None
    lag = row[1] if isinstance(row[1], timedelta) else None
    return Recovery(standby=bool(row[0]), replay_lag=lag)


def standby(settings: config.Settings, source: Source) -> list[Finding]:
    """On a standby, the open-transaction guard cannot see the primary's transactions.

    `pg_stat_activity` on a standby lists the standby's own sessions only; a transaction
    open on the primary shows nowhere here, so the guard finds nothing to wait for and only
    the lookback covers a row committed late. Empty on a primary (the caller then reports
    the guard as usual).
    """
    facts = recovery(source)
    if facts is None or not facts.standby:
        return []
    if facts.replay_lag is None:
        lag = "replay lag unknown: no commit replayed since the standby started"
    else:
        seconds = max(0, int(facts.replay_lag.total_seconds()))
        lag = (f"replay lag now {timedelta(seconds=seconds)} "
               "(now() - pg_last_xact_replay_timestamp(); it also grows while the primary "
               "writes nothing)")
    return [("warn", "open-transaction guard: cannot work here: this database is a standby "
                     "(pg_is_in_recovery() is true) and its pg_stat_activity does not show the "
                     "primary's transactions, so only the lookback protects rows committed "
                     "late. Set each stream's lookback longer than the longest write "
                     "transaction on the primary plus the replication lag "
                     f"({lag}); lookbacks now: {_lookbacks(settings, source)}")]


def _lookbacks(settings: config.Settings, source: Source) -> str:
    """`contacts.customers 0:10:00, events.opt_outs 1000 values` (defaults filled in)."""
    shown = []
    for name, stream in settings.streams.items():
        section = "contacts" if name in settings.contacts else "events"
        lookback = stream.lookback
        if lookback is None:
            try:
                lookback = default_lookback(source.bind(name, stream, section).cursor_kind)
            except SourceError:
                continue  # the stream check has reported it already
        text = str(lookback) if isinstance(lookback, timedelta) else f"{lookback} values"
        shown.append(f"{section}.{name} {text}")
    return ", ".join(shown) or "no streams"


_noted: set[str] = set()
_noted_lock = threading.Lock()


def note_standby(source: Source) -> None:
    """Say once per process and database, at warning level, that a standby has no guard.

    For the pass to call before it asks for the oldest open transaction: cheap after the
    first answer (one query per database per process); silent while the database does not
    answer (the pass reports that itself).
    """
    key = source.settings.display_url
    if key in _noted:
        return
    facts = recovery(source)
    if facts is None:
        return
    with _noted_lock:
        if key in _noted:
            return
        _noted.add(key)
    if facts.standby:
        log.warning("%s is a standby: the open-transaction guard cannot see the primary's "
                    "transactions there, so only each stream's lookback protects rows "
                    "committed late; see `connector check`", key)


# -- the time zone a session gets ----------------------------------------------------------


def session_timezone(source: Source) -> str | None:
    """The `TimeZone` a session of this role gets when it does not set one (PostgreSQL).

    The connector's own sessions set UTC, so this opens one more connection without that
    option: the answer then follows the server, database and role settings, as it does for
    the application that writes the rows (unless that application sets its own zone).
    """
    if source.dialect != "postgresql":
        return None
    url = sa.engine.make_url(source.settings.driver_url.url)
    timeout = max(1, int(source.settings.connect_timeout.total_seconds()))
    engine = sa.create_engine(url, poolclass=NullPool, connect_args={
        "application_name": APPLICATION_NAME, "connect_timeout": timeout,
        "options": "-c default_transaction_read_only=on"})
    try:
        with _without_pgtz(), engine.connect() as conn:
            return str(conn.execute(sa.text("SHOW TimeZone")).scalar())
    except sa.exc.SQLAlchemyError as exc:
        log.debug("reading the session time zone failed: %s", describe(exc))
        return None
    finally:
        engine.dispose()


@contextlib.contextmanager
def _without_pgtz() -> Iterator[None]:
    """libpq sends $PGTZ as the session's zone: this machine's setting, not the database's,
    and not what the application that writes the rows gets. Leave it out of this one
    connection (check runs once, before any pass)."""
    saved = os.environ.pop("PGTZ", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["PGTZ"] = saved


def same_zone(one: str, other: str) -> bool:
    """Whether two zone names give the same UTC offsets (`UTC` and `Etc/UTC` do).

    Compared weekly over the past two years and the next one: what matters is how the
    values being written now and lately are read.
    """
    if one.lower() == other.lower():
        return True
    try:
        first, second = ZoneInfo(one), ZoneInfo(other)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    start = datetime.now(UTC) - timedelta(days=730)
    moments = (start + timedelta(weeks=week) for week in range(157))
    return all(moment.astimezone(first).utcoffset() == moment.astimezone(second).utcoffset()
               for moment in moments)


def timezone(settings: config.Settings, source: Source) -> list[Finding]:
    """Warn per stream that reads `timestamp without time zone` when zones differ.

    Such values carry no zone: `now()` and `localtimestamp` write them in the session's zone,
    the connector reads them in `source.timezone`. When the two differ, every such time
    sent is shifted, and the read window and the open-transaction guard with it.
    """
    if source.dialect != "postgresql":
        return []  # SQLite has no session zone; other servers are not asked yet
    naive = {place: columns for place, columns in _naive_columns(settings, source).items()
             if columns}
    if not naive:
        return []
    server = session_timezone(source)
    if server is None:
        return [("warn", "time zone: could not read the zone a session of this role gets "
                         "(SHOW TimeZone); make sure source.timezone is the zone the "
                         "timestamp without time zone columns are written in")]
    ours = settings.source.timezone
    if same_zone(server, ours):
        agree = "as source.timezone says" if server.lower() == ours.lower() \
            else f"the same offsets as source.timezone {ours}"
        return [("ok", f"time zone: a session on this database gets {server}, {agree} "
                       f"({len(naive)} stream(s) read timestamp without time zone)")]
    shift = _shift(server, ours)
    return [("warn", f"{place}: {', '.join(columns)} "
                     f"{'is' if len(columns) == 1 else 'are'} timestamp without time zone, "
                     f"read in source.timezone {ours}, but a session on this database gets "
                     f"TimeZone {server}, so now() and localtimestamp write them in {server}"
                     f"{shift}: every such time sent is shifted, and the read window and the "
                     f"open-transaction guard with it. Set source.timezone: {server} (unless "
                     "the application that writes these rows sets its own zone)")
            for place, columns in naive.items()]


def _naive_columns(settings: config.Settings, source: Source) -> dict[str, list[str]]:
    """Per stream place, its `timestamp without time zone` columns, cursor and at named."""
    found: dict[str, list[str]] = {}
    for name, stream in settings.streams.items():
        section = "contacts" if name in settings.contacts else "events"
        try:
            bound = source.bind(name, stream, section)
        except SourceError:
            continue  # the stream check has reported it already
        at = stream.at or stream.cursor if isinstance(stream, config.EventStream) else None
        columns = []
        for column_name in bound.names:
            column_type: Any = bound.table.c[column_name].type
            if not isinstance(column_type, sa.DateTime) or column_type.timezone:
                continue
            roles = [role for role, which in (("cursor", stream.cursor), ("at", at))
                     if which == column_name]
            columns.append(f"{column_name} ({', '.join(roles)})" if roles else column_name)
        found[f"{section}.{name}"] = columns
    return found


def _shift(server: str, ours: str) -> str:
    """` (8:00:00 apart now)`, or nothing when a zone is not one Python knows."""
    try:
        now = datetime.now(UTC)
        theirs = now.astimezone(ZoneInfo(server)).utcoffset()
        mine = now.astimezone(ZoneInfo(ours)).utcoffset()
    except (ZoneInfoNotFoundError, ValueError):
        return ""
    if theirs is None or mine is None:
        return ""
    return f" ({abs(theirs - mine)} apart now)"


# -- a key that logs in but may not call ---------------------------------------------------


async def api_access(settings: config.Wiraya) -> list[Finding]:
    """Whether the key may call the API: `PUT /api/contact/_bulk` with no items.

    An empty bulk body changes nothing. A 2xx or a 400 (the body was judged, so the token was
    taken) means the key may call; 401 or 403 with a fresh token means it is refused; a 404
    or 405 means there is no bulk route to ask, so the probe cannot tell.
    """
    import httpx  # only `check` asks the API this way; a pass need not load httpx

    route = f"PUT {PROBE_PATH}"
    headers = {"Content-Type": "application/json; charset=utf-8"}
    try:
        async with httpx.AsyncClient(base_url=settings.base_url, headers=headers,
                                     timeout=settings.timeout.total_seconds(),
                                     follow_redirects=False) as client:
            status = await _probe(client, settings)
    except _NoToken as exc:
        return [("warn", f"Wiraya: could not tell whether the key may call the API: {exc}")]
    except httpx.HTTPError as exc:
        return [("warn", f"Wiraya: could not tell whether the key may call the API: {route} "
                         f"did not answer ({type(exc).__name__})")]
    if 200 <= status < 300 or status == 400:
        return [("ok", f"Wiraya: the key may call the API ({route} with no items: {status})")]
    if status in {401, 403}:
        return [("fail", f"Wiraya: wiraya.api_key logs in but is refused on {route} ({status} "
                         "with a fresh token); ask Wiraya to give this key access to the API, "
                         "or use a key that has it")]
    if status in {404, 405}:
        return [("warn", f"Wiraya: could not tell whether the key may call the API: {route} "
                         f"answered {status} (no bulk route to ask)")]
    return [("warn", f"Wiraya: could not tell whether the key may call the API: {route} "
                     f"answered {status}")]


async def _probe(client: AsyncClient, settings: config.Wiraya) -> int:
    """The probe's status; a 401 fetches a new token once and asks again."""
    status = 401
    for _ in range(2):
        token = await _token(client, settings)
        reply = await client.put(PROBE_PATH, content=b"{}",
                                 headers={"Authorization": f"Bearer {token}"})
        status = reply.status_code
        if status != 401:
            break
    return status


class _NoToken(Exception):
    """The token call did not give a token this time (the login check reports the key)."""


async def _token(client: AsyncClient, settings: config.Wiraya) -> str:
    body = {"key": settings.api_key.get_secret_value()}
    reply = await client.post(TOKEN_PATH, json=body)
    try:
        data = reply.json() if reply.status_code == 200 else None
    except ValueError:
        data = None
    token = data.get("token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise _NoToken(f"POST {TOKEN_PATH} gave no token for the probe ({reply.status_code})")
    logs.register_secret(token)
    return token


__all__ = ["Finding", "Recovery", "api_access", "note_standby", "recovery", "same_zone",
           "session_timezone", "standby", "timezone"]
