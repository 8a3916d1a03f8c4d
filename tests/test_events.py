"""Conversions, opt-outs and campaign links on PostgreSQL with the sandbox."""

from __future__ import annotations

import json
import time
from collections import Counter

import psycopg
import pytest

from connector.sandbox import Sandbox
from connector.sync import Backfill
from tests.conftest import (
    CUSTOMERS,
    Database,
    add_customers,
    cli,
    customers_stream,
    run_passes,
)

ORDERS = """
CREATE TABLE orders (
    order_id    bigint PRIMARY KEY,
    customer_id bigint,
    amount      numeric(10, 2),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_created_at ON orders (created_at);
"""

CONVERSIONS = {"table": "orders", "id": "order_id", "contact": "customer_id",
               "cursor": "created_at", "name": "Conversion"}


def add_orders(db: Database, first: int, count: int, customers: int,
               at: str = "now()") -> None:
    db.execute(f"""
        INSERT INTO orders (order_id, customer_id, amount, created_at)
        SELECT i, 1 + i % {customers}, 10 + i % 90, {at}
        FROM generate_series({first}, {first + count - 1}) AS i""")


def event_ids(api: Sandbox) -> Counter[str]:
    return Counter(body["at"] + "/" + cid for cid, body in api.events)


@pytest.mark.slow  # child processes
def test_five_thousand_orders_make_five_thousand_events_once(db: Database, api: Sandbox,
                                                             write_config) -> None:
    db.execute(CUSTOMERS + ORDERS)
    add_customers(db, 1, 500)
    add_orders(db, 1, 5_000, customers=500,
               at="now() - interval '1 hour' + i * interval '1 millisecond'")
    path = write_config(contacts={"customers": customers_stream()},
                        events={"conversions": CONVERSIONS},
                        wiraya={"bulk_size": 100, "concurrency": 8})
    reports = run_passes(path)
    assert reports["conversions"].counts["sent"] == 5_000
    assert len(api.events) == 5_000
    assert {body["name"] for _, body in api.events} == {"Conversion"}
    assert all(set(body) == {"at", "name", "schema"} for _, body in api.events)

    # A rerun, a restart (a new process is the same as a new pass here: all state is in the
    # file) and a backfill of the same range add nothing.
    run_passes(path)
    run_passes(path, "conversions", how=Backfill())
    again = cli("--config", str(path), "sync")
    assert again.returncode == 0, again.stderr
    assert len(api.events) == 5_000

    # An order committed late, with a cursor value older than the watermark, still arrives.
    late = psycopg.connect(db.server.dsn(db.name), application_name="wiraya-connector")
    late.execute("INSERT INTO orders VALUES (9001, 7, 5, now())")
    time.sleep(0.05)
    add_orders(db, 9002, 1, customers=500, at="clock_timestamp()")
    run_passes(path)
    late.commit()
    late.close()
    run_passes(path)
    assert len(api.events) == 5_002
    assert max(event_ids(api).values()) == 1  # no event twice


@pytest.mark.slow
def test_an_event_waits_for_its_contact(db: Database, api: Sandbox, write_config) -> None:
    db.execute(CUSTOMERS + ORDERS)
    add_customers(db, 1, 3)
    db.execute("INSERT INTO orders VALUES (1, 1, 10, now()), (2, 4, 20, now()), "
               "(3, 99, 30, now())")
    path = write_config(contacts={"customers": customers_stream()},
                        events={"conversions": CONVERSIONS})
    reports = run_passes(path)
    assert reports["conversions"].counts["sent"] == 1
    assert reports["conversions"].counts["waiting"] == 2
    assert [cid for cid, _ in api.events] == ["1"]

    status = json.loads(cli("--config", str(path), "status", "--json").stdout)
    conversions = next(row for row in status if row["stream"] == "conversions")
    assert conversions["waiting"] == 2
    held = json.loads(cli("--config", str(path), "dead-letters", "list", "--json").stdout)
    reasons = {item["id"]: item["reason"] for item in held if item["state"] == "waiting"}
    assert reasons == {"2": "contact 4 not yet delivered by customers",
                       "3": "contact 99 not yet delivered by customers"}

    # Contact 4 arrives: its order goes right after it, in the same pass of the contacts.
    add_customers(db, 4, 1)
    reports = run_passes(path, "customers")
    assert reports["customers"].counts["released"] == 1
    order = [(r.method, r.path) for r in api.requests if r.path.startswith("/api/Contact/4")]
    assert order == [("PUT", "/api/Contact/4"), ("POST", "/api/Contact/4/events")]
    # Contact 99 never appears: its order keeps waiting, visibly, and is never dropped.
    run_passes(path)
    held = json.loads(cli("--config", str(path), "dead-letters", "list", "--json").stdout)
    assert [(item["id"], item["state"]) for item in held] == [("3", "waiting")]


@pytest.mark.slow
def test_an_event_of_a_dead_lettered_contact_says_why_it_waits(db: Database, api: Sandbox,
                                                              write_config) -> None:
    db.execute(CUSTOMERS + ORDERS)
    db.execute("INSERT INTO customers (customer_id, mobile) VALUES (1, 'not a number')")
    db.execute("INSERT INTO orders VALUES (1, 1, 10, now())")
    path = write_config(contacts={"customers": customers_stream()},
                        events={"conversions": CONVERSIONS})
    run_passes(path)
    held = json.loads(cli("--config", str(path), "dead-letters", "list", "--json").stdout)
    waiting = next(item for item in held if item["state"] == "waiting")
    assert waiting["reason"].startswith("contact 1 is a dead letter in customers: "
                                        "personal.phoneNumber")


@pytest.mark.slow
def test_a_refused_event_is_dead_lettered_with_the_reply(db: Database, api: Sandbox,
                                                        write_config) -> None:
    db.execute(ORDERS)
    db.execute("INSERT INTO orders VALUES (1, 1, 10, now()), (2, 2, 20, now())")
    api.faults.strict_order = False  # no contact stream: the contacts come from elsewhere
    api.faults.event_names = {"Conversion"}
    # Names are case-sensitive: Wiraya refuses this one (400).
    path = write_config(events={"conversions": dict(CONVERSIONS, name="conversion"),
                                "refunds": {"table": "orders", "id": "order_id",
                                            "contact": "customer_id", "cursor": "created_at",
                                            "fields": {"amount": "amount"}}})
    reports = run_passes(path)
    assert reports["conversions"].counts["dead"] == 2
    assert reports["refunds"].counts["sent"] == 2  # the other stream goes on
    assert sorted(body["amount"] for _, body in api.events) == [10, 20]

    held = json.loads(cli("--config", str(path), "dead-letters", "list", "--json").stdout)
    assert {item["id"] for item in held} == {"1", "2"}
    reason = held[0]["reason"]
    assert "400" in reason and "unknown event name 'conversion'" in reason

    # Unchanged, a refused event costs no request on the next pass.
    api.reset()
    run_passes(path)
    assert api.requests == []

    # Once Wiraya knows the name, a retry sends them, once.
    api.faults.event_names = None
    result = cli("--config", str(path), "dead-letters", "retry")
    assert result.returncode == 0, result.stderr
    assert len(api.events) == 2
    run_passes(path)
    assert len(api.events) == 2


def test_events_from_an_opt_out_column_go_once_per_change(db: Database, api: Sandbox,
                                                          write_config) -> None:
    db.execute(CUSTOMERS)
    db.execute("ALTER TABLE customers ADD COLUMN opted_out boolean NOT NULL DEFAULT false, "
               "ADD COLUMN opted_out_at timestamptz")
    add_customers(db, 1, 5)
    stream = customers_stream(events=[{"name": "OptOut",
                                       "when": {"column": "opted_out", "equals": True},
                                       "at": "opted_out_at"}])
    path = write_config(contacts={"customers": stream})
    run_passes(path)
    assert api.events == []

    db.execute("UPDATE customers SET opted_out = true, opted_out_at = "
               "'2026-11-20 10:00:00+00', updated_at = now() WHERE customer_id = 2")
    run_passes(path)
    run_passes(path)  # read again within the lookback: not sent again
    db.execute("UPDATE customers SET city = 'Elsewhere', updated_at = now() "
               "WHERE customer_id = 2")
    run_passes(path)  # changed, still opted out: no new event
    assert api.events == [("2", {"at": "2026-11-20T10:00:00Z", "name": "OptOut",
                                 "schema": 1})]

    # Back in, then out again: a new event.
    db.execute("UPDATE customers SET opted_out = false, updated_at = now() "
               "WHERE customer_id = 2")
    run_passes(path)
    db.execute("UPDATE customers SET opted_out = true, opted_out_at = "
               "'2026-11-25 08:30:00+00', updated_at = now() WHERE customer_id = 2")
    run_passes(path)
    assert [body["at"] for _, body in api.events] == ["2026-11-20T10:00:00Z",
                                                      "2026-11-25T08:30:00Z"]


def test_each_contact_is_linked_once_per_campaign_and_iteration(db: Database, api: Sandbox,
                                                                write_config) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 6)
    db.execute("UPDATE customers SET status = 'paused' WHERE customer_id = 6")
    campaign = {"campaign": "welcome-flow", "iteration": "2026-11",
                "when": {"column": "status", "equals": "active"}}
    path = write_config(contacts={"customers": customers_stream(campaign=campaign)},
                        wiraya={"bulk_size": 10})
    run_passes(path)
    assert sorted(api.links) == [(str(i), "welcome-flow", "2026-11") for i in range(1, 6)]
    # Every link came after its contact's upsert.
    assert api.summary()["requests_by_status"].get("404", 0) == 0

    # A change to a contact does not link it again; a contact turning active is linked.
    db.execute("UPDATE customers SET city = 'X', updated_at = now() WHERE customer_id = 1")
    db.execute("UPDATE customers SET status = 'active', updated_at = now() "
               "WHERE customer_id = 6")
    run_passes(path)
    assert len(api.links) == 6

    # A new iteration links again: change the config and read the table once more.
    campaign["iteration"] = "2026-12"
    path = write_config(contacts={"customers": customers_stream(campaign=campaign)},
                        wiraya={"bulk_size": 10})
    reports = run_passes(path, "customers", how=Backfill())
    assert reports["customers"].counts["sent"] == 0  # the contacts themselves did not change
    assert sorted(api.links[6:]) == [(str(i), "welcome-flow", "2026-12") for i in range(1, 7)]


def test_iteration_from_a_date_column(db: Database, api: Sandbox, write_config) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 2)
    db.execute("UPDATE customers SET created_at = '2026-10-31 23:30:00+00' "
               "WHERE customer_id = 1")
    db.execute("UPDATE customers SET created_at = '2026-11-02 08:00:00+00' "
               "WHERE customer_id = 2")
    campaign = {"campaign": "monthly", "iteration": {"column": "created_at",
                                                     "format": "%Y-%m"}}
    stream = customers_stream(campaign=campaign)
    path = write_config(contacts={"customers": stream}, source={"timezone": "Europe/Stockholm"})
    run_passes(path)
    # 23:30 UTC on 31 October is already November in Stockholm.
    assert sorted(api.links) == [("1", "monthly", "2026-11"), ("2", "monthly", "2026-11")]
