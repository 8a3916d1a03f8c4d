"""Event rows whose ids come back: a truncated table, a recreated one, a reused id.

An event is sent once per source row; a new row that happens to carry an old row's id is a
new event (a lost opt-out means calling a person who asked not to be called).
"""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from connector.sandbox import Sandbox
from tests.conftest import Database, run_passes

ORDERS = """
CREATE TABLE orders (
    order_id    bigserial PRIMARY KEY,
    customer_id bigint NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX ON orders (created_at);
"""
OPT_OUTS = """
CREATE TABLE unsubscribes (
    id              serial PRIMARY KEY,
    customer_id     bigint NOT NULL,
    unsubscribed_at timestamptz NOT NULL
);
"""
CONVERSIONS = {"table": "orders", "id": "order_id", "contact": "customer_id",
               "cursor": "created_at", "name": "Conversion", "wait_for_contact": False}


def opt_outs(lookback: int) -> dict[str, object]:
    return {"table": "unsubscribes", "id": "id", "contact": "customer_id", "cursor": "id",
            "at": "unsubscribed_at", "name": "OptOut", "lookback": lookback,
            "wait_for_contact": False}


def _orders(db: Database, count: int, day: int) -> None:
    db.execute(f"""INSERT INTO orders (customer_id, created_at)
        SELECT 100 * {day} + i, timestamptz '2026-11-{day:02d} 10:00+00' + i * interval '1 s'
        FROM generate_series(1, {count}) AS i""")


def _opt_outs(db: Database, customers: range, day: int) -> None:
    for customer in customers:
        db.execute("INSERT INTO unsubscribes (customer_id, unsubscribed_at) VALUES "
                   "(%s, %s)", (customer, f"2026-11-{day:02d} 09:{customer % 60:02d}+00"))


def _sent(api: Sandbox, name: str) -> Counter[tuple[str, str]]:
    return Counter((cid, body["at"]) for cid, body in api.events if body["name"] == name)


@pytest.mark.parametrize("lookback", [1000, 1])
def test_new_rows_after_truncate_restart_identity_are_sent(db: Database, api: Sandbox,
                                                           write_config, caplog,
                                                           lookback: int) -> None:
    api.faults.strict_order = False
    db.execute(ORDERS + OPT_OUTS)
    _orders(db, 20, day=2)
    _opt_outs(db, range(1, 4), day=2)
    path = write_config(events={"conversions": CONVERSIONS, "opt_outs": opt_outs(lookback)})
    run_passes(path)
    assert (len(_sent(api, "Conversion")), len(_sent(api, "OptOut"))) == (20, 3)

    db.execute("TRUNCATE orders, unsubscribes RESTART IDENTITY")
    _orders(db, 20, day=3)  # ids 1..20 again, other customers, another day
    _opt_outs(db, range(11, 14), day=3)  # ids 1..3 again
    with caplog.at_level(logging.INFO, logger="connector"):
        run_passes(path)
    conversions, opt_out_events = _sent(api, "Conversion"), _sent(api, "OptOut")
    skipped = (40 - len(conversions), 6 - len(opt_out_events))
    assert skipped == (0, 0)
    assert max(conversions.values()) == max(opt_out_events.values()) == 1
    if lookback == 1:  # the watermark stood above every id now in the table
        assert any("truncated" in record.getMessage() for record in caplog.records)

    run_passes(path)  # and nothing twice
    assert (len(api.events)) == 46


def test_a_recreated_table_and_a_reused_id_are_new_events(db: Database, api: Sandbox,
                                                          write_config) -> None:
    api.faults.strict_order = False
    db.execute(OPT_OUTS)
    _opt_outs(db, range(1, 4), day=2)
    path = write_config(events={"opt_outs": opt_outs(1000)})
    run_passes(path)
    assert len(api.events) == 3

    db.execute("DROP TABLE unsubscribes")
    db.execute(OPT_OUTS)
    _opt_outs(db, range(21, 24), day=4)
    run_passes(path)
    assert len(_sent(api, "OptOut")) == 6

    # One row deleted, its id given to a new row: a new opt-out.
    db.execute("DELETE FROM unsubscribes WHERE id = 2")
    db.execute("INSERT INTO unsubscribes VALUES (2, 77, '2026-11-05 12:00+00')")
    run_passes(path)
    run_passes(path)
    assert _sent(api, "OptOut")[("77", "2026-11-05T12:00:00Z")] == 1
    assert len(api.events) == 7
