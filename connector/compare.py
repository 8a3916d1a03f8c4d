"""A full comparison of a contact stream's table: every `cursor: none` pass, and reconcile
passes of cursor streams.

The whole table is read in id order, in pages: narrow `(id, server digest)` pages where the
server digests rows (PostgreSQL), else full rows digested here. Each page goes through the
usual stages (`StreamPages.step`): only the rows whose digest is not the one on record are
read in full and sent. Memory is bounded by the page size.

Each comparison has a number; every contact on record that a page held is marked seen with
that number, inside the state file. When the whole table was read (no failure, no stop),
the contacts on record that were not seen are gone from the table: counted, sent as the
configured `on_delete` event, and forgotten (a row that comes back with the same id is a
new upsert). A partial read never concludes that a row was deleted. A comparison that read
no row at all concludes nothing either: an empty table is far more often a mistake (a
reload in progress, a lost grant) than every customer leaving at once.

Event streams are never compared: an event row that disappears is history, and nothing is
sent for it.
"""

from __future__ import annotations

from collections.abc import Sequence

from connector import config
from connector.context import Context
from connector.deliver import fail_if_unreachable
from connector.mapping import Rejected, as_key, event_body
from connector.page import StreamPages, read_ahead
from connector.source import Page
from connector.values import Position, iso_z, now_utc
from connector.wiraya import Result

__all__ = ["NARROW_FACTOR", "whole_table"]

# A narrow page (id and digest, some 30 bytes a row) holds this many times `page_size` rows:
# fewer round trips, memory still bounded by the page size.
NARROW_FACTOR = 4


async def whole_table(ctx: Context, pages: StreamPages, reconcile: bool = False) -> None:
    """Compare the whole table with the state file; send what changed, then the deletes."""
    name, state, writes = pages.name, ctx.state, not ctx.dry_run
    number = state.next_compare(name) if writes else 0
    pages.seen = number if writes else None
    size = pages.page_size * (NARROW_FACTOR if pages.bound.digest_salt is not None else 1)
    sent_before = pages.counts.sent
    read = 0

    def next_page(after: Position | None) -> Page | None:
        return ctx.source.compare_page(pages.bound, size,
                                       after.id if after is not None else None)

    async for page in read_ahead(ctx.stop, next_page, size):
        await pages.step(page)
        read += page.size
        if writes and page.packed is None:  # a packed page was marked by the state file
            state.mark_seen(name, page_keys(pages, page), number)
    if ctx.stop.is_set():
        pages.log.info("stopped before the whole table was read: no row is counted deleted")
        return
    if writes:
        pages.counts.deleted += await _deletes(ctx, pages, number, read)
    if reconcile:
        pages.log.info("reconcile found %d changed row(s) that the live passes had not sent "
                       "and %d deleted row(s)", pages.counts.sent - sent_before,
                       pages.counts.deleted)


def page_keys(pages: StreamPages, page: Page) -> list[str]:
    """The contact ids a page holds (ids that are no clean key are on record nowhere)."""
    if page.narrow is not None:
        ids = [(item.text, item.id) for item in page.narrow]
    else:
        rows = page.full.rows if page.full is not None else ()
        ids = [(None, pages.bound.id_of(row)) for row in rows]
    keys = []
    for text, raw in ids:
        try:
            keys.append(text if text is not None else as_key(raw))
        except Rejected:
            continue
    return keys


async def _deletes(ctx: Context, pages: StreamPages, number: int, read: int) -> int:
    """The contacts on record that comparison `number` did not see: handled as the stream's
    `on_delete` says, in batches of a page; returns how many were handled."""
    stream = pages.stream
    assert isinstance(stream, config.ContactStream)
    noticed = iso_z(now_utc(), ctx.settings.source.zone)
    done, after = 0, ""
    while batch := ctx.state.unseen(pages.name, number, after, pages.page_size):
        after = batch[-1]
        if read == 0:
            pages.log.warning("the whole table read no row, yet %s contact(s) are on record: "
                              "no row is counted deleted (an empty table is more often a "
                              "reload or a lost grant than every row deleted)",
                              "1000+" if len(batch) >= 1000 else len(batch))
            return 0
        async with pages.lock() as got:
            if not got:
                return done
            if isinstance(stream.on_delete, config.DeleteEvent):
                done += await _send_deleted(ctx, pages, batch, stream.on_delete.event,
                                            noticed, number)
            else:
                ctx.state.forget_deleted(pages.name, batch)
                done += len(batch)
    if done:
        pages.log.info("%d contact(s) deleted from the table since the last full comparison "
                       "(on_delete: %s)", done, _describe(stream.on_delete))
    return done


async def _send_deleted(ctx: Context, pages: StreamPages, keys: Sequence[str], event: str,
                        noticed: str, number: int) -> int:
    """One `event` per deleted contact; each accepted one is forgotten as its reply comes.
    A refused one stays on record, so the next complete read sends it again."""
    assert ctx.api is not None
    items = [(key, key, event_body(event, noticed)) for key in keys]

    def done(results: dict[str, Result]) -> None:
        ctx.state.forget_deleted(pages.name, [key for key, r in results.items() if r.ok])

    results = await ctx.api.send_events(
        items, done, idempotency_keys={key: f"{pages.name}:deleted:{key}:{number}"
                                       for key in keys})
    fail_if_unreachable("deletion events", results.values())
    refused = [(key, r.reason) for key, r in results.items() if not r.ok]
    if refused:
        pages.log.warning("%d deletion event(s) %s were not accepted (e.g. contact %s: %s); "
                          "the next full comparison sends them again", len(refused), event,
                          refused[0][0], refused[0][1])
    pages.counts.events += len(keys) - len(refused)
    return len(keys) - len(refused)


def _describe(on_delete: str | config.DeleteEvent) -> str:
    return on_delete if isinstance(on_delete, str) else f"event {on_delete.event}"
