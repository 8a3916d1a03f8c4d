"""What `connector init` learns from a database: tables, columns, keys, indexes, and a small
sample of values, read-only.

The sample stays in memory: it is only tested (does it parse as a phone number, as an ISO
time?) and only counts leave this module, never a value: the values are personal data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Inspector

from connector.errors import SourceError
from connector.source import Source, cursor_kind, describe

SAMPLE_ROWS = 200


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # text, timestamp, timestamptz, date, integer, number, boolean, other
    type_name: str
    nullable: bool
    samples: tuple[Any, ...] = ()  # non-null sampled values (text columns only)


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    table: str  # the referred table's name
    schema: str | None
    referred: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    name: str
    schema: str | None  # None: the database's default schema
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[ForeignKey, ...]
    index_firsts: tuple[tuple[str, str], ...]  # (index name, its first column)

    def column(self, name: str) -> Column:
        return next(column for column in self.columns if column.name == name)

    def index_on(self, column: str) -> str | None:
        """The name of an index that starts with `column` (the primary key counts)."""
        if self.primary_key[:1] == (column,):
            return "the primary key"
        return next((index for index, first in self.index_firsts if first == column), None)


@dataclass(frozen=True)
class Schema:
    dialect: str
    tables: tuple[Table, ...]


def column_kind(column_type: sa.types.TypeEngine[Any]) -> str:
    """A column type as init reasons about it."""
    if isinstance(column_type, sa.Boolean):
        return "boolean"
    if isinstance(column_type, sa.String | sa.Enum):
        return "text"
    return cursor_kind(column_type) or "other"


def scan(source: Source) -> Schema:
    """Describe every table of the database's default schema (views are not candidates)."""
    source.ping()
    try:
        with source.engine.connect() as conn:
            inspector = sa.inspect(conn)
            default = inspector.default_schema_name
            tables = tuple(_table(conn, inspector, name, default)
                           for name in sorted(inspector.get_table_names()))
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"cannot read the tables of {source.settings.display_url}: "
                          f"{describe(exc)}") from None
    return Schema(dialect=source.dialect, tables=tables)


def _table(conn: Connection, inspector: Inspector, name: str, default: str | None) -> Table:
    described = inspector.get_columns(name)
    primary = inspector.get_pk_constraint(name).get("constrained_columns") or []
    foreign = tuple(
        ForeignKey(columns=tuple(fk["constrained_columns"]), table=fk["referred_table"],
                   schema=None if fk.get("referred_schema") in (None, default)
                   else fk["referred_schema"],
                   referred=tuple(fk["referred_columns"]))
        for fk in inspector.get_foreign_keys(name))
    firsts = tuple((str(index["name"]), str(index["column_names"][0]))
                   for index in inspector.get_indexes(name)
                   if index["column_names"] and index["column_names"][0])
    text_columns = [item["name"] for item in described
                    if column_kind(item["type"]) == "text"]
    samples = _sample(conn, name, text_columns)
    columns = tuple(
        Column(name=item["name"], kind=column_kind(item["type"]), type_name=str(item["type"]),
               nullable=bool(item.get("nullable", True)),
               samples=samples.get(item["name"], ()))
        for item in described)
    return Table(name=name, schema=default, columns=columns, primary_key=tuple(primary),
                 foreign_keys=foreign, index_firsts=firsts)


def _sample(conn: Connection, table: str, columns: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """Up to SAMPLE_ROWS rows of the text columns, in one short read-only statement."""
    if not columns:
        return {}
    selected = sa.table(table, *(sa.column(name) for name in columns))
    query = sa.select(*selected.c).limit(SAMPLE_ROWS)
    rows = conn.execute(query).all()
    conn.rollback()
    return {name: tuple(row[i] for row in rows if row[i] is not None)
            for i, name in enumerate(columns)}


def parses_as_time(value: Any) -> bool:
    """Whether a text value is an ISO 8601 date or time (`Z` and offsets included)."""
    if isinstance(value, datetime | date):
        return True
    if not isinstance(value, str) or len(value.strip()) < 10:
        return False
    text = value.strip()
    try:
        if len(text) == 10:
            date.fromisoformat(text)
        else:
            datetime.fromisoformat(text)
    except ValueError:
        return False
    return True
