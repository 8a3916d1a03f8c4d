"""The API client.

Most tests hand the client a scripted transport (the HTTP edge, not our code) and a fake
clock, so they need no sockets and no real sleeps; a handful at the end talk to the sandbox
over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpcore
import pytest

from connector import config
from connector.errors import ApiUnavailable, AuthError
from connector.lanes import translate
from connector.replies import Result
from connector.retry import Policy
from connector.sandbox import Faults, Sandbox
from connector.transport import Ready, Request, Response, TransportError
from connector.wiraya import Wiraya, contact_path, parse_expiry

KEY = "client-test-key-91c2"
BASE = "https://api.wiraya.test"
EVENT = {"at": "2026-11-26T10:00:00Z", "name": "Conversion", "schema": 1}
JSON = {"content-type": "application/json; charset=utf-8"}
HTML = Response(200, {"content-type": "text/html"}, b"<html>maintenance</html>")


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


# -- the seams: a fake clock and a scripted transport -------------------------------------

class FakeClock:
    """Time that moves only when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def reply(status: int = 200, body: Any = None, headers: dict[str, str] | None = None,
          raw: bytes | None = None) -> Response:
    content = raw if raw is not None else json.dumps(
        {"id": ["1"], "error": False, "failures": {}} if body is None else body).encode()
    return Response(status, {**JSON, **(headers or {})}, content)


def token_reply() -> Response:
    return reply(200, {"authenticated": True, "token": "tok-1",
                       "tokenExpires": "2999-01-01T00:00:00.0000000Z"})


Answer = Response | TransportError


@dataclass
class Scripted:
    """Answers each /api request from `script` (in order; the last one repeats), logins
    with a token; records what was sent and when (by the fake clock)."""

    script: list[Answer]
    clock: FakeClock | None = None
    sent: list[tuple[float, Request]] = field(default_factory=list)
    login: Callable[[], Response] = token_reply

    async def exchange(self, request: Request, ready: Ready) -> Response:
        await ready()
        self.sent.append((self.clock.now if self.clock else 0.0, request))
        if request.url.endswith("/auth/token/apikey"):
            return self.login()
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(answer, TransportError):
            raise answer
        return answer

    async def aclose(self) -> None:
        pass

    @property
    def api_calls(self) -> list[Request]:
        return [request for _, request in self.sent if "/api/" in request.url]


def client(script: list[Answer], clock: FakeClock | None = None, waits: bool = True,
           **extra: Any) -> tuple[Wiraya, Scripted, FakeClock]:
    clock = clock or FakeClock()
    transport = Scripted(script, clock)
    wiraya_settings = settings(BASE, **extra)
    policy = Policy.from_settings(wiraya_settings)
    if not waits:
        policy = Policy(max_attempts=policy.max_attempts, max_hold=policy.max_hold,
                        waits=False)
    return Wiraya(wiraya_settings, transport=transport, clock=clock, policy=policy), \
        transport, clock


def events(api: Wiraya, count: int = 1, **options: Any) -> dict[str, Result]:
    async def go() -> dict[str, Result]:
        async with api:
            return await api.send_events([(f"e{n}", str(n), EVENT) for n in range(count)],
                                         **options)
    result: dict[str, Result] = run(go())
    return result


def upsert_one(api: Wiraya) -> Result:
    async def go() -> Result:
        async with api:
            return (await api.upsert_contacts({"1": contact(1)}))["1"]
    result: Result = run(go())
    return result


def link_one(api: Wiraya) -> Result:
    async def go() -> Result:
        async with api:
            return (await api.link_contacts([("1", {"campaign": "flow"})]))[0]
    result: Result = run(go())
    return result


# -- every reply is judged ----------------------------------------------------------------

SENDERS = {"event": lambda api: events(api)["e0"], "contact": upsert_one, "link": link_one}


@pytest.mark.parametrize("route", sorted(SENDERS))
def test_an_html_page_with_200_is_a_failed_call_retried_like_a_5xx(route: str) -> None:
    api, transport, _ = client([HTML], max_attempts=3)
    result = SENDERS[route](api)
    assert not result.ok and result.retriable and not result.ambiguous
    assert "gave up after 3 attempts: 200 not Wiraya's answer: an HTML page" in result.reason
    assert "maintenance" in result.reason
    assert len(transport.api_calls) == 3


def test_an_html_page_in_a_bulk_reply_is_retried_and_then_accepted() -> None:
    api, transport, _ = client([HTML, reply()], bulk_size=10)

    async def go() -> dict[str, Result]:
        async with api:
            return await api.upsert_contacts({str(n): contact(n) for n in range(5)})

    results = run(go())
    assert all(result.ok for result in results.values())
    assert [r.attempts for r in results.values()] == [2] * 5
    assert len(transport.api_calls) == 2


def test_bulk_items_asked_to_retry_go_again_and_count_every_try() -> None:
    again = reply(200, {"id": [], "error": True, "failures": {"3": {"retry": True}}})
    api, transport, _ = client([again, reply()], bulk_size=10)

    async def go() -> dict[str, Result]:
        async with api:
            return await api.upsert_contacts({str(n): contact(n) for n in range(5)})

    results = run(go())
    assert all(result.ok for result in results.values())
    assert {cid: r.attempts for cid, r in results.items()} == {"0": 1, "1": 1, "2": 1,
                                                               "3": 2, "4": 1}
    assert len(transport.api_calls) == 2


@pytest.mark.parametrize("answer", [
    Response(404, {"content-type": "text/html"}, b"<!DOCTYPE html><h1>Not Found</h1>"),
    Response(200, {"content-type": "text/plain"}, b"OK"),
    Response(200, {}, b"<html>maintenance</html>"),  # no type: the body shows it is a page
    reply(200, ["accepted"]),  # JSON, but not the object the API answers
])
def test_replies_that_are_not_the_apis_answer_never_count_as_sent(answer: Response) -> None:
    api, transport, _ = client([answer], max_attempts=2)
    result = events(api)["e0"]
    assert not result.ok and result.retriable
    assert len(transport.api_calls) == 2  # retried like a 5xx


@pytest.mark.parametrize("answer", [
    Response(204, {}, b""), Response(200, {}, b""), reply(200, {}), reply(202, {"id": "x"})])
def test_an_event_reply_may_be_empty_or_any_json_object(answer: Response) -> None:
    api, transport, _ = client([answer])
    result = events(api)["e0"]
    assert result.ok and result.attempts == 1
    assert len(transport.api_calls) == 1


def test_a_contact_upsert_with_an_empty_200_is_not_accepted() -> None:
    api, _transport, _ = client([Response(200, {}, b"")], max_attempts=2)
    result = upsert_one(api)
    assert not result.ok and result.retriable and "empty reply" in result.reason


@pytest.mark.parametrize(("body", "accepted"), [
    ({"id": "4959"}, True), ({"id": ["4959"]}, True), ({}, True), ({"id": 4959}, False)])
def test_a_campaign_link_reply_has_its_id_as_a_string_or_a_list(body: Any,
                                                               accepted: bool) -> None:
    api, _transport, _ = client([reply(200, body)], max_attempts=2)
    assert link_one(api).ok is accepted


def test_a_json_refusal_is_final_and_a_proxy_page_with_the_same_status_is_not() -> None:
    refused = reply(404, {"error": True, "message": "no such contact"})
    api, transport, _ = client([refused])
    result = events(api)["e0"]
    assert (result.ok, result.retriable, result.status) == (False, False, 404)
    assert len(transport.api_calls) == 1


# -- ambiguous outcomes -------------------------------------------------------------------

def test_library_errors_are_sorted_into_sent_or_not() -> None:
    ambiguous = {name: translate(error).ambiguous for name, error in {
        "connect": httpcore.ConnectError("refused"),
        "connect timeout": httpcore.ConnectTimeout("slow"),
        "pool": httpcore.PoolTimeout("busy"), "proxy": httpcore.ProxyError("407"),
        "read timeout": httpcore.ReadTimeout("slow"),
        "reset": httpcore.ReadError("reset by peer"),
        "closed": httpcore.RemoteProtocolError("Server disconnected"),
        "write timeout": httpcore.WriteTimeout("slow")}.items()}
    assert ambiguous == {"connect": False, "connect timeout": False, "pool": False,
                         "proxy": False, "read timeout": True, "reset": True, "closed": True,
                         "write timeout": True}


def test_tries_that_got_no_reply_are_counted_as_ambiguous() -> None:
    lost = TransportError("no reply within the timeout", ambiguous=True)
    refused = TransportError("could not connect", ambiguous=False)
    api, _transport, _ = client([refused, lost, refused], max_attempts=3)
    result = events(api)["e0"]
    assert not result.ok and result.retriable and result.ambiguous
    assert (result.attempts, result.ambiguous_attempts) == (3, 1)

    api, _transport, _ = client([refused], max_attempts=3)
    result = events(api)["e0"]
    assert not result.ambiguous and (result.attempts, result.ambiguous_attempts) == (3, 0)

    api, _transport, _ = client([lost, reply()], max_attempts=3)
    result = events(api)["e0"]
    assert result.ok and not result.ambiguous  # accepted, though it may now be there twice
    assert (result.attempts, result.ambiguous_attempts) == (2, 1)


def test_an_event_never_gets_more_tries_than_its_budget() -> None:
    lost = TransportError("no reply within the timeout", ambiguous=True)
    api, transport, _ = client([lost], max_attempts=6)
    results = events(api, 3, budget={"e0": 2, "e1": 0})
    sent = [request.url.rsplit("/", 2)[-2] for request in transport.api_calls]
    assert (sent.count("0"), sent.count("1"), sent.count("2")) == (2, 0, 6)
    assert (results["e0"].attempts, results["e0"].ambiguous_attempts) == (2, 2)
    assert results["e1"].attempts == 0 and not results["e1"].ok
    assert "budget" in results["e1"].reason

    api, transport, _ = client([lost], max_attempts=3)
    events(api, budget={"e0": 50})
    assert len(transport.api_calls) == 3  # never more than max_attempts in one call


def test_the_idempotency_header_is_sent_only_when_configured() -> None:
    def headers(api: Wiraya, transport: Scripted, **options: Any) -> list[dict[str, str]]:
        events(api, 2, **options)
        return [dict(request.headers) for request in transport.api_calls]

    api, transport, _ = client([reply()], idempotency_header="Idempotency-Key")
    sent = headers(api, transport, idempotency_keys={"e0": "k-0", "e1": "k-1"})
    assert sorted(h["Idempotency-Key"] for h in sent) == ["k-0", "k-1"]

    api, transport, _ = client([reply()])
    sent = headers(api, transport, idempotency_keys={"e0": "k-0", "e1": "k-1"})
    assert all("Idempotency-Key" not in h for h in sent)


def test_a_bad_idempotency_header_name_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="not an HTTP header name"):
        settings(BASE, idempotency_header="Idempotency Key")


# -- Retry-After, pacing and backoff (fake clock) ---------------------------------------

def limited(seconds: int) -> Response:
    return reply(429, {"error": True}, {"retry-after": str(seconds)})


def test_a_hold_longer_than_max_hold_fails_the_call_without_waiting() -> None:
    api, transport, clock = client([limited(3600)], max_hold="5m")

    async def go() -> None:
        async with api:
            with pytest.raises(ApiUnavailable) as caught:
                await api.send_events([("e0", "1", EVENT)])
            assert str(caught.value) == (
                "Wiraya asked every call to wait 3600 s (Retry-After on "
                "/api/Contact/{id}/events), longer than wiraya.max_hold (5m); the pass stops "
                "and the next one starts from the same place")
            assert api.hold_remaining() == 3600
            calls = len(transport.api_calls)
            with pytest.raises(ApiUnavailable):  # the next call fails too, sending nothing
                await api.upsert_contacts({"1": contact(1)})
            assert len(transport.api_calls) == calls == 1

    run(go())
    assert clock.sleeps == []


def test_a_request_in_flight_when_the_pass_stops_is_still_heard() -> None:
    sent, answered = asyncio.Event(), asyncio.Event()

    class Gated(Scripted):
        async def exchange(self, request: Request, ready: Ready) -> Response:
            if request.url.endswith("/1/events"):  # in flight until the 429 has come
                await ready()
                sent.set()
                await answered.wait()
                for _ in range(3):  # the reply takes a while to read
                    await asyncio.sleep(0)
                return reply()
            answer = await super().exchange(request, ready)
            if answer.status == 429:
                await sent.wait()
                answered.set()
            return answer

    clock = FakeClock()
    api = Wiraya(settings(BASE, concurrency=2), transport=Gated([limited(3600)], clock),
                 clock=clock)
    heard: dict[str, Result] = {}

    async def go() -> None:
        async with api:
            with pytest.raises(ApiUnavailable):
                await api.send_events([("e0", "0", EVENT), ("e1", "1", EVENT)], heard.update)

    run(go())
    assert list(heard) == ["e1"] and heard["e1"].ok


def test_a_hold_within_max_hold_is_waited_out_by_every_call() -> None:
    api, transport, clock = client([limited(120), reply()], max_hold="5m")
    start = clock.now
    results = events(api, 3)
    assert all(result.ok for result in results.values())
    times = [at for at, request in transport.sent if "/api/" in request.url]
    assert times[0] == start and all(at >= start + 120 for at in times[1:])
    assert len(times) == 4  # the 429 is not an attempt: each event got through
    assert api.hold_remaining() == 0


def test_the_client_side_rate_limit_spaces_requests() -> None:
    api, transport, _clock = client([reply()], rate_limit="10/s", concurrency=1)
    events(api, 5)
    times = [at for at, request in transport.sent if "/api/" in request.url]
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(times)]
    assert gaps == [0.1] * 4


def test_with_waiting_off_nothing_sleeps_but_every_decision_is_made() -> None:
    api, transport, clock = client([limited(120), reply(503), reply()], waits=False,
                                   rate_limit="1/s")
    result = events(api)["e0"]
    assert result.ok and result.attempts == 2
    assert clock.sleeps == []
    assert len(transport.api_calls) == 3


def test_backoff_waits_between_tries_and_never_longer_than_backoff_max() -> None:
    api, _transport, clock = client([reply(503)], max_attempts=8, backoff="1s",
                                    backoff_max="4s")
    events(api)
    assert len(clock.sleeps) == 7 and max(clock.sleeps) <= 4


# -- the token ----------------------------------------------------------------------------

def test_the_token_is_refreshed_before_it_expires() -> None:
    clock = FakeClock()
    api, transport, _ = client([reply()], clock=clock)

    def login() -> Response:  # a token that lives 10 minutes
        expires = datetime.now(UTC) + timedelta(seconds=600)
        return reply(200, {"authenticated": True, "token": "t",
                           "tokenExpires": expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ")})

    transport.login = login

    async def go() -> None:
        async with api:
            await api.send_events([("e0", "1", EVENT)])
            clock.now += 580  # inside the 30 s refresh margin
            await api.send_events([("e1", "1", EVENT)])

    run(go())
    logins = [r for _, r in transport.sent if r.url.endswith("/auth/token/apikey")]
    assert len(logins) == 2


def test_a_401_fetches_a_new_token_once_and_retries_the_call() -> None:
    api, transport, _ = client([reply(401, {}), reply()])
    assert events(api)["e0"].ok
    logins = [r for _, r in transport.sent if r.url.endswith("/auth/token/apikey")]
    assert len(logins) == 2 and len(transport.api_calls) == 2


def test_a_token_refused_twice_is_an_auth_error() -> None:
    api, _transport, _ = client([reply(401, {})])
    with pytest.raises(AuthError, match="refused a fresh token"):
        events(api)


def test_a_login_answered_by_an_html_page_is_unavailable_not_a_refused_key() -> None:
    api, transport, _ = client([reply()], max_attempts=2)
    transport.login = lambda: HTML
    with pytest.raises(ApiUnavailable, match="not Wiraya's answer: an HTML page"):
        events(api)


# -- end to end: the sandbox over real HTTP ------------------------------------------------

@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(api_keys=[KEY]) as server:
        yield server


async def upsert(url: str, contacts: dict[str, dict[str, Any]], **extra: Any) -> Any:
    async with Wiraya(settings(url, **extra)) as api:
        return await api.upsert_contacts(contacts)


async def send(url: str, items: list[tuple[str, str, dict[str, Any]]],
               **extra: Any) -> dict[str, Result]:
    async with Wiraya(settings(url, **extra)) as api:
        return await api.send_events(items)


def test_a_dropped_connection_is_ambiguous_and_a_refused_one_is_not(sandbox: Sandbox) -> None:
    run(upsert(sandbox.url, {"1": contact(1)}))
    sandbox.faults.drop_rate = 1.0  # the request arrives, the connection closes unanswered
    dropped = run(send(sandbox.url, [("e0", "1", EVENT)], max_attempts=3))["e0"]
    assert not dropped.ok and dropped.retriable and dropped.ambiguous
    assert (dropped.attempts, dropped.ambiguous_attempts) == (3, 3)

    with socket.socket() as closed:  # a port nobody listens on: nothing can arrive
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        api = Wiraya(settings(url, max_attempts=2))

        async def go() -> Result:
            async with api:
                api._token, api._refresh_at = "t", float("inf")  # no login to fail first
                return (await api.send_events([("e0", "1", EVENT)]))["e0"]

        refused = run(go())
    assert not refused.ok and refused.retriable and not refused.ambiguous
    assert (refused.attempts, refused.ambiguous_attempts) == (2, 0)
    assert "nothing was sent" in refused.reason


def test_a_long_retry_after_from_the_sandbox_stops_the_call(sandbox: Sandbox) -> None:
    run(upsert(sandbox.url, {"1": contact(1)}))
    sandbox.faults.rate_limit = 0.001
    sandbox.faults.retry_after = 3600
    with pytest.raises(ApiUnavailable, match=r"wait 3600 s .* longer than wiraya.max_hold"):
        run(upsert(sandbox.url, {str(n): contact(n) for n in range(5)}, max_hold="1m"))


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
    # Up to `concurrency` requests may already be on their way when a 429 goes out; on a busy
    # machine they can reach the server a good 50 ms later. The holds last a second.
    assert sandbox.requests_during_holdback(grace=0.3) == []
    assert time.monotonic() - started >= 2  # the holds were honoured


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
