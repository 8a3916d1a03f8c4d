"""A plan -> Wiraya -> what was accepted, as a `Commit` for the state file.

What Wiraya accepted is written to the state file as each reply comes (not only at the end
of the page), so a crash resends at most the requests that were in flight. A contact with
links, events or a flag state to follow is first recorded without its input digest: until
the page is committed whole, those are not known to be done, so it is mapped again if read.
A contact whose upsert is its last step is recorded whole at once, and only then.

A dry run sends nothing: every item counts as accepted, and `on_send` hears each payload.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from connector.context import SendKind
from connector.errors import ApiUnavailable
from connector.mapping import Link, event_body
from connector.plan import ContactPlan, EventItem, EventPlan, dead_letter
from connector.state import Commit, Delivered, FlagState, LinkKey, Sent
from connector.values import Counts, Digest, iso_z, now_utc
from connector.wiraya import Result, Wiraya

log = logging.getLogger("connector.deliver")

FLAG = "\x1f"  # joins a contact id and an event name into one key

Record = Callable[[Commit], None]
OnSend = Callable[[SendKind, str, dict[str, Any]], None]


def fail_if_unreachable(what: str, results: Iterable[Result]) -> None:
    """When Wiraya took nothing of a page and every failure may pass, the API is down (or
    broken): fail the pass, leaving the page unread, rather than hold every row of it."""
    outcomes = list(results)
    if outcomes and not any(r.ok for r in outcomes) and all(r.retriable for r in outcomes):
        raise ApiUnavailable(f"Wiraya accepted none of {len(outcomes)} {what} "
                             f"({outcomes[0].reason}); the pass stops here and the next one "
                             "starts from the same place")


@dataclass
class Delivery:
    """Sends one stream's plans; `record` writes what was accepted as replies come."""

    stream: str
    api: Wiraya | None  # None: a dry run
    record: Record
    zone: tzinfo
    on_send: OnSend | None = None
    counts: Counts = field(default_factory=Counts)
    max_attempts: int = 6  # tries of an event that got no reply, over all passes

    async def contacts(self, plan: ContactPlan) -> Commit:
        """Upserts first (a link or an event needs its contact), then links and events."""
        commit = Commit(held=list(plan.held))
        # With no link or event to follow and no flag state to write with the page, an
        # accepted upsert is a contact's last step: it is written whole as its reply comes,
        # and not a second time with the page. (A crash before the page commit must not
        # leave a contact on record whose flag state was never written.)
        whole: dict[str, Digest] = {}
        if self.api is not None and not plan.links and not plan.emit:
            flagged = {flag.contact_id for flag in plan.record}
            whole = {key: digest for key, digest in plan.inputs.items() if key not in flagged}
        results = await self._upsert(plan.upsert, plan.digests, whole)
        fail_if_unreachable("contacts", results.values())
        present = set(plan.present)
        failed: set[str] = set()
        for key, result in results.items():
            if result.ok:
                present.add(key)
                self.counts.sent += 1
            else:
                failed.add(key)
                self._dead(commit, key, result, digest=plan.digests[key])
        await self._links([link for link in plan.links if link.contact_id in present],
                          commit, failed)
        emitted = await self._flag_events(plan, present, commit, failed)
        commit.flags += [flag for flag in plan.record if flag.contact_id in present
                         and (not flag.active or (flag.contact_id, flag.event) in emitted)]
        for key in present:
            if key in whole and key in results and results[key].ok:
                commit.recorded.append(key)
            else:
                # A contact whose link or event failed is mapped again next time it is read.
                commit.contacts.append(Delivered(
                    key, None if key in failed else plan.inputs[key], plan.digests[key]))
            if key not in failed and key in plan.on_record:
                commit.cleared.append(key)
        return commit

    async def events(self, plan: EventPlan) -> Commit:
        """Each event once. A try that went out and got no reply (a timeout, a connection
        lost after sending) may have arrived: such tries have a budget of `max_attempts`
        per event over all passes, after which the event is held as uncertain instead of
        being sent again and again."""
        commit = Commit(held=list(plan.held), cleared=list(plan.cleared))
        limit = self.max_attempts
        budget = {item.key: limit - plan.unanswered.get(item.key, 0) for item in plan.send}
        identity = {item.key: item.identity for item in plan.send}

        def as_replies_come(results: dict[str, Result]) -> Commit:
            return Commit(
                ledger=[Sent(key, identity[key]) for key, result in results.items()
                        if result.ok],
                held=[dead_letter(self.stream, key, result.reason, retriable=True,
                                  unanswered=result.ambiguous_attempts)
                      for key, result in results.items()
                      if not result.ok and result.ambiguous_attempts])

        items = [item for item in plan.send if budget[item.key] > 0]
        results = await self._events(items, as_replies_come, budget,
                                     {key: self._idempotency_key(key, value)
                                      for key, value in identity.items()})
        results.update({item.key: _spent(limit) for item in plan.send if budget[item.key] <= 0})
        fail_if_unreachable("events", results.values())
        contact = {item.key: item.contact_id for item in plan.send}
        for key, result in results.items():
            if result.ok:
                commit.ledger.append(Sent(key, identity[key]))
                self.counts.sent += 1
                if key in plan.on_record:
                    commit.cleared.append(key)
                continue
            tries = plan.unanswered.get(key, 0) + result.ambiguous_attempts
            if tries >= limit:
                result = _spent(tries, result.reason)
            self._dead(commit, key, result, digest=plan.digests[key], contact_id=contact[key])
        return commit

    def _idempotency_key(self, key: str, identity: bytes | None) -> str:
        return f"{self.stream}:{key}:{identity.hex() if identity else ''}"

    async def _links(self, links: list[LinkKey], commit: Commit, failed: set[str]) -> None:
        for link, result in zip(links, await self._link(links), strict=True):
            if result.ok:
                commit.links.append(link)
                self.counts.linked += 1
            else:
                failed.add(link.contact_id)
                self._dead(commit, link.contact_id, result)

    async def _flag_events(self, plan: ContactPlan, present: set[str], commit: Commit,
                           failed: set[str]) -> set[tuple[str, str]]:
        """Send the events of flags that just turned true; the pairs sent."""
        items = [EventItem(FLAG.join((flag.contact_id, flag.event)), flag.contact_id,
                           event_body(flag.event, flag.at or iso_z(now_utc(), self.zone)))
                 for flag in plan.emit if flag.contact_id in present]
        results = await self._events(items, lambda results: Commit(
            flags=[FlagState(*_flag(key), True) for key, result in results.items()
                   if result.ok]))
        emitted: set[tuple[str, str]] = set()
        for item in items:
            result = results[item.key]
            if result.ok:
                emitted.add((item.contact_id, item.body["name"]))
                self.counts.events += 1
            else:
                failed.add(item.contact_id)
                self._dead(commit, item.contact_id, result)
        return emitted

    def _dead(self, commit: Commit, key: str, result: Result, **details: Any) -> None:
        self.counts.dead += 1
        commit.held.append(dead_letter(self.stream, key, result.reason,
                                       retriable=result.retriable, **details))

    # -- the three calls (or, in a dry run, what they would send) -------------------------

    async def _upsert(self, send: dict[str, dict[str, Any]], digests: dict[str, bytes],
                      whole: dict[str, Digest]) -> dict[str, Result]:
        """An accepted contact is recorded as its reply comes: with its input digest when
        the upsert is its last step (`whole`), else with its payload digest only (the input
        digest comes with the page)."""
        if self.api is None:
            self._heard("contact", send.items())
            return {key: Result.accepted() for key in send}

        def done(results: dict[str, Result]) -> None:
            self.record(Commit(contacts=[
                Delivered(key, whole.get(key), digests[key])
                for key, result in results.items() if result.ok]))

        return await self.api.upsert_contacts(send, done)

    async def _link(self, links: list[LinkKey]) -> list[Result]:
        bodies = [(link.contact_id, Link(link.contact_id, link.campaign,
                                         link.iteration or None).body()) for link in links]
        if self.api is None:
            self._heard("link", bodies)
            return [Result.accepted() for _ in links]

        def done(results: dict[int, Result]) -> None:
            self.record(Commit(links=[links[index] for index, result in results.items()
                                      if result.ok]))

        return await self.api.link_contacts(bodies, done)

    async def _events(self, events: Sequence[EventItem],
                      commit_for: Callable[[dict[str, Result]], Commit],
                      budget: dict[str, int] | None = None,
                      idempotency_keys: dict[str, str] | None = None) -> dict[str, Result]:
        if self.api is None:
            self._heard("event", [(item.key, item.body) for item in events])
            return {item.key: Result.accepted() for item in events}

        def done(results: dict[str, Result]) -> None:
            self.record(commit_for(results))

        return await self.api.send_events(
            [(item.key, item.contact_id, item.body) for item in events], done,
            budget=budget, idempotency_keys=idempotency_keys)

    def _heard(self, kind: SendKind, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        if self.on_send is not None:
            for key, body in items:
                self.on_send(kind, key, body)


def _spent(tries: int, last: str = "") -> Result:
    """An event whose tries without a reply used up its budget: held, not sent again."""
    return Result(False, f"uncertain: may have arrived: {tries} tries got no reply"
                         + (f" (last: {last})" if last else "")
                         + "; not sent again by itself: `connector dead-letters retry` sends it "
                           "once more", retriable=False)


def _flag(key: str) -> tuple[str, str]:
    contact_id, _, event = key.partition(FLAG)
    return contact_id, event
