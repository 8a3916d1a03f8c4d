"""Every statement run against the customer database (SQLAlchemy Core).

Reads only: each statement runs in a read-only transaction, and each page is its own short
transaction, so the connector never holds a snapshot open on the customer's database.
Table and column names come from the config and reach SQL only as quoted identifiers.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any, NamedTuple, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, Row

from connector import config
from connector.cursor import CursorKind, comparable
from connector.errors import SourceError
from connector.values import Position

# (`connector.dialects.mysql` is imported where a MySQL branch uses it: it loads SQLAlchemy's
# MySQL dialect and drivers, which a PostgreSQL or SQLite connector need not pay for at start.)

APPLICATION_NAME = "wiraya-connector"

CURSOR_KINDS = ("timestamp", "timestamptz", "date", "integer", "number")
TIME_KINDS = ("timestamp", "timestamptz", "date")

log = logging.getLogger("connector.source")

T = TypeVar("T")


@dataclass(frozen=True)
class BoundStream:
    """A stream's table as the database describes it, with the columns the stream reads."""

    name: str
    table: sa.Table
    columns: tuple[sa.ColumnElement[Any], ...]  # in the order of `stream.columns()`
    names: tuple[str, ...]
    cursor: sa.ColumnElement[Any]
    id: sa.ColumnElement[Any]
    cursor_kind: CursorKind
    cursor_nullable: bool
    id_nullable: bool
    id_is_integer: bool
    # When set (PostgreSQL), the server digests each row read, seeded with this salt: pages
    # are then read narrow, and full rows come with their digests (`Rows.digests`).
    digest_salt: str | None = None

    @property
    def cursor_index(self) -> int:
        return self.names.index(self.cursor.name)

    @property
    def id_index(self) -> int:
        return self.names.index(self.id.name)

    def cursor_of(self, row: Sequence[Any]) -> Any:
        return row[self.cursor_index]

    def id_of(self, row: Sequence[Any]) -> Any:
        return row[self.id_index]


@dataclass(frozen=True)
class Rows:
    """Full rows in the stream's column order; with the server's digest of each row when
    the stream is read narrow (`BoundStream.digest_salt`)."""

    rows: Sequence[Sequence[Any]]
    digests: Sequence[int] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def part(self, start: int, stop: int) -> Rows:
        return Rows(self.rows[start:stop],
                    None if self.digests is None else self.digests[start:stop])


class Narrow(NamedTuple):
    """One row of a narrow page: its id, the id as text when the server made it (integer
    ids), and the server's digest of the row."""

    id: Any
    text: str | None
    digest: int


@dataclass(frozen=True)
class Page:
    """One keyset page: full rows, or (narrow) ids and digests only; `last` is where it ends."""

    last: Position
    size: int
    full: Rows | None = None
    narrow: Sequence[Narrow] | None = None
    # A whole-table comparison's page on PostgreSQL with integer ids: `{"id": digest, ...}`
    # as JSON text, made by the server and handed as is to the state file,
    # so that an unchanged page builds nothing per row in Python.
    packed: str | None = None


class _Server:
    """The customer database's server: connections, its clock, its open transactions."""

    def __init__(self, settings: config.Source) -> None:
        self.settings = settings
        driver = settings.driver_url
        if driver.note:
            log.debug(driver.note)
        url = sa.engine.make_url(driver.url)
        self.dialect = url.get_backend_name()
        connect_args: dict[str, Any] = {}
        if self.dialect == "mysql":
            from connector.dialects import mysql
            connect_args = mysql.connect_args(settings.connect_timeout.total_seconds())
        if self.dialect == "postgresql":
            timeout_ms = int(settings.statement_timeout.total_seconds() * 1000)
            connect_args = {
                "application_name": APPLICATION_NAME,
                "connect_timeout": max(1, int(settings.connect_timeout.total_seconds())),
                # A fixed time zone keeps the text of a timestamptz, and so the digest of a
                # row, the same whatever the server's default.
                "options": f"-c default_transaction_read_only=on -c statement_timeout={timeout_ms}"
                           " -c TimeZone=UTC",
            }
        self.engine: Engine = sa.create_engine(url, connect_args=connect_args,
                                               pool_pre_ping=True, pool_size=4, max_overflow=4)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_read_only)
        if self.dialect == "postgresql":
            event.listen(self.engine, "connect", _utc_session)
        if self.dialect == "mysql":
            from connector.dialects import mysql
            mysql.prepare(self.engine, settings.statement_timeout.total_seconds())
        self._bound: dict[str, BoundStream] = {}

    def close(self) -> None:
        self.engine.dispose()

    def _all(self, bound: BoundStream, query: sa.Select[Any]) -> list[Row[Any]]:
        try:
            with self.engine.connect() as conn:
                return list(conn.execute(query).all())
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"{bound.name}: reading {bound.table.fullname} failed: "
                              f"{describe(exc)}") from None

    # -- the open-transaction guard (PostgreSQL) ------------------------------------------

    def oldest_open_transaction(self) -> datetime | None:
        """When the oldest other open transaction on this database began, if any is visible.

        A row written by that transaction may carry a cursor value from its start and
        become visible only when it commits: the read must start no later than that.
        """
        if self.dialect == "mysql":
            from connector.dialects import mysql
            return self._ask(mysql.oldest_open_transaction, "reading innodb_trx failed")
        if self.dialect != "postgresql":
            return None
        query = sa.text(
            "SELECT min(xact_start) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND xact_start IS NOT NULL AND backend_type = 'client backend' "
            "AND coalesce(application_name, '') <> :ours")
        try:
            with self.engine.connect() as conn:
                value = conn.execute(query, {"ours": APPLICATION_NAME}).scalar()
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"reading pg_stat_activity failed: {describe(exc)}") from None
        return value if isinstance(value, datetime) else None

    def guard_visibility(self) -> str:
        """'all' when the role sees every session's transactions, 'own' when only its own."""
        if self.dialect == "mysql":
            from connector.dialects import mysql
            return self._ask(mysql.guard_visibility, "checking the user's rights failed")
        if self.dialect != "postgresql":
            return "none"
        query = sa.text(
            "SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') "
            "FROM pg_roles WHERE rolname = current_user")
        try:
            with self.engine.connect() as conn:
                return "all" if conn.execute(query).scalar() else "own"
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"checking the role's rights failed: {describe(exc)}") from None

    def now(self) -> datetime:
        """The database's clock (PostgreSQL, MySQL), else this machine's, as an aware time."""
        if self.dialect == "mysql":
            from connector.dialects import mysql
            return self._ask(mysql.now, "the database did not answer")
        if self.dialect == "postgresql":
            try:
                with self.engine.connect() as conn:
                    value = conn.execute(sa.text("SELECT clock_timestamp()")).scalar()
            except sa.exc.SQLAlchemyError as exc:
                raise SourceError(f"the database did not answer: {describe(exc)}") from None
            assert isinstance(value, datetime)
            return value
        return datetime.now(self.settings.zone)

    def _ask(self, question: Callable[[Connection], T], failure: str) -> T:
        """One dialect module question on a connection of its own."""
        try:
            with self.engine.connect() as conn:
                return question(conn)
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"{failure}: {describe(exc)}") from None

    def ping(self) -> str:
        """Connect and ask for the server version; raises SourceError with a clear line."""
        try:
            with self.engine.connect() as conn:
                if self.dialect == "postgresql":
                    return str(conn.execute(sa.text("SHOW server_version")).scalar())
                if self.dialect == "mysql":
                    from connector.dialects import mysql
                    return mysql.version(conn)
                return "SQLite " + str(conn.execute(sa.text("SELECT sqlite_version()")).scalar())
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"cannot reach the database at {self.settings.display_url}: "
                              f"{describe(exc)}") from None

    # -- the catalog: what a table has, and whether it was recreated --------------------

    def cursor_indexed(self, bound: BoundStream) -> bool:
        """Whether an index starts with the cursor column (a view: never known)."""
        try:
            with self.engine.connect() as conn:
                inspector = sa.inspect(conn)
                indexes = inspector.get_indexes(bound.table.name, schema=bound.table.schema)
                primary = inspector.get_pk_constraint(bound.table.name, schema=bound.table.schema)
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"{bound.name}: cannot list indexes: {describe(exc)}") from None
        firsts = [index["column_names"][0] for index in indexes if index["column_names"]]
        firsts += (primary.get("constrained_columns") or [])[:1]
        return bound.cursor.name in firsts

    def is_view(self, bound: BoundStream) -> bool:
        """Whether the stream reads a view (for `connector check`; a pass need not know)."""
        try:
            with self.engine.connect() as conn:
                views = sa.inspect(conn).get_view_names(schema=bound.table.schema)
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"{bound.name}: cannot list views: {describe(exc)}") from None
        return bound.table.name in views

    def table_identity(self, bound: BoundStream) -> str | None:
        """What changes when the table is truncated or recreated (PostgreSQL: its oid and
        file node); None where the database cannot tell, and for a view (no file node)."""
        if self.dialect != "postgresql":
            return None
        query = sa.text("SELECT oid::text || '/' || pg_relation_filenode(oid)::text "
                        "FROM pg_class WHERE oid = to_regclass(:name)")
        try:
            with self.engine.connect() as conn:
                value = conn.execute(query, {"name": _regclass(bound)}).scalar()
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"{bound.name}: reading pg_class failed: {describe(exc)}") from None
        return str(value) if value is not None else None


class _TextTimes(_Server):
    """Times stored as text (SQLite): a cursor compared as SQLite's normal form of a time."""

    def _sqlite_text_time(self, place: str, table: sa.Table, column: sa.ColumnElement[Any]
                          ) -> tuple[sa.ColumnElement[Any], str]:
        """A SQLite time column (text: ISO 8601 with `T` or a space, `Z`, an offset or
        none) as a cursor: compared as SQLite's own UTC normal form, so that text written
        in different shapes still sorts by time. With an offset anywhere, the values are
        UTC; with none, local times in `source.timezone`. A column mixing both can only be
        read with `timezone: UTC` (SQLite reads a time without offset as UTC)."""
        offset = sa.or_(*(column.op("GLOB")(pattern) for pattern in _OFFSET_GLOBS))
        has_offset = sa.exists().where(offset)
        has_naive = sa.exists().where(column.is_not(None), sa.func.typeof(column) == "text",
                                      sa.not_(offset))
        try:
            with self.engine.connect() as conn:
                aware, naive = conn.execute(sa.select(has_offset, has_naive)).one()
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"{place}: cannot read {table.name}: {describe(exc)}") from None
        if aware and naive and self.settings.timezone not in ("UTC", "Etc/UTC"):
            raise SourceError(
                f"{place}.cursor: {column.name} holds times with an offset (or Z) and times "
                f"without one; SQLite compares the latter as UTC, but timezone is "
                f"{self.settings.timezone}: store every time one way, or set source.timezone: "
                "UTC if the times without offset are UTC")
        normal = sa.func.strftime("%Y-%m-%d %H:%M:%f", column)
        return (sa.type_coerce(normal, _SqliteTime(aware=bool(aware))).label(column.name),
                "timestamptz" if aware else "timestamp")

    def unreadable_times(self, bound: BoundStream) -> int:
        """How many rows hold a cursor value SQLite cannot read as a time (0 elsewhere)."""
        if self.dialect != "sqlite" or not isinstance(bound.cursor.type, _SqliteTime):
            return 0
        raw = bound.table.c[bound.cursor.name]
        query = sa.select(sa.func.count()).select_from(bound.table).where(
            raw.is_not(None), bound.cursor.is_(None))
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(query).scalar() or 0)
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"{bound.name}: reading {bound.table.fullname} failed: "
                              f"{describe(exc)}") from None


class _WholeTable(_Server):
    """A whole-table comparison's reads (`cursor: none`, reconcile): pages in id order."""

    def _digest(self, bound: BoundStream) -> sa.ColumnElement[Any]:
        raise NotImplementedError  # the server's row digest: Source's, per dialect

    def compare_page(self, bound: BoundStream, limit: int, after_id: Any = None
                     ) -> Page | None:
        """The next page of the whole table in id order (None: no more rows), whatever the
        cursor: narrow `(id, id as text, digest)` where the server digests rows, else full
        rows (their digest is then computed here). Rows with a NULL id cannot be compared."""
        condition: sa.ColumnElement[bool] = bound.id.is_not(None)
        if after_id is not None:
            condition = sa.and_(condition, bound.id > after_id)
        if bound.digest_salt is not None and bound.id_is_integer \
                and self.dialect == "postgresql":  # json_object_agg
            return self._packed_page(bound, condition, limit)
        if bound.digest_salt is not None:
            key = sa.cast(bound.id, sa.Text) if bound.id_is_integer else sa.null()
            query = sa.select(bound.id, key, self._digest(bound))
            rows: Sequence[Sequence[Any]] = self._all(
                bound, query.where(condition).order_by(bound.id).limit(limit))
            if not rows:
                return None
            return Page(Position(None, rows[-1][0]), len(rows),
                        narrow=[Narrow(row[0], row[1], row[2]) for row in rows])
        full = self._all(bound, sa.select(*bound.columns).where(condition)
                         .order_by(bound.id).limit(limit))
        if not full:
            return None
        return Page(Position(None, bound.id_of(full[-1])), len(full), full=Rows(full))

    def _packed_page(self, bound: BoundStream, condition: sa.ColumnElement[bool],
                     limit: int) -> Page | None:
        """A narrow page as one row: its size, its last id and its `{id: digest}` object as
        JSON text built by the server (no Python object per row)."""
        page = (sa.select(bound.id.label("id"), self._digest(bound)).where(condition)
                .order_by(bound.id).limit(limit).subquery())
        pairs = sa.func.json_object_agg(sa.cast(page.c.id, sa.Text), page.c._digest)
        query = cast(sa.Select[Any], sa.select(sa.func.count(), sa.func.max(page.c.id),
                                               sa.cast(pairs, sa.Text)))
        size, last, packed = tuple(self._all(bound, query)[0])
        if not size:
            return None
        return Page(Position(None, last), int(size), packed=packed)


class Source(_WholeTable, _TextTimes):
    """The customer database: a stream's table described and read."""

    # -- describing a stream's table ------------------------------------------------------

    def bind(self, name: str, stream: config.ContactStream | config.EventStream,
             section: str) -> BoundStream:
        """Reflect the stream's table once; every missing column is named with its place."""
        if name in self._bound:
            return self._bound[name]
        place = f"{section}.{name}"
        try:
            with self.engine.connect() as conn:
                table = _columns_of(conn, self.dialect, stream.table.name, stream.table.schema_)
        except sa.exc.NoSuchTableError:
            raise SourceError(f"{place}.table: no table or view named {stream.table} in "
                              f"{self.settings.display_url}; check the name and the schema "
                              "(write schema.table), and that the role may read it") from None
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"{place}: cannot read the definition of {stream.table}: "
                              f"{describe(exc)}") from None
        missing = [column for column in stream.columns() if column not in table.c]
        if missing:
            known = list(table.c.keys())
            hints = []
            for column in missing:
                close = difflib.get_close_matches(column, known, n=1, cutoff=0.6)
                hints.append(f"{column!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise SourceError(f"{place}: {stream.table} has no column {', '.join(hints)}; "
                              f"its columns are {', '.join(known)}")
        cursor, kind = _cursor_of(table, stream)
        text_time = self.dialect == "sqlite" and _text_time_type(cursor.type)
        if text_time:
            cursor, kind = self._sqlite_text_time(place, table, cursor)
        if kind is None:
            raise SourceError(f"{place}.cursor: column {stream.cursor!r} is "
                              f"{cursor.type}; a cursor must be a timestamp, a date or an "
                              "integer that grows when a row is written")
        id_column = table.c[stream.id]
        bound = BoundStream(
            name=name, table=table,
            columns=tuple(cursor if column == cursor.name else table.c[column]
                          for column in stream.columns()),
            names=tuple(stream.columns()), cursor=cursor, id=id_column,
            cursor_kind=cast(CursorKind, kind),
            cursor_nullable=bool(text_time or getattr(cursor, "nullable", True)),
            id_nullable=bool(id_column.nullable),
            id_is_integer=isinstance(id_column.type, sa.Integer))
        self._bound[name] = bound
        return bound

    def narrowed(self, bound: BoundStream, salt: str) -> BoundStream:
        """The stream read narrow where the server can digest rows (PostgreSQL), else as is."""
        return replace(bound, digest_salt=salt) if self.dialect in {"postgresql", "mysql"} \
            else bound

    # -- reading --------------------------------------------------------------------------

    def read_page(self, bound: BoundStream, limit: int, after: Position | None = None,
                  floor: Any = None, until: Any = None, whole: bool = False) -> Page | None:
        """The next page in `(cursor, id)` order (None: no more rows); narrow when the
        stream has a digest salt, full otherwise or when asked (`whole`: with the server's
        digests, for a pass that knows every row is new). Bounds as for `page`."""
        if bound.digest_salt is not None and not whole:
            rows: Sequence[Sequence[Any]] = self.digest_page(bound, limit, after, floor, until)
            if not rows:
                return None
            cursor, id_ = rows[-1][0], rows[-1][1]
            return Page(Position(comparable(bound.cursor_kind, cursor), id_), len(rows),
                        narrow=[Narrow(row[1], row[2], row[3]) for row in rows])
        query = self._keyset(self._select(bound), bound, after, floor, until)
        full = self._rows(bound, self._all(bound, query.limit(limit)))
        if not full.rows:
            return None
        last = full.rows[-1]
        return Page(Position(comparable(bound.cursor_kind, bound.cursor_of(last)),
                             bound.id_of(last)), len(full), full=full)

    def page(self, bound: BoundStream, limit: int, after: Position | None = None,
             floor: Any = None, until: Any = None) -> list[Row[Any]]:
        """The next `limit` full rows in `(cursor, id)` order (no digest column).

        `after` is exclusive (keyset); `floor` is an inclusive cursor bound (the lookback
        start); `until` an exclusive upper cursor bound (backfill ranges).
        """
        query = self._keyset(sa.select(*bound.columns), bound, after, floor, until)
        return self._all(bound, query.limit(limit))

    def digest_page(self, bound: BoundStream, limit: int, after: Position | None = None,
                    floor: Any = None, until: Any = None) -> list[Row[Any]]:
        """Like `page`, but only `(cursor, id, id as text or None, digest)` of each row.

        Comparing these with the state file finds the rows that changed; only those are
        then read in full (`rows_by_id`), so an unchanged page costs four narrow columns.
        """
        assert bound.digest_salt is not None
        key = sa.cast(bound.id, sa.Text) if bound.id_is_integer else sa.null()
        query = sa.select(bound.cursor, bound.id, key, self._digest(bound))
        query = self._keyset(query, bound, after, floor, until)
        return self._all(bound, query.limit(limit))

    def _keyset(self, query: sa.Select[Any], bound: BoundStream, after: Position | None,
                floor: Any, until: Any) -> sa.Select[Any]:
        cursor, id_ = bound.cursor, bound.id
        query = query.where(cursor.is_not(None), id_.is_not(None))
        if self.dialect == "mysql" and bound.cursor_kind in TIME_KINDS:
            from connector.dialects import mysql
            query = query.where(mysql.real_time(cursor))
        if floor is not None:
            query = query.where(cursor >= self.coerce(bound, floor))
        if after is not None:
            at = self.coerce(bound, after.cursor)
            query = query.where(cursor >= at, sa.or_(cursor > at, id_ > after.id))
        if until is not None:
            query = query.where(cursor < self.coerce(bound, until))
        return query.order_by(cursor, id_)

    def rows_by_id(self, bound: BoundStream, keys: Sequence[str]) -> Rows:
        """Rows whose id is one of `keys` (ids as text), in `(cursor, id)` order."""
        values = [self._id_value(bound, key) for key in keys]
        values = [value for value in values if value is not None]
        if not values:
            return self._rows(bound, [])
        rows: list[Row[Any]] = []
        for start in range(0, len(values), 1000):
            query = (self._select(bound)
                     .where(self._id_among(bound, values[start:start + 1000]))
                     .order_by(bound.cursor, bound.id))
            rows.extend(self._all(bound, query))
        return self._rows(bound, rows)

    def _id_among(self, bound: BoundStream, values: list[Any]) -> sa.ColumnElement[bool]:
        """`id IN (...)`; on PostgreSQL with integer ids `id = ANY(:ids)`, one array
        parameter instead of one per id: 1,000 rows by id in ~11 ms instead of ~19 (less to
        bind, parse and plan)."""
        if self.dialect == "postgresql" and bound.id_is_integer:
            ids = sa.bindparam("ids", values, type_=sa.ARRAY(bound.id.type), unique=True)
            return bound.id == sa.any_(ids)
        return bound.id.in_(values)

    def rows_without_key(self, bound: BoundStream, floor: Any, limit: int) -> Rows:
        """Rows that a keyset walk cannot reach: a NULL id (from `floor` on) or a NULL cursor."""
        conditions: list[sa.ColumnElement[bool]] = []
        if bound.id_nullable:
            null_id: sa.ColumnElement[bool] = bound.id.is_(None)
            if floor is not None:
                null_id = sa.and_(null_id, bound.cursor >= self.coerce(bound, floor))
            conditions.append(null_id)
        if bound.cursor_nullable:
            conditions.append(bound.cursor.is_(None))
        if self.dialect == "mysql" and bound.cursor_kind in TIME_KINDS:
            from connector.dialects import mysql
            conditions.append(mysql.zero_time(bound.cursor))
        if not conditions:
            return self._rows(bound, [])
        query = self._select(bound).where(sa.or_(*conditions)).limit(limit)
        return self._rows(bound, self._all(bound, query))

    def rows_at_cursor(self, bound: BoundStream, cursor: Any) -> Rows:
        """Rows at one cursor value (to find again a row that had no id)."""
        query = self._select(bound).where(bound.cursor == self.coerce(bound, cursor))
        return self._rows(bound, self._all(bound, query.limit(10_000)))

    @staticmethod
    def _rows(bound: BoundStream, rows: Sequence[Row[Any]]) -> Rows:
        """Full rows, the server's digest (the last column, when asked for) set apart."""
        if bound.digest_salt is None:
            return Rows(rows)
        return Rows([row[:-1] for row in rows], [row[-1] for row in rows])

    def highest_cursor(self, bound: BoundStream) -> Any:
        """The highest cursor value visible now (an index lookup with a cursor index)."""
        query = sa.select(sa.func.max(bound.cursor))
        return self._all(bound, query)[0][0]

    def count(self, bound: BoundStream, floor: Any = None, until: Any = None) -> int:
        query = sa.select(sa.func.count()).select_from(bound.table).where(
            bound.cursor.is_not(None), bound.id.is_not(None))
        if floor is not None:
            query = query.where(bound.cursor >= self.coerce(bound, floor))
        if until is not None:
            query = query.where(bound.cursor < self.coerce(bound, until))
        rows = self._all(bound, query)
        return int(rows[0][0])

    def _select(self, bound: BoundStream) -> sa.Select[Any]:
        """The stream's columns, and the row's digest when the stream asks for it."""
        if bound.digest_salt is None:
            return sa.select(*bound.columns)
        return sa.select(*bound.columns, self._digest(bound))

    def _digest(self, bound: BoundStream) -> sa.ColumnElement[Any]:
        """A 64-bit hash of the row's values as text, seeded with the mapping's salt.

        `hashtextextended` (PostgreSQL 11+) is the hash behind hash partitioning: stable,
        and cheaper than md5 (bench/read_diff.py). Should it ever change, rows are mapped
        once more and compared by payload: nothing is resent.
        """
        assert bound.digest_salt is not None
        if self.dialect == "mysql":
            from connector.dialects import mysql
            return mysql.digest(bound.columns, bound.digest_salt)
        seed = int.from_bytes(hashlib.blake2b(bound.digest_salt.encode(), digest_size=8)
                              .digest(), "big", signed=True)
        values = sa.cast(sa.func.row(*bound.columns), sa.Text)
        return sa.func.hashtextextended(values, sa.literal(seed, sa.BigInteger)).label("_digest")

    def _id_value(self, bound: BoundStream, key: str) -> Any:
        if bound.id_is_integer:
            try:
                return int(key)
            except ValueError:
                return None
        return key

    def coerce(self, bound: BoundStream, value: Any) -> Any:
        """A cursor value in the form the column compares with."""
        if bound.cursor_kind == "timestamp" and isinstance(value, datetime) and value.tzinfo:
            return value.astimezone(self.settings.zone).replace(tzinfo=None)
        if bound.cursor_kind == "timestamptz" and isinstance(value, datetime) \
                and value.tzinfo is None:
            return value.replace(tzinfo=self.settings.zone)
        if bound.cursor_kind == "date" and isinstance(value, datetime):
            return value.date()
        return value

    def probe(self, bound: BoundStream, floor: Any) -> tuple[int, Any, Any]:
        """Rows from `floor` on, their highest cursor and the sum of their cursors as
        numbers: one aggregate over the cursor index, for a live pass's probe (probe.py)."""
        query = _probe_query(self.dialect, bound, self.coerce(bound, floor))
        rows, highest, total = tuple(self._all(bound, query)[0])
        return int(rows), highest, total


def _regclass(bound: BoundStream) -> str:
    """The table's name as `to_regclass` reads it: each part double-quoted."""
    parts = [bound.table.schema, bound.table.name] if bound.table.schema else [bound.table.name]
    return ".".join('"' + part.replace('"', '""') + '"' for part in parts)


def _utc_session(dbapi_connection: Any, _record: Any) -> None:
    # libpq sends $PGTZ at connection start, over the TimeZone in the options; the row
    # digests and the text of times must not depend on this machine's environment.
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET TimeZone TO 'UTC'")
    dbapi_connection.commit()


def _columns_of(conn: sa.Connection, dialect: str, name: str, schema: str | None) -> sa.Table:
    """The table with its columns only (name, type, nullable): a pass needs no more,
    and reflecting the whole table (keys, indexes, constraints, comments) costs twice
    the catalog queries. Raises NoSuchTableError."""
    columns = sa.inspect(conn).get_columns(name, schema=schema)
    if dialect == "mysql":
        from connector.dialects import mysql

        for column in columns:
            column["type"] = mysql.reflected_type(column["type"])
    return sa.Table(name, sa.MetaData(), *(
        sa.Column(column["name"], column["type"], nullable=column["nullable"])
        for column in columns), schema=schema)


def _cursor_of(table: sa.Table, stream: config.ContactStream | config.EventStream
               ) -> tuple[sa.ColumnElement[Any], str | None]:
    """The stream's cursor column and its kind; with `cursor: none`, the id stands in."""
    if stream.cursor == config.NO_CURSOR:
        return table.c[stream.id], "none"
    column = table.c[stream.cursor]
    return column, cursor_kind(column.type)


# Text that ends in an offset: Z, +hh:mm, -hh:mm or +hhmm.
_OFFSET_GLOBS = ("*[Zz]", "*[+-][0-9][0-9]:[0-9][0-9]", "*[0-9][+-][0-9][0-9][0-9][0-9]")


def _text_time_type(column_type: sa.types.TypeEngine[Any]) -> bool:
    return isinstance(column_type, sa.DateTime | sa.String)


class _SqliteTime(sa.types.TypeDecorator[datetime]):
    """SQLite's normal form of a time (`YYYY-MM-DD HH:MM:SS.SSS`, UTC when the text had an
    offset) <-> a datetime (aware in UTC when `aware`)."""

    impl = sa.String
    cache_ok = True

    def __init__(self, aware: bool) -> None:
        super().__init__()
        self.aware = aware

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if isinstance(value, datetime):
            if value.tzinfo is not None:
                value = value.astimezone(UTC).replace(tzinfo=None)
            return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        if isinstance(value, date):
            return value.strftime("%Y-%m-%d 00:00:00.000")
        return value

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        moment = datetime.fromisoformat(value)
        return moment.replace(tzinfo=UTC) if self.aware else moment


def cursor_kind(column_type: sa.types.TypeEngine[Any]) -> str | None:
    if isinstance(column_type, sa.DateTime):
        return "timestamptz" if column_type.timezone else "timestamp"
    if isinstance(column_type, sa.Date):
        return "date"
    if isinstance(column_type, sa.Integer):
        return "integer"
    if isinstance(column_type, sa.Numeric) and not isinstance(column_type, sa.Float):
        return "number"
    return None


def describe(exc: BaseException) -> str:
    """One line about a database error, without the statement or its parameters."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return text[:300]


def _sqlite_read_only(dbapi_connection: Any, _record: Any) -> None:
    # Text that is not valid UTF-8 must reach the mapper (and become a dead letter) instead
    # of failing the whole page inside the driver.
    dbapi_connection.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
    dbapi_connection.execute("PRAGMA query_only = ON")


def _probe_query(dialect: str, bound: BoundStream, low: Any) -> sa.Select[Any]:
    """`Source.probe`'s statement. Each cursor counts as an exact number, relative to the
    floor (small, so that SQLite's integer sum cannot overflow): any cursor value that moves
    changes the sum. The id is looked at only when it may be NULL: the cursor index alone
    answers otherwise."""
    cursor = bound.cursor
    number: sa.ColumnElement[Any]
    if bound.cursor_kind not in TIME_KINDS:
        number = cursor - low
    elif dialect == "postgresql" and bound.cursor_kind == "date":
        number = cursor - sa.literal(low, cursor.type)  # days
    elif dialect == "postgresql":
        # Microseconds from the floor, as an integer: exact on every version (before
        # PostgreSQL 14 `extract` gives a double, too coarse for a sum of whole epochs).
        since = sa.extract("epoch", cursor - sa.literal(low, cursor.type))
        number = sa.cast(sa.func.round(since * 1_000_000), sa.BigInteger)
    elif dialect == "mysql":
        number = sa.func.timestampdiff(sa.literal_column("MICROSECOND"), low, cursor)
    else:  # SQLite's normal form of a time is exact to the millisecond
        days = sa.func.julianday(cursor) - sa.func.julianday(sa.literal(low, cursor.type))
        number = sa.cast(sa.func.round(days * 86_400_000), sa.Integer)
    query = cast(sa.Select[Any], sa.select(sa.func.count(), sa.func.max(cursor),
                                           sa.func.sum(number))) \
        .select_from(bound.table).where(cursor >= low)
    if bound.id_nullable:
        query = query.where(bound.id.is_not(None))
    if dialect == "mysql" and bound.cursor_kind in TIME_KINDS:
        from connector.dialects import mysql

        query = query.where(mysql.real_time(cursor))
    return query


__all__ = ["BoundStream", "Narrow", "Page", "Rows", "Source", "date"]
