"""The databases the connector reads, and the URL schemes users write for them.

Users paste the URL their platform gives them (`postgres://...` in `DATABASE_URL`,
`mysql://...`); SQLAlchemy wants a driver in the scheme. `driver_url` maps one to the other.
Nothing here may quote a URL: it holds the password.
"""

from __future__ import annotations

from dataclasses import dataclass

# The scheme as written -> the SQLAlchemy scheme, with the driver the connector ships with.
SCHEMES = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "mysql+pymysql": "mysql+pymysql",
    "mariadb+pymysql": "mysql+pymysql",
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
}

WORKING_FORMS = ("postgres://user:password@host:5432/dbname (or postgresql://), "
                 "mysql://user:password@host:3306/dbname (or mariadb://), "
                 "sqlite:///path/to/file.db")


class UnknownScheme(ValueError):
    """A URL whose scheme names no database the connector reads."""


@dataclass(frozen=True)
class DriverUrl:
    url: str  # the URL with the driver's scheme; as secret as the URL it came from
    written: str  # the scheme as the user wrote it
    scheme: str  # the scheme SQLAlchemy is given

    @property
    def note(self) -> str | None:
        """What was changed, for a debug line (schemes only, never the URL)."""
        if self.written == self.scheme:
            return None
        return f"database URL {self.written}:// is read as {self.scheme}://"


def driver_url(text: str) -> DriverUrl:
    """The URL with the scheme SQLAlchemy and the shipped driver need."""
    written, separator, rest = text.strip().partition("://")
    if not separator:
        raise UnknownScheme(f"not a database URL; write it as {WORKING_FORMS}")
    written = written.lower()
    scheme = SCHEMES.get(written)
    if scheme is None:
        base = written.split("+", 1)[0]
        if base in {"postgres", "postgresql"}:
            raise UnknownScheme("use the psycopg 3 driver, which ships with the connector: "
                                "write postgres:// or postgresql+psycopg://")
        if base in {"mysql", "mariadb"}:
            raise UnknownScheme("use the PyMySQL driver, which ships with the connector: "
                                "write mysql:// or mariadb://")
        raise UnknownScheme(f"the {_safe(base)!r} database is not supported; "
                            f"URLs that work: {WORKING_FORMS}")
    return DriverUrl(url=f"{scheme}://{rest}", written=written, scheme=scheme)


def _safe(scheme: str) -> str:
    """The scheme if it looks like one (a pasted password must never be echoed)."""
    if len(scheme) <= 30 and all(ch.isalnum() or ch in "+-." for ch in scheme):
        return scheme
    return "given"
