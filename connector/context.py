"""What a pass needs: the settings and the three things it talks to, with the caller's hooks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from connector import config
from connector.source import Source
from connector.state import State
from connector.wiraya import Wiraya

SendKind = Literal["contact", "link", "event"]


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


class _Never:
    def is_set(self) -> bool:
        return False


@dataclass
class Context:
    """What a pass needs: the settings and the three things it talks to."""

    settings: config.Settings
    source: Source
    state: State
    api: Wiraya | None  # None: a dry run, nothing is sent
    stop: StopFlag = field(default_factory=_Never)
    on_page: Callable[[str, int], None] | None = None  # (stream, rows) after each page
    # A dry run calls this with (kind, key, body) for every payload it would send.
    on_send: Callable[[SendKind, str, dict[str, Any]], None] | None = None
    # What the last live pass of each stream saw of its window (`probe.Seen`), in this
    # process: the daemon's next pass reads nothing when the window has not changed. None:
    # one pass per stream and the process ends (`connector sync`), so no probe is taken.
    probes: dict[str, Any] | None = field(default_factory=dict)

    @property
    def dry_run(self) -> bool:
        return self.api is None
