"""Replies that are not Wiraya's answer, and tries that get no answer at all, on real
PostgreSQL and the sandbox over HTTP.

Events are not idempotent at Wiraya: a resent event is a second event. Each test counts the
events per order that arrive.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from connector.sandbox import Next, Sandbox
from tests.conftest import Database, cli, run_passes

ORDERS = """
CREATE TABLE orders (
    order_id    bigint PRIMARY KEY,
    customer_id bigint NOT NULL,
    created_at  timestamptz NOT NULL
);
"""
CONVERSIONS = {"table": "orders", "id": "order_id", "contact": "customer_id",
               "cursor": "created_at", "name": "Conversion", "wait_for_contact": False}


def _orders(db: Database, count: int) -> None:
    db.execute(f"""INSERT INTO orders
        SELECT i, 100 + i, timestamptz '2026-11-20 10:00+00' + i * interval '1 s'
        FROM generate_series(1, {count}) AS i""")


def _per_order(api: Sandbox) -> Counter[str]:
    return Counter(cid for cid, _ in api.events)


def test_a_proxy_page_is_not_an_answer(db: Database, api: Sandbox, write_config) -> None:
    """A maintenance page from a proxy answered 200 to every call: nothing is recorded as
    sent, and the next pass, with the API back, sends each order once."""
    api.faults.strict_order = False
    db.execute(ORDERS)
    _orders(db, 20)
    path = write_config(events={"conversions": CONVERSIONS}, wiraya={"max_attempts": 2})
    api.faults.foreign_page = 1.0
    report = run_passes(path)["conversions"]
    assert (report.outcome, report.counts.sent, len(api.events)) == ("failed", 0, 0)
    assert "not JSON" in (report.error or "") or "text/html" in (report.error or "")

    api.faults.foreign_page = 0.0
    report = run_passes(path)["conversions"]
    run_passes(path)
    assert (report.outcome, report.counts.sent) == ("ok", 20)
    assert sorted(_per_order(api).values()) == [1] * 20


@pytest.mark.slow
def test_events_without_a_reply_have_a_budget_over_all_passes(db: Database, api: Sandbox,
                                                              write_config) -> None:
    """Every call takes effect and its connection is dropped before the reply: each try
    arrives. Ten passes send each order at most `max_attempts` times in all."""
    api.faults.strict_order = False
    db.execute(ORDERS)
    _orders(db, 5)
    path = write_config(events={"conversions": CONVERSIONS}, wiraya={"max_attempts": 3})
    api.faults.drop_after_apply = 1.0
    outcomes = [run_passes(path)["conversions"].outcome for _ in range(10)]
    assert sorted(_per_order(api).values()) == [3] * 5  # was 3 per pass: 30 each
    assert outcomes[0] == "failed"  # nothing answered: the pass says so (exit 1)

    held = json.loads(cli("--config", str(path), "dead-letters", "list", "--json").stdout)
    assert sorted(item["id"] for item in held) == ["1", "2", "3", "4", "5"]
    assert all(item["reason"].startswith("uncertain: may have arrived: 3 tries got no reply")
               for item in held), held[0]["reason"]

    # The API answers again: uncertain events are not resent by themselves...
    api.faults.drop_after_apply = 0.0
    run_passes(path)
    assert sum(_per_order(api).values()) == 15
    # ...but a retry, asked for, sends each once more, and that settles them.
    result = cli("--config", str(path), "dead-letters", "retry")
    assert result.returncode == 0, result.stderr
    run_passes(path)
    assert sorted(_per_order(api).values()) == [4] * 5
    assert json.loads(cli("--config", str(path), "dead-letters", "list", "--json").stdout) == []


def test_a_reply_after_the_timeout_counts_against_the_budget(db: Database, api: Sandbox,
                                                             write_config) -> None:
    """Wiraya takes the event, then answers after the client gave up waiting."""
    api.faults.strict_order = False
    db.execute(ORDERS)
    _orders(db, 3)
    path = write_config(events={"conversions": CONVERSIONS},
                        wiraya={"max_attempts": 2, "timeout": "300ms", "concurrency": 3})
    api.faults.slow_after_apply = 1.0
    for _ in range(4):
        run_passes(path)
    assert sorted(_per_order(api).values()) == [2, 2, 2]  # was 2 per pass: 8 each


def test_a_try_that_never_left_does_not_count(db: Database, api: Sandbox,
                                              write_config) -> None:
    """A 503 is an answer: the event did not arrive, so it is tried again on later passes
    without using the budget for tries that may have arrived."""
    api.faults.strict_order = False
    db.execute(ORDERS)
    _orders(db, 2)
    path = write_config(events={"conversions": CONVERSIONS}, wiraya={"max_attempts": 2})
    api.faults.error_rate = Next(8)  # two passes of two tries for both events
    run_passes(path)
    run_passes(path)
    assert api.events == []
    run_passes(path)
    assert sorted(_per_order(api).values()) == [1, 1]
