"""The API client against the sandbox over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from connector import config
from connector.errors import AuthError
from connector.sandbox import Faults, Sandbox
from connector.wiraya import Wiraya, contact_path, parse_expiry

KEY = "client-test-key-91c2"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(api_keys=[KEY]) as server:
        yield server


def settings(url: str, **extra: Any) -> config.Wiraya:
    values: dict[str, Any] = {"base_url": url, "api_key": KEY, "rate_limit": None,
                              "concurrency": 4, "bulk_size": 1, "backoff": "5ms",
                              "backoff_max": "20ms", "max_attempts": 6}
    values.update(extra)
    return config.Wiraya.model_validate(values)


def contact(n: int) -> dict[str, Any]:
    return {"schema": 1, "personal": {"phoneNumber": f"4670{1000000 + n}"}, "general": {}}


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def upsert(url: str, contacts: dict[str, dict[str, Any]], **extra: Any) -> Any:
    async with Wiraya(settings(url, **extra)) as api:
        return await api.upsert_contacts(contacts)


def test_token_expiry_with_seven_fractional_digits_is_read() -> None:
    moment = parse_expiry("2019-04-26T08:25:42.0418136Z")
    assert moment is not None
    assert (moment.second, moment.microsecond) == (42, 41813)
    assert parse_expiry("2019-04-26T08:25:42Z") is not None
    assert parse_expiry("not a time") is None
    assert parse_expiry(None) is None


def test_ids_with_any_character_arrive_intact(sandbox: Sandbox) -> None:
    ids = ["a/b", "q?x=1", "frag#1", "100%", "with space", "ünï", ".", "..", "+46"]
    results = run(upsert(sandbox.url, {cid: contact(i) for i, cid in enumerate(ids)}))
    assert all(result.ok for result in results.values()), results
    assert set(sandbox.contacts) == set(ids)
    assert contact_path("a/b") == "/api/Contact/a%2Fb"


def test_the_token_is_refreshed_before_it_expires(sandbox: Sandbox) -> None:
    sandbox.faults.token_lifetime = 1.0

    async def go() -> None:
        async with Wiraya(settings(sandbox.url)) as api:
            for n in range(6):
                results = await api.upsert_contacts({str(n): contact(n)})
                assert results[str(n)].ok
                await asyncio.sleep(0.3)

    run(go())
    logins = [r for r in sandbox.requests if r.path.lower() == "/auth/token/apikey"]
    refused = [r for r in sandbox.requests if r.status == 401]
    assert len(logins) >= 2  # refreshed on its own
    assert refused == []  # and never after it had expired


def test_an_expired_token_is_replaced_once_and_the_call_retried(sandbox: Sandbox) -> None:
    sandbox.faults.token_lifetime = 0.3

    async def go() -> None:
        async with Wiraya(settings(sandbox.url, token_refresh_margin="0s")) as api:
            await api.login()
            api._refresh_at = float("inf")  # pretend the expiry was not announced
            await asyncio.sleep(0.4)
            results = await api.upsert_contacts({"1": contact(1)})
            assert results["1"].ok

    run(go())
    assert [r.status for r in sandbox.requests if r.method == "PUT"] == [401, 200]


@pytest.mark.parametrize("status", [401, 200])
def test_a_refused_key_is_a_clear_error_without_the_key(sandbox: Sandbox, status: int) -> None:
    sandbox.faults.bad_key_status = status
    with pytest.raises(AuthError) as caught:
        run(upsert(sandbox.url, {"1": contact(1)}, api_key="wrong-key-abcdef"))
    assert "wrong-key-abcdef" not in str(caught.value)
    assert "check wiraya.api_key" in str(caught.value)


def test_a_bad_payload_is_refused_for_good_with_the_reply(sandbox: Sandbox) -> None:
    results = run(upsert(sandbox.url, {"1": {"schema": 2}, "2": contact(2)}))
    assert results["2"].ok
    assert not results["1"].ok and not results["1"].retriable
    assert "400" in results["1"].reason and "schema" in results["1"].reason
    assert sum(1 for r in sandbox.requests if r.status == 400) == 1  # not retried


def test_5xx_and_dropped_connections_are_retried(sandbox: Sandbox) -> None:
    sandbox.faults.error_rate = 0.3
    sandbox.faults.drop_rate = 0.2
    results = run(upsert(sandbox.url, {str(n): contact(n) for n in range(200)},
                         max_attempts=12))
    assert all(result.ok for result in results.values())
    assert len(sandbox.contacts) == 200
    statuses = {r.status for r in sandbox.requests}
    assert 503 in statuses and 0 in statuses


def test_a_row_is_given_up_after_max_attempts_and_may_be_retried(sandbox: Sandbox) -> None:
    sandbox.faults.error_rate = 1.0
    results = run(upsert(sandbox.url, {"1": contact(1)}, max_attempts=3))
    assert not results["1"].ok and results["1"].retriable
    assert "gave up after 3 attempts" in results["1"].reason
    assert sum(1 for r in sandbox.requests if r.method == "PUT") == 3


def test_retry_after_holds_back_every_worker(sandbox: Sandbox) -> None:
    sandbox.faults.rate_limit = 40
    sandbox.faults.retry_after = 1
    started = time.monotonic()
    results = run(upsert(sandbox.url, {str(n): contact(n) for n in range(150)},
                         concurrency=8))
    assert all(result.ok for result in results.values())
    assert any(r.status == 429 for r in sandbox.requests)
    assert sandbox.requests_during_holdback() == []
    assert time.monotonic() - started >= 2  # the holds were honoured


def test_the_client_side_rate_limit_is_kept(sandbox: Sandbox) -> None:
    started = time.monotonic()
    run(upsert(sandbox.url, {str(n): contact(n) for n in range(60)}, rate_limit="40/s",
               concurrency=8))
    elapsed = time.monotonic() - started
    # 60 requests at 40/s with a burst of at most 8: no less than (60 - 8) / 40 seconds.
    assert elapsed >= (60 - 8) / 40
    assert len(sandbox.contacts) == 60


def test_bulk_calls_split_when_the_item_limit_is_hit(sandbox: Sandbox,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    sandbox.faults.bulk_item_limit = 30
    with caplog.at_level(logging.WARNING, "connector"):
        results = run(upsert(sandbox.url, {str(n): contact(n) for n in range(250)},
                             bulk_size=100))
    assert all(result.ok for result in results.values())
    assert len(sandbox.contacts) == 250
    bulk = [r for r in sandbox.requests if "_bulk" in r.path and r.status == 200]
    assert max(r.items for r in bulk) <= 30
    assert "sending at most" in caplog.text


def test_bulk_item_failures_are_retried_or_refused(sandbox: Sandbox) -> None:
    sandbox.faults = Faults(bulk_retry_rate=0.3, reject_ids={"7", "8"}, seed=3)
    results = run(upsert(sandbox.url, {str(n): contact(n) for n in range(100)},
                         bulk_size=50, max_attempts=10))
    refused = {cid for cid, result in results.items() if not result.ok}
    assert refused == {"7", "8"}
    assert all(not results[cid].retriable for cid in refused)
    assert "refused" in results["7"].reason
    assert set(sandbox.contacts) == {str(n) for n in range(100)} - {"7", "8"}


def test_no_bulk_route_falls_back_to_single_calls(sandbox: Sandbox,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    sandbox.faults.bulk_routes = False
    with caplog.at_level(logging.WARNING, "connector"):
        results = run(upsert(sandbox.url, {str(n): contact(n) for n in range(40)},
                             bulk_size=20))
    assert all(result.ok for result in results.values())
    assert caplog.text.count("one call at a time") == 1
    assert sum(1 for r in sandbox.requests if "_bulk" in r.path) == 1


def test_links_and_events_go_after_their_contact(sandbox: Sandbox) -> None:
    async def go() -> None:
        async with Wiraya(settings(sandbox.url, bulk_size=10)) as api:
            await api.upsert_contacts({"1": contact(1), "2": contact(2)})
            links = await api.link_contacts([("1", {"campaign": "flow", "iteration": "2026-11"}),
                                             ("1", {"campaign": "other"}),
                                             ("2", {"campaign": "flow"})])
            assert all(result.ok for result in links)
            events = await api.send_events([("e1", "1", {"at": "2026-11-26T10:00:00Z",
                                                         "name": "Conversion", "schema": 1}),
                                            ("e2", "9", {"at": "2026-11-26T10:00:00Z",
                                                         "name": "Conversion", "schema": 1})])
            assert events["e1"].ok
            assert not events["e2"].ok and "404" in events["e2"].reason

    run(go())
    assert sorted(sandbox.links) == [("1", "flow", "2026-11"), ("1", "other", None),
                                     ("2", "flow", None)]
