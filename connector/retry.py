"""When the client may send: retries with backoff, the client-side rate limit and the
`Retry-After` hold, all in one frozen policy and one clock that tests can replace.

    Policy   what to do (attempts, backoff, rate, the longest hold obeyed, whether to wait)
    Clock    how time passes (monotonic + sleep); tests pass a fake one
    Pacer    the shared state: the rate limit's next slot and the hold every call obeys

With `Policy(waits=False)` nothing ever sleeps (the stamina-style test switch): retries,
pacing and holds are still decided and counted, only not waited for.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Protocol

from connector import config
from connector.errors import ApiUnavailable


class Clock(Protocol):
    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True, kw_only=True)
class Policy:
    """How hard to try, how fast to go and how long to hold back."""

    max_attempts: int = 6  # tries of one call on a transient failure (5xx, timeout, not JSON)
    backoff: float = 0.5  # seconds: the first backoff's ceiling, doubled per attempt
    backoff_max: float = 30.0  # seconds: no backoff is longer than this
    rate: float | None = None  # requests per second for the whole client; None: no limit
    burst: int = 1  # requests that may go at once before the rate applies
    max_hold: float = 300.0  # seconds: a longer Retry-After fails the call instead of waiting
    waits: bool = True  # False: never sleep (tests); every decision is still made

    @classmethod
    def from_settings(cls, settings: config.Wiraya) -> Policy:
        rate = settings.rate_limit
        return cls(max_attempts=settings.max_attempts,
                   backoff=settings.backoff.total_seconds(),
                   backoff_max=settings.backoff_max.total_seconds(),
                   rate=rate, burst=min(settings.concurrency, int(rate or 1) or 1),
                   max_hold=settings.max_hold.total_seconds())

    def backoff_for(self, attempt: int, draw: float | None = None) -> float:
        """Full jitter: a random wait up to backoff * 2^(attempt-1), capped at backoff_max."""
        ceiling = min(self.backoff_max, self.backoff * 2 ** (attempt - 1))
        return float(ceiling * (random.random() if draw is None else draw))


def duration_text(seconds: float) -> str:
    """`300` -> `5m`, `90` -> `90s`: how a duration is written in the config."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


class Pacer:
    """A shared rate limit (GCRA with a small burst) and a shared `Retry-After` hold."""

    def __init__(self, policy: Policy, clock: Clock) -> None:
        self.policy = policy
        self.clock = clock
        self.interval = 1.0 / policy.rate if policy.rate else 0.0
        self.burst = max(1, policy.burst)
        self._tat = 0.0  # theoretical arrival time of the next request
        self.hold_until = 0.0
        self._asked = 0.0  # the Retry-After behind the current hold, in seconds
        self._where = ""  # the path whose reply announced it

    def hold(self, seconds: float, where: str) -> None:
        """Every call waits `seconds` from now (a 429's Retry-After on `where`)."""
        until = self.clock.monotonic() + seconds
        if until > self.hold_until:
            self.hold_until, self._asked, self._where = until, seconds, where

    def remaining(self) -> float:
        return max(0.0, self.hold_until - self.clock.monotonic())

    def check_hold(self) -> None:
        """Fail now, without waiting, when the hold is longer than the policy obeys."""
        if self.remaining() > self.policy.max_hold:
            raise ApiUnavailable(
                f"Wiraya asked every call to wait {self._asked:.0f} s (Retry-After on "
                f"{self._where}), longer than wiraya.max_hold "
                f"({duration_text(self.policy.max_hold)}); the pass stops and the next one "
                "starts from the same place")

    async def sleep(self, seconds: float) -> None:
        if self.policy.waits and seconds > 0:
            await self.clock.sleep(seconds)

    async def wait_hold(self) -> None:
        self.check_hold()
        while self.policy.waits and (left := self.remaining()) > 0:
            await self.clock.sleep(left)

    async def ready(self) -> None:
        """Return when a request may be sent now; raise when the hold is too long."""
        while True:
            await self.wait_hold()
            if self.interval:
                now = self.clock.monotonic()
                start = max(self._tat, now - (self.burst - 1) * self.interval)
                self._tat = start + self.interval
                await self.sleep(start - now)
            if not self.policy.waits or self.clock.monotonic() >= self.hold_until:
                return
