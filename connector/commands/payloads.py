"""What a dry run would send: the first N payloads, secrets masked and, on request,
personal fields too. Pure: fed by the pass's `on_send` hook, printed by the sync command."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from connector.logs import mask, mask_all

REDACTED = "***"


@dataclass(frozen=True)
class Payload:
    kind: str  # "contact", "link" or "event"
    key: str  # the contact id the call is addressed to
    body: dict[str, Any]

    def line(self) -> str:
        # A key from the database may hold anything; one with control characters (such as
        # a flag event's separator) is quoted, so it cannot garble the terminal.
        key = self.key if self.key.isprintable() else json.dumps(self.key)
        return f"{self.kind} {key}: {json.dumps(self.body, ensure_ascii=False)}"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "body": self.body}


@dataclass
class Shown:
    """Keeps the first `limit` payloads (cleaned at once) and counts them all."""

    limit: int
    redact: bool = False
    items: list[Payload] = field(default_factory=list)
    total: int = 0

    def __call__(self, kind: str, key: str, body: dict[str, Any]) -> None:
        self.total += 1
        if len(self.items) < self.limit:
            self.items.append(Payload(kind, mask(key), clean(body, self.redact)))

    @property
    def hidden(self) -> int:
        return self.total - len(self.items)


def clean(body: dict[str, Any], redact: bool) -> dict[str, Any]:
    """A copy of `body` with every registered secret masked and, with `redact`, every value
    of its `personal` section (the fields Wiraya treats as personal data) replaced."""
    cleaned: dict[str, Any] = mask_all(body)
    if redact and isinstance(cleaned.get("personal"), dict):
        cleaned["personal"] = {name: REDACTED for name in cleaned["personal"]}
    return cleaned

