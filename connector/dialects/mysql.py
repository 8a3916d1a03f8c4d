"""Every MySQL- and MariaDB-specific statement and setting (through PyMySQL).

Each session the connector opens is read-only (`SET SESSION TRANSACTION READ ONLY`: every
page is its own read-only transaction), runs in UTC (`time_zone = '+00:00'`, so a TIMESTAMP
column reads the same whatever the server's zone) and has a statement time limit
(`max_statement_time` on MariaDB, `max_execution_time` on MySQL).

A TIMESTAMP column holds an instant: it is read as an aware UTC time. A DATETIME column
holds a wall-clock time: it stays naive and is read in `source.timezone`, like PostgreSQL's
`timestamp`. A zero date ('0000-00-00', or a zero month or day), which MariaDB's default
sql_mode accepts, is no date: None in a field; a cursor holding '0000-00-00' is held like a
NULL one, a cursor with only a zero month or day is skipped (see `zero_time`).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mysql as mysql_types
from sqlalchemy.engine import Connection, Engine

# Errors that mean "this user may not read that": no PROCESS privilege for innodb_trx.
ACCESS_DENIED = {1044, 1142, 1227}

UNKNOWN_VARIABLE = 1193

log = logging.getLogger("connector.source")

GRANT_HINT = "GRANT PROCESS ON *.* TO the connector's user"


def connect_args(connect_timeout: float) -> dict[str, Any]:
    return {"connect_timeout": max(1, int(connect_timeout)), "charset": "utf8mb4"}


def prepare(engine: Engine, statement_timeout: float) -> None:
    """Every new session: read-only, in UTC, with a statement time limit."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        mariadb = is_mariadb(str(dbapi_connection.get_server_info()))
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SET SESSION TRANSACTION READ ONLY")
            cursor.execute("SET SESSION time_zone = '+00:00'")
            _set_time_limit(cursor, mariadb, statement_timeout)
        finally:
            cursor.close()
        dbapi_connection.commit()

    event.listen(engine, "connect", on_connect)


def _set_time_limit(cursor: Any, mariadb: bool, seconds: float) -> None:
    try:
        if mariadb:
            cursor.execute("SET SESSION max_statement_time = %s", (round(seconds, 3),))
        else:
            cursor.execute("SET SESSION max_execution_time = %s", (int(seconds * 1000),))
    except Exception as exc:
        # Servers older than MariaDB 10.1 / MySQL 5.7.8 have no such limit: read without it.
        if not (exc.args and exc.args[0] == UNKNOWN_VARIABLE):
            raise
        log.debug("this server has no statement time limit; source.statement_timeout "
                  "is not applied")


def is_mariadb(server_version: str) -> bool:
    return "mariadb" in server_version.lower()


class UtcTimestamp(mysql_types.TIMESTAMP):
    """A TIMESTAMP column read as aware UTC times and compared with aware times.

    The session runs at `+00:00`, so the server hands over and takes UTC wall times; PyMySQL
    would send an aware time's own wall clock, so it is turned to UTC here first.
    """

    def __init__(self, fsp: int | None = None) -> None:
        super().__init__(timezone=True, fsp=fsp)

    def bind_processor(self, dialect: Any) -> Any:
        def process(value: Any) -> Any:
            if isinstance(value, datetime) and value.tzinfo is not None:
                return value.astimezone(UTC).replace(tzinfo=None)
            return value
        return process

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        def process(value: Any) -> Any:
            if isinstance(value, datetime):
                return value.replace(tzinfo=UTC)
            return None if isinstance(value, str) else value  # a zero date: no time
        return process


def _no_zero_dates(value: Any) -> Any:
    # PyMySQL hands over '0000-00-00' (and '2026-00-00') as text: MySQL's "no date".
    return None if isinstance(value, str) else value


class DateTime(mysql_types.DATETIME):
    """DATETIME, with zero dates read as no value (None)."""

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        return _no_zero_dates


class Date(mysql_types.DATE):
    """DATE, with zero dates read as no value (None)."""

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        return _no_zero_dates


def reflected_type(kind: Any) -> Any:
    """The type a reflected column is read with: TIMESTAMP columns as aware UTC times, and
    zero dates ('0000-00-00', allowed unless the sql_mode forbids them) as None."""
    if isinstance(kind, mysql_types.TIMESTAMP):
        return UtcTimestamp(getattr(kind, "fsp", None))
    if isinstance(kind, mysql_types.DATETIME):
        return DateTime(fsp=getattr(kind, "fsp", None))
    if isinstance(kind, sa.Date):
        return Date()
    return kind


def real_time(cursor: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """A time cursor holding a real date: no zero date, no zero month or day.

    A zero date is NOT NULL to the server yet no time at all: such rows are kept out of
    keyset pages (the month and day tests only filter the rows of the index range).
    """
    return sa.and_(cursor >= sa.literal(date(1000, 1, 1)), sa.func.month(cursor) > 0,
                   sa.func.dayofmonth(cursor) > 0)


def zero_time(cursor: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """A time cursor holding a zero date, found through the cursor's index: such rows are
    held like rows with a NULL cursor. A date with only a zero month or day ('2026-05-00')
    cannot be found without reading the whole table, so it is left out, unread."""
    return cursor < sa.literal(date(1000, 1, 1))


def digest(columns: tuple[sa.ColumnElement[Any], ...], salt: str) -> sa.ColumnElement[Any]:
    """A signed 64-bit hash of the row's values as text, seeded with the mapping's salt.

    QUOTE gives each value an unambiguous text (NULL as the bare word NULL, strings quoted
    and escaped), so no two different rows join to the same text; the first 16 hex digits
    of its MD5, read as a signed number, fit SQLite's integer like PostgreSQL's hash does.
    """
    seed = hashlib.blake2b(salt.encode(), digest_size=8).hexdigest()
    text = sa.func.concat_ws(",", sa.literal(seed, sa.String),
                             *(sa.func.quote(column) for column in columns))
    signed = sa.func.conv(sa.func.left(sa.func.md5(text), 16), 16, -10)
    return sa.cast(signed, mysql_types.BIGINT).label("_digest")


def oldest_open_transaction(conn: Connection) -> datetime | None:
    """When the oldest other transaction that may write began (aware UTC), if any.

    `information_schema.innodb_trx` lists open InnoDB transactions; it needs the PROCESS
    privilege, and without it this answers None (the guard is off, `check` says so).
    Read-only transactions (the connector's own sessions among them) write nothing, so
    they never hold the read back. `trx_started` is the server process's local time (not the
    session's zone: seen on MariaDB 10.11), so it is turned to UTC from 'SYSTEM'; it has
    whole seconds, truncated, which only starts the read a little earlier.
    """
    query = sa.text(
        "SELECT CONVERT_TZ(MIN(trx_started), 'SYSTEM', '+00:00') "
        "FROM information_schema.innodb_trx "
        "WHERE trx_mysql_thread_id <> CONNECTION_ID() AND trx_is_read_only = 0")
    try:
        value = conn.execute(query).scalar()
    except sa.exc.DBAPIError as exc:
        if error_code(exc) in ACCESS_DENIED:
            return None
        raise
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) else None


def guard_visibility(conn: Connection) -> str:
    """'all' when the user may read innodb_trx (PROCESS), else 'none'."""
    try:
        conn.execute(sa.text("SELECT COUNT(*) FROM information_schema.innodb_trx")).scalar()
    except sa.exc.DBAPIError as exc:
        if error_code(exc) in ACCESS_DENIED:
            return "none"
        raise
    return "all"


def now(conn: Connection) -> datetime:
    """The server's clock, as an aware UTC time (microseconds kept)."""
    value = conn.execute(sa.text("SELECT UTC_TIMESTAMP(6)")).scalar()
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC)


def version(conn: Connection) -> str:
    """'MariaDB 10.11.19' or 'MySQL 8.0.36', for `ping` and `check`."""
    text = str(conn.execute(sa.text("SELECT VERSION()")).scalar())
    if is_mariadb(text):
        return "MariaDB " + text.split("-", 1)[0]
    return "MySQL " + text


def error_code(exc: sa.exc.DBAPIError) -> int | None:
    args = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def index_statement(table: str, cursor: str, id_: str) -> str:
    """The statement `check` proposes for a cursor without an index (MySQL needs a name)."""
    name = "".join(ch if ch.isalnum() else "_" for ch in f"{table.split('.')[-1]}_{cursor}")
    return f"CREATE INDEX `{name[:60]}` ON {_quoted(table)} (`{cursor}`, `{id_}`)"


def _quoted(table: str) -> str:
    return ".".join(f"`{part}`" for part in table.split("."))


def guard_finding(visibility: str) -> tuple[str, str]:
    """What `connector check` says about the open-transaction guard."""
    if visibility == "all":
        return ("ok", "open-transaction guard: active (the user may read "
                      "information_schema.innodb_trx)")
    return ("warn", "open-transaction guard: off, the user may not read "
                    "information_schema.innodb_trx; a row committed later than the lookback "
                    f"could be missed. {GRANT_HINT} (it shows other sessions' transactions, "
                    "no data) to turn it on")
