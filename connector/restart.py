"""A stream whose table is not the one it was read from: truncated, recreated, ids restarted.

After `TRUNCATE ... RESTART IDENTITY` or a drop and create, new rows take ids (and, for an
integer cursor, cursor values) at or below the watermark: read from the watermark on, they
would never be read. So the stream starts again from the start of its table. What was
delivered stays on record: unchanged contacts are not sent again, and the event ledger knows
each event by its contact and time as well as its row id (`mapping.event_identity`), so an
old event is not resent and a new one that reuses an old id is not skipped.

PostgreSQL tells a new table by its oid and file node (`Source.table_identity`); elsewhere
(and on PostgreSQL too) an integer cursor whose highest value fell below the watermark says
the same (`window.Window.restarted`).
"""

from __future__ import annotations

from connector.context import Context
from connector.page import StreamPages
from connector.values import Position


def watermark_of_this_table(ctx: Context, pages: StreamPages) -> Position | None:
    """The stream's watermark, or None when its table is new since the last pass."""
    high = ctx.state.watermark(pages.name)
    identity = ctx.source.table_identity(pages.bound)
    saved = ctx.state.table_identity(pages.name)
    if identity is None or identity == saved or ctx.dry_run:
        return high
    if saved is None:  # the first pass (or the first since an upgrade): nothing to compare
        ctx.state.note_table_identity(pages.name, identity)
        return high
    from_the_start(ctx, pages, "the table was truncated, recreated or rewritten (VACUUM FULL, "
                               "CLUSTER)", identity)
    return None


def from_the_start(ctx: Context, pages: StreamPages, why: str,
                   identity: str | None = None) -> None:
    """Say why, and forget where the stream was read to (keeping what was delivered)."""
    pages.log.warning("%s: reading it from the start; events already sent are not sent again",
                      why)
    if not ctx.dry_run:
        ctx.state.restart_stream(pages.name, identity or ctx.state.table_identity(pages.name))
