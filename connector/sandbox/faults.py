"""Fault knobs of the sandbox, and how the admin route checks a change to them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

MISBEHAVIOURS = frozenset({"malformed_json", "wrong_types", "huge_body", "redirect", "hang"})


@dataclass(frozen=True)
class Next:
    """An exact count instead of a share: the fault hits the next `calls` qualifying calls,
    then stops (the sandbox counts it down, so `faults.<knob>` shows what is left)."""

    calls: int

    def __post_init__(self) -> None:
        if isinstance(self.calls, bool) or not isinstance(self.calls, int) or self.calls < 0:
            raise ValueError(f"Next(calls): must be an integer >= 0, got {self.calls!r}")


# A share from 0 to 1 (drawn from the seeded generator) or an exact count.
Dose = float | Next


@dataclass
class Faults:
    """Fault knobs. Mutable: a test may change them while the sandbox serves, in Python
    (`sb.faults.drop_rate = 1.0`) or over HTTP (`POST /_sandbox/faults {"drop_rate": 1}`).

    A *dose* knob takes a share from 0 to 1 of the calls it applies to (drawn from
    `random.Random(seed)`, so a run repeats), or `Next(n)` (JSON: `{"next": n}`): exactly the
    next n such calls, counted down as they happen.

    - token_lifetime: seconds a token lives.
    - latency: seconds slept before answering each /api call.
    - error_rate (dose): /api calls answered 503 {"error": true}; not applied.
    - drop_rate (dose): /api calls whose connection is closed with no reply; not applied.
    - rate_limit: /api requests per second (token bucket); beyond it 429 with
      `Retry-After: retry_after`.
    - bulk_item_limit: more items in one bulk body -> 400 {"bulkItemLimitExceeded": true}.
    - bulk_retry_rate / bulk_reject_rate: share of bulk items failed with {"retry": true} /
      failed permanently.
    - reject_ids: contact ids whose upsert is refused (400).
    - bulk_routes: False -> the bulk routes answer 404.
    - bad_key_status: 401, or 200 with {"authenticated": false}, for an unknown key.
    - strict_order: a link or event for a never-upserted contact -> 404.
    - seed: seed of the generator the shares are drawn from.
    - misbehave: one of MISBEHAVIOURS, applied to every /api call.
    - event_names: accepted event names (case-sensitive); None accepts any.
    - foreign_page (dose): /api calls answered not by the API but as a proxy in front of it
      would: status `foreign_page_status`, `Content-Type: text/html` and an HTML maintenance
      page. Checked before anything else (auth included); the call is not applied.
    - foreign_page_status: the status of that page (default 200).
    - drop_after_apply (dose): of the calls that were applied (a contact stored, a link or an
      event recorded, at least one bulk item accepted), these have their connection closed
      with no reply. The effect stays; the request record says status 0, applied True.
    - slow_after_apply: seconds to wait after applying a call before replying (a client with a
      shorter timeout sees no reply although the call took effect). 0 turns it off. The call
      is in `requests` (applied True, with the status it will be answered) and in `events` /
      `contacts` / `links` before the wait begins.
    """

    token_lifetime: float = 300.0
    latency: float = 0.0
    error_rate: Dose = 0.0
    drop_rate: Dose = 0.0
    rate_limit: float | None = None
    retry_after: int = 1
    bulk_item_limit: int | None = None
    bulk_retry_rate: float = 0.0
    bulk_reject_rate: float = 0.0
    reject_ids: set[str] = field(default_factory=set)
    bulk_routes: bool = True
    bad_key_status: int = 401
    strict_order: bool = True
    seed: int = 0
    misbehave: str | None = None
    event_names: set[str] | None = None
    foreign_page: Dose = 0.0
    foreign_page_status: int = 200
    drop_after_apply: Dose = 0.0
    slow_after_apply: float = 0.0


DOSE_FIELDS = frozenset({"error_rate", "drop_rate", "foreign_page", "drop_after_apply"})
FAULT_NAMES = frozenset(f.name for f in fields(Faults))


def faults_json(faults: Faults) -> dict[str, Any]:
    out = asdict(faults)
    out["reject_ids"] = sorted(faults.reject_ids)
    out["event_names"] = None if faults.event_names is None else sorted(faults.event_names)
    for name in DOSE_FIELDS:
        value = getattr(faults, name)
        out[name] = {"next": value.calls} if isinstance(value, Next) else value
    return out


# --- checking a change given as JSON ------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _share(name: str, value: Any) -> float:
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: must be a number from 0 to 1")
    return float(value)


def _dose(name: str, value: Any) -> Dose:
    if isinstance(value, dict):
        calls: Any = value.get("next")
        if set(value) != {"next"} or not _is_integer(calls) or calls < 0:
            raise ValueError(f'{name}: a count must look like {{"next": 3}} (an integer >= 0)')
        return Next(int(calls))
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f'{name}: must be a number from 0 to 1 or {{"next": <count>}}')
    return float(value)


def _seconds(name: str, value: Any) -> float:
    if not _is_number(value) or value < 0 or not math.isfinite(value):
        raise ValueError(f"{name}: must be a number >= 0")
    return float(value)


def _rate_limit(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if not _is_number(value) or value < 0 or not math.isfinite(value):
        raise ValueError(f"{name}: must be null or a number >= 0")
    return float(value)


def _retry_after(name: str, value: Any) -> int:
    if not _is_integer(value) or value < 0:
        raise ValueError(f"{name}: must be an integer >= 0")
    return int(value)


def _seed(name: str, value: Any) -> int:
    if not _is_integer(value):
        raise ValueError(f"{name}: must be an integer")
    return int(value)


def _item_limit(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if not _is_integer(value) or value < 0:
        raise ValueError(f"{name}: must be null or an integer >= 0")
    return int(value)


def _status(name: str, value: Any) -> int:
    if not _is_integer(value) or not 200 <= value <= 599:
        raise ValueError(f"{name}: must be an HTTP status such as 401 or 200")
    return int(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: must be true or false")
    return value


def _id_set(name: str, value: Any) -> set[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name}: must be a list of strings")
    return set(value)


def _name_set(name: str, value: Any) -> set[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name}: must be null or a list of strings")
    return set(value)


def _misbehave(name: str, value: Any) -> str | None:
    if value is not None and value not in MISBEHAVIOURS:
        raise ValueError(f"{name}: must be null or one of {sorted(MISBEHAVIOURS)}")
    return value  # type: ignore[no-any-return]


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "token_lifetime": _seconds,
    "latency": _seconds,
    "error_rate": _dose,
    "drop_rate": _dose,
    "rate_limit": _rate_limit,
    "retry_after": _retry_after,
    "bulk_item_limit": _item_limit,
    "bulk_retry_rate": _share,
    "bulk_reject_rate": _share,
    "reject_ids": _id_set,
    "bulk_routes": _flag,
    "bad_key_status": _status,
    "strict_order": _flag,
    "seed": _seed,
    "misbehave": _misbehave,
    "event_names": _name_set,
    "foreign_page": _dose,
    "foreign_page_status": _status,
    "drop_after_apply": _dose,
    "slow_after_apply": _seconds,
}
assert set(_CHECKS) == FAULT_NAMES, "every fault knob needs a check"


def coerce_fault(name: str, value: Any) -> Any:
    """Check one Faults field given as JSON; return the value to set or raise ValueError."""
    check = _CHECKS.get(name)
    if check is None:
        raise ValueError(f"{name}: no such fault")
    return check(name, value)


def coerce_faults(changes: Any) -> dict[str, Any]:
    """Check a whole change (a JSON object of fields) before any of it is applied."""
    if not isinstance(changes, dict):
        raise ValueError("body must be a JSON object of Faults fields")
    return {name: coerce_fault(name, value) for name, value in changes.items()}
