"""Bulk calls: up to `bulk_size` items in one body, per-item retries, and the fallbacks.

    too many items (400 bulkItemLimitExceeded, 413)  -> halve the body, remember the size
    no bulk route (404, 405)                         -> single calls from now on
    400 for the body                                 -> single calls find the bad item
    an item failed with {"retry": true}              -> a later body, up to max_attempts
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, Literal, Protocol, TypeVar

from connector.replies import Delivery, Result, Route, outcome
from connector.retry import Policy

log = logging.getLogger("connector.wiraya")

T = TypeVar("T")
Kind = Literal["contacts", "campaigns"]
Single = Callable[[str, dict[str, Any]], Awaitable[Result]]
Heard = Callable[[dict[str, Result]], None] | None
_BULK_ROUTE: dict[Kind, Route] = {"contacts": "contacts-bulk", "campaigns": "campaigns-bulk"}
_RETRY = -1  # the status of an item Wiraya asked to retry (a bulk `{"retry": true}`)


class Client(Protocol):
    """What bulk calls need of the client."""

    policy: Policy

    async def deliver(self, method: str, path: str, body: Any, route: Route) -> Delivery: ...

    async def fan_out(self, items: list[T], call: Callable[[T], Awaitable[None]]) -> None: ...

    async def pause(self, attempt: int) -> None: ...


class Bulk:
    """The bulk state of one client: the body size (it shrinks) and which routes exist."""

    def __init__(self, client: Client, size: int) -> None:
        self.client = client
        self.size = size
        self.routes: dict[Kind, bool] = {"contacts": size > 1, "campaigns": size > 1}
        self._seen: set[Kind] = set()

    def usable(self, kind: Kind) -> bool:
        return self.size > 1 and self.routes[kind]

    async def send(self, kind: Kind, method: str, path: str, items: dict[str, dict[str, Any]],
                   single: Single, done: Heard) -> dict[str, Result]:
        """Every item in bodies of up to `size`; each outcome is told to `done` when known."""
        results: dict[str, Result] = {}
        tries: dict[str, Result] = dict.fromkeys(items, _NO_TRIES)  # counts only
        todo = list(items)
        limit = self.client.policy.max_attempts
        while todo:
            batches = [todo[start:start + self.size] for start in range(0, len(todo), self.size)]
            retry: list[str] = []

            async def run(batch: list[str], retry: list[str] = retry) -> None:
                outcome = await self._once(kind, method, path, {c: items[c] for c in batch},
                                           single)
                final: dict[str, Result] = {}
                for cid, result in outcome.items():
                    counted = _add(tries[cid], result)
                    tries[cid] = counted
                    if result.status != _RETRY:
                        final[cid] = counted
                    elif counted.attempts >= limit:
                        why = "Wiraya asked for a retry" if result.reason == "retry" \
                            else result.reason
                        final[cid] = replace(counted, reason=f"{kind} {cid}: {why}, "
                                             f"{counted.attempts} times; giving up for now",
                                             status=200)
                    else:
                        retry.append(cid)
                results.update(final)
                if done is not None and final:
                    done(final)

            if kind not in self._seen and len(batches) > 1:
                # The first bulk call of a kind goes alone: if the route is missing, the
                # fallback is known before the other batches go out.
                await run(batches.pop(0))
                self._seen.add(kind)
            await self.client.fan_out(batches, run)
            if retry:
                await self.client.pause(max(tries[cid].attempts for cid in retry))
            todo = retry
        return results

    async def link(self, links: Sequence[tuple[str, dict[str, Any]]], single: Single,
                   done: Callable[[dict[int, Result]], None] | None) -> list[Result]:
        """Campaign links in bulk bodies. A body is keyed by contact id, so a contact's
        second link goes in a later round."""
        results: dict[int, Result] = {}
        pending = list(range(len(links)))
        while pending:
            round_items: dict[str, int] = {}
            later = []
            for index in pending:
                if links[index][0] in round_items:
                    later.append(index)
                else:
                    round_items[links[index][0]] = index

            def by_index(found: dict[str, Result],
                         round_items: dict[str, int] = round_items) -> None:
                if done is not None:
                    done({round_items[cid]: result for cid, result in found.items()})

            bodies = {cid: links[index][1] for cid, index in round_items.items()}
            found = await self.send("campaigns", "POST", "/api/contact/campaigns/_bulk",
                                    bodies, single, by_index)
            results.update((round_items[cid], result) for cid, result in found.items())
            pending = later
        return [results[index] for index in range(len(links))]

    async def _once(self, kind: Kind, method: str, path: str, batch: dict[str, dict[str, Any]],
                    single: Single) -> dict[str, Result]:
        """One bulk body. Items Wiraya asks to retry come back with `status == -1`."""
        if not self.routes[kind] or len(batch) == 1:
            return await _singles(batch, single)
        delivery = await self.client.deliver(method, path, batch, _BULK_ROUTE[kind])
        reply = delivery.reply
        data = reply.data if isinstance(reply.data, dict) else {}
        if reply.status == 413 or (reply.status == 400 and data.get("bulkItemLimitExceeded")):
            return await self._halve(kind, method, path, batch, single)
        if reply.status in (404, 405):
            if self.routes[kind]:
                self.routes[kind] = False
                log.warning("the bulk route %s answered %d: sending %s one call at a time",
                            path, reply.status, kind)
            return await _singles(batch, single)
        if reply.status == 400:
            # One bad item can make a whole body unreadable: find it with single calls.
            return await _singles(batch, single)
        if not 200 <= reply.status < 300 or reply.transient:
            return dict.fromkeys(batch, outcome(delivery, f"bulk {kind}"))
        failures = data.get("failures") or {}
        counts = Result(True, attempts=delivery.attempts,
                        ambiguous_attempts=delivery.ambiguous_attempts)
        results: dict[str, Result] = {}
        for cid in batch:
            failure = failures.get(cid)
            if failure is None:
                results[cid] = counts
            elif isinstance(failure, dict) and failure.get("retry") is True:
                results[cid] = replace(counts, ok=False, reason="retry", retriable=True,
                                       status=_RETRY)
            else:
                detail = json.dumps(failure)[:200]
                results[cid] = replace(counts, ok=False, status=200,
                                       reason=f"bulk {kind} {cid} refused: {detail}")
        return results

    async def _halve(self, kind: Kind, method: str, path: str,
                     batch: dict[str, dict[str, Any]], single: Single) -> dict[str, Result]:
        smaller = max(1, len(batch) // 2)
        if smaller < self.size:
            self.size = smaller
            log.warning("Wiraya refused %d items in one bulk call; sending at most %d from "
                        "now on (lower wiraya.bulk_size to skip this)", len(batch), smaller)
        halves = list(batch.items())
        done = await self._once(kind, method, path, dict(halves[:smaller]), single)
        done.update(await self._once(kind, method, path, dict(halves[smaller:]), single))
        return done


_NO_TRIES = Result(False)  # frozen: one for every item not tried yet


def _add(before: Result, result: Result) -> Result:
    """`result` with the tries counted so far added to its own."""
    if not before.attempts and not before.ambiguous_attempts and not (result.ok and
                                                                       result.ambiguous):
        return result  # nothing counted before: the sum is `result` itself, not a copy
    return replace(result, attempts=before.attempts + result.attempts,
                   ambiguous_attempts=before.ambiguous_attempts + result.ambiguous_attempts,
                   ambiguous=not result.ok and (result.ambiguous or before.ambiguous_attempts > 0))


async def _singles(batch: dict[str, dict[str, Any]], single: Single) -> dict[str, Result]:
    results: dict[str, Result] = {}
    for cid, body in batch.items():
        results[cid] = await single(cid, body)
    return results
