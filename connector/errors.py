"""Every error the connector raises on purpose, split by what the caller does next.

    ConnectorError             one clear line: what went wrong, where, and what to do
    ├── ConfigError            the config is wrong; lists every problem; exit code 2
    ├── SourceError            the customer database failed or refused (down, missing table);
    │                          the pass fails, the next pass tries again
    ├── StateError             the state file cannot be used (corrupt, newer version)
    │   └── StateLockedError   another daemon owns the state file
    └── WirayaError            the API failed as a whole (not one row)
        ├── AuthError          the API key was refused: fatal until the config is fixed
        └── ApiUnavailable     the API kept failing past the retry limit, or misbehaved

A single row that cannot be mapped or that Wiraya rejects is never an exception: it is a
value (a dead letter with its reason) and the pass goes on.
"""

from __future__ import annotations

from collections.abc import Iterable


class ConnectorError(Exception):
    """Base of every error the connector raises on purpose."""

    exit_code = 1


class ConfigError(ConnectorError):
    """The config cannot be used. `problems` holds one `(place, message)` per problem."""

    exit_code = 2

    def __init__(self, problems: Iterable[tuple[str, str]], source: str = "config") -> None:
        self.problems = list(problems)
        self.source = source
        lines = [f"{source}: {len(self.problems)} problem(s)"]
        lines += [f"  {place}: {message}" if place else f"  {message}"
                  for place, message in self.problems]
        super().__init__("\n".join(lines))


class SourceError(ConnectorError):
    """The customer database failed or refused a statement."""


class StateError(ConnectorError):
    """The state file cannot be used."""


class StateLockedError(StateError):
    """Another daemon already owns this state file."""


class WirayaError(ConnectorError):
    """The Wiraya API failed as a whole."""


class AuthError(WirayaError):
    """The API key was refused. Never carries the key itself."""

    exit_code = 2


class ApiUnavailable(WirayaError):
    """The API kept failing past the retry limit, or answered in a way we cannot read."""
