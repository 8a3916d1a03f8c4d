"""The fake Wiraya API (connector.sandbox), tested over real HTTP with httpx."""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.sandbox import Faults, Next, RequestRecord, Sandbox

KEY = "sandbox-key"
JSON = {"Content-Type": "application/json; charset=utf-8"}
CONTACT: dict[str, Any] = {
    "schema": 1,
    "personal": {
        "phoneNumber": "46704134561",
        "givenName": "John",
        "surName": "Doe",
        "title": "Mr",
        "gender": "Male",
        "birthDate": "1980-01-01",
    },
    "general": {
        "city": "Testershire",
        "county": "Dorset",
        "country": "UK",
        "timeOfRegistration": "2018-03-30T16:43:11Z",
        "postCode": "DT11 0PS",
        "accountStatus": "active",
        "forgotPasswdTimes": 7,
        "latestClientDetailUpdate": "2018-04-11T11:21:43Z",
        "nrLogins": 6,
        "latestLogin": "2018-05-07T19:22:11Z",
    },
}
# One TLS context for every client: httpx builds a new one per client otherwise (slow).
TLS = ssl.create_default_context()
EVENT = {"at": "2017-01-02T03:04:05Z", "name": "Conversion", "schema": 1}


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    sandbox = Sandbox().start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def client(sb: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sb.url, timeout=5.0, verify=TLS) as c:
        yield c


def token(client: httpx.Client, key: str = KEY) -> str:
    r = client.post("/auth/token/apikey", json={"key": key})
    assert r.status_code == 200, r.text
    tok = r.json()["token"]
    assert isinstance(tok, str)
    return tok


@pytest.fixture
def api(client: httpx.Client) -> httpx.Client:
    """The client, with a bearer token and JSON content type on every call."""
    client.headers.update({"Authorization": f"Bearer {token(client)}", **JSON})
    return client


def put_contact(api: httpx.Client, cid: str, body: Any = None) -> httpx.Response:
    return api.put(f"/api/Contact/{cid}", content=json.dumps(CONTACT if body is None else body))


def post(api: httpx.Client, path: str, body: Any) -> httpx.Response:
    return api.post(path, content=json.dumps(body))


def put(api: httpx.Client, path: str, body: Any) -> httpx.Response:
    return api.put(path, content=json.dumps(body))


def encode_all(text: str) -> str:
    """Percent-encode every byte but ASCII letters and digits (so '.' and '..' survive too)."""
    return "".join(chr(b) if chr(b).isalnum() and b < 128 else f"%{b:02X}" for b in text.encode())


# --- auth -------------------------------------------------------------------------------------


def test_token_is_issued_with_dotnet_expiry(client: httpx.Client) -> None:
    r = client.post("/auth/token/apikey", json={"key": KEY})
    assert r.status_code == 200
    body = r.json()
    assert body["authenticated"] is True
    assert body["token"]
    stamp = body["tokenExpires"]
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{7})Z", stamp)
    assert m, stamp
    expires = datetime.strptime(m[1], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    assert abs(expires - (datetime.now(UTC) + timedelta(seconds=300))) < timedelta(seconds=5)
    assert client.post("/auth/token/apikey", json={"key": KEY}).json()["token"] != body["token"]


def test_token_expires(sb: Sandbox, client: httpx.Client) -> None:
    sb.faults.token_lifetime = 0.5
    tok = token(client)
    headers = {"Authorization": f"Bearer {tok}", **JSON}
    body = json.dumps(CONTACT)
    assert client.put("/api/Contact/1", content=body, headers=headers).status_code == 200
    time.sleep(0.6)
    r = client.put("/api/Contact/1", content=body, headers=headers)
    assert r.status_code == 401
    assert r.json() == {"error": "unauthorized"}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}],
    ids=["none", "unknown-token", "not-bearer"],
)
def test_api_needs_a_known_token(client: httpx.Client, headers: dict[str, str]) -> None:
    r = client.put("/api/Contact/1", content=json.dumps(CONTACT), headers={**JSON, **headers})
    assert r.status_code == 401
    assert r.json() == {"error": "unauthorized"}


def test_bad_key_is_401(client: httpx.Client) -> None:
    r = client.post("/auth/token/apikey", json={"key": "wrong"})
    assert r.status_code == 401
    assert r.json() == {"authenticated": False}


def test_bad_key_200_variant(sb: Sandbox, client: httpx.Client) -> None:
    sb.faults.bad_key_status = 200
    r = client.post("/auth/token/apikey", json={"key": "wrong"})
    assert r.status_code == 200
    assert r.json() == {"authenticated": False}


def test_auth_body_must_be_json_with_key(client: httpx.Client) -> None:
    assert client.post("/auth/token/apikey", json={}).status_code == 400
    assert client.post("/auth/token/apikey", content=b"{", headers=JSON).status_code == 400
    assert client.get("/auth/token/apikey").status_code == 405


def test_faults_do_not_touch_auth(sb: Sandbox, client: httpx.Client) -> None:
    sb.faults.error_rate = 1.0
    sb.faults.drop_rate = 1.0
    sb.faults.misbehave = "hang"
    sb.faults.rate_limit = 0.0
    for _ in range(3):
        assert client.post("/auth/token/apikey", json={"key": KEY}).status_code == 200


def test_several_api_keys() -> None:
    with Sandbox(api_keys=["a", "b"]) as sb, httpx.Client(base_url=sb.url, verify=TLS) as c:
        assert token(c, "a") and token(c, "b")
        assert c.post("/auth/token/apikey", json={"key": KEY}).status_code == 401


# --- routing ----------------------------------------------------------------------------------


def test_routes_are_case_insensitive(sb: Sandbox, client: httpx.Client) -> None:
    tok = client.post("/AUTH/Token/ApiKey", json={"key": KEY}).json()["token"]
    client.headers.update({"Authorization": f"Bearer {tok}", **JSON})
    assert put_contact(client, "Mixed").status_code == 200
    assert put(client, "/API/CONTACT/other", CONTACT).status_code == 200
    assert post(client, "/api/contact/Mixed/CAMPAIGNS", {"campaign": "c"}).status_code == 200
    assert post(client, "/Api/Contact/Mixed/Events", EVENT).status_code == 200
    assert put(client, "/api/Contact/_BULK", {"x": CONTACT}).status_code == 200
    r = post(client, "/API/Contact/Campaigns/_Bulk", {"x": {"campaign": "c"}})
    assert r.status_code == 200
    # Ids keep their case; paths are recorded as sent.
    assert set(sb.contacts) == {"Mixed", "other", "x"}
    assert "/API/CONTACT/other" in [rec.path for rec in sb.requests]


def test_url_encoded_ids(sb: Sandbox, api: httpx.Client) -> None:
    assert put_contact(api, "a%2Fb%3F%23%25").status_code == 200
    assert post(api, "/api/Contact/a%2Fb%3F%23%25/campaigns", {"campaign": "c"}).status_code == 200
    assert post(api, "/api/Contact/a%2Fb%3F%23%25/events", EVENT).status_code == 200
    assert list(sb.contacts) == ["a/b?#%"]
    assert sb.links == [("a/b?#%", "c", None)]
    assert sb.events[0][0] == "a/b?#%"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cid=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20))
def test_any_id_round_trips(sb: Sandbox, api: httpx.Client, cid: str) -> None:
    assert put_contact(api, encode_all(cid)).status_code == 200
    assert cid in sb.contacts


def test_query_string_is_ignored(sb: Sandbox, api: httpx.Client) -> None:
    assert put(api, "/api/Contact/q?x=1", CONTACT).status_code == 200
    assert list(sb.contacts) == ["q"]
    assert sb.requests[-1].path == "/api/Contact/q"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/Contact/1", 405),
        ("POST", "/api/Contact/1", 405),
        ("DELETE", "/api/Contact/1", 405),
        ("PUT", "/api/Contact/1/campaigns", 405),
        ("GET", "/api/contact/_bulk", 405),
        ("PUT", "/api/contact/campaigns/_bulk", 405),
        ("GET", "/api/nothing", 404),
        ("PUT", "/api/Contact/", 404),
        ("PUT", "/api/Contact/1/2", 404),
        ("POST", "/api/Contact/1/events/x", 404),
        ("GET", "/", 404),
        ("GET", "/elsewhere", 404),
    ],
)
def test_unknown_routes_and_methods(api: httpx.Client, method: str, path: str, status: int) -> None:
    r = api.request(method, path, content=json.dumps(CONTACT))
    assert r.status_code == status
    if status == 404:
        assert r.json() == {"error": "no such route"}


def test_unknown_api_route_still_needs_auth(client: httpx.Client) -> None:
    assert client.get("/api/nothing").status_code == 401


# --- contacts ---------------------------------------------------------------------------------


def with_part(part: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(CONTACT))
    body[part].update(changes)
    return body


CONTACT_TABLE: list[tuple[str, Any, int]] = [
    ("full-sample", CONTACT, 200),
    ("schema-only", {"schema": 1}, 200),
    ("custom-keys", {"schema": 1, "general": {"tier": "gold", "score": 1.5, "vip": True}}, 200),
    ("null-values", {"schema": 1, "general": {"city": None}}, 200),
    ("fractional-time", with_part("general", latestLogin="2016-04-11T09:11:43.573921Z"), 200),
    ("time-in-personal", with_part("personal", latestLogin="2016-04-11T09:11:43Z"), 200),
    ("phone-7-digits", with_part("personal", phoneNumber="4670413"), 200),
    ("phone-15-digits", with_part("personal", phoneNumber="467041345612345"), 200),
    ("no-schema", {"personal": {"phoneNumber": "46704134561"}}, 400),
    ("schema-2", {"schema": 2}, 400),
    ("schema-string", {"schema": "1"}, 400),
    ("schema-true", {"schema": True}, 400),
    ("schema-float", {"schema": 1.0}, 400),
    ("personal-list", {"schema": 1, "personal": ["x"]}, 400),
    ("personal-null", {"schema": 1, "personal": None}, 400),
    ("general-string", {"schema": 1, "general": "x"}, 400),
    ("nested-object", with_part("general", address={"street": "x"}), 400),
    ("nested-list", with_part("personal", tags=["a"]), 400),
    ("phone-plus", with_part("personal", phoneNumber="+46704134561"), 400),
    ("phone-00", with_part("personal", phoneNumber="0046704134561"), 400),
    ("phone-trunk-0", with_part("personal", phoneNumber="0704134561"), 400),
    ("phone-6-digits", with_part("personal", phoneNumber="467041"), 400),
    ("phone-16-digits", with_part("personal", phoneNumber="4670413456123456"), 400),
    ("phone-number-type", with_part("personal", phoneNumber=46704134561), 400),
    ("phone-spaces", with_part("personal", phoneNumber="46 70 413 45 61"), 400),
    ("phone-arabic-digits", with_part("personal", phoneNumber="٤٦٧٠٤١٣٤٥٦١"), 400),
    ("phone-null", with_part("personal", phoneNumber=None), 400),
    ("birth-compact", with_part("personal", birthDate="19800101"), 400),
    ("birth-not-real", with_part("personal", birthDate="2019-02-30"), 400),
    ("birth-with-time", with_part("personal", birthDate="1980-01-01T00:00:00Z"), 400),
    ("time-no-z", with_part("general", timeOfRegistration="2018-03-30T16:43:11"), 400),
    ("time-offset", with_part("general", latestLogin="2018-05-07T19:22:11+00:00"), 400),
    ("time-space", with_part("general", latestLogin="2018-05-07 19:22:11Z"), 400),
    ("time-not-real", with_part("general", latestLogin="2018-13-07T19:22:11Z"), 400),
    ("time-number", with_part("general", latestClientDetailUpdate=1525720931), 400),
    ("body-list", [CONTACT], 400),
    ("body-string", "contact", 400),
]


@pytest.mark.parametrize(
    ("body", "status"), [(b, s) for _, b, s in CONTACT_TABLE], ids=[n for n, _, _ in CONTACT_TABLE]
)
def test_contact_validation(sb: Sandbox, api: httpx.Client, body: Any, status: int) -> None:
    r = put_contact(api, "c1", body)
    assert r.status_code == status, r.text
    if status == 200:
        reply = r.json()
        assert reply["error"] is False and reply["failures"] == {}
        assert isinstance(reply["id"], list) and isinstance(reply["id"][0], str)
        assert sb.contacts == {"c1": body}
    else:
        reply = r.json()
        assert reply["error"] is True and reply["message"]
        assert sb.contacts == {}


def test_contact_message_names_the_field(api: httpx.Client) -> None:
    r = put_contact(api, "c1", with_part("personal", birthDate="1980-13-01"))
    assert "personal.birthDate" in r.json()["message"]


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b'{"schema": 1}', "application/json", 200),
        (b'{"schema": 1}', "Application/JSON; Charset=UTF-8", 200),
        (b'{"schema": 1}', "text/plain", 400),
        (b'{"schema": 1}', "application/json; charset=latin-1", 400),
        (b'{"schema": 1', "application/json", 400),
        (b"", "application/json", 400),
        (b'{"schema": NaN}', "application/json", 400),
        (b'{"schema": 1, "x": "\xff"}', "application/json", 400),
    ],
)
def test_body_must_be_json(
    client: httpx.Client, content: bytes, content_type: str, status: int
) -> None:
    headers = {"Authorization": f"Bearer {token(client)}", "Content-Type": content_type}
    r = client.put("/api/Contact/1", content=content, headers=headers)
    assert r.status_code == status, r.text


def test_sequence_ids_increase_and_writes_count(sb: Sandbox, api: httpx.Client) -> None:
    ids = [int(put_contact(api, "same").json()["id"][0]) for _ in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert sb.contact_writes["same"] == 3
    changed = {"schema": 1, "general": {"city": "Elsewhere"}}
    put_contact(api, "same", changed)
    assert sb.contacts["same"] == changed


def test_reject_ids_single(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.reject_ids = {"bad"}
    r = put_contact(api, "bad")
    assert r.status_code == 400
    assert r.json()["error"] is True and r.json()["message"]
    assert put_contact(api, "good").status_code == 200
    assert list(sb.contacts) == ["good"]


def test_accessors_return_copies(sb: Sandbox, api: httpx.Client) -> None:
    put_contact(api, "c1")
    sb.contacts.clear()
    sb.contact_writes.clear()
    sb.requests.clear()
    assert list(sb.contacts) == ["c1"] and sb.contact_writes["c1"] == 1 and sb.requests


# --- bulk -------------------------------------------------------------------------------------


def test_bulk_partial_failures(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.reject_ids = {"refused"}
    body = {"ok1": CONTACT, "invalid": {"schema": 2}, "refused": CONTACT, "ok2": {"schema": 1}}
    r = put(api, "/api/contact/_bulk", body)
    assert r.status_code == 200
    reply = r.json()
    assert reply["error"] is True
    assert [i is None for i in reply["id"]] == [False, True, True, False]
    assert all(isinstance(i, str) for i in reply["id"] if i is not None)
    assert set(reply["failures"]) == {"invalid", "refused"}
    assert reply["failures"]["invalid"]["retry"] is False
    assert "schema" in reply["failures"]["invalid"]["reason"]
    assert reply["failures"]["refused"]["retry"] is False
    assert set(sb.contacts) == {"ok1", "ok2"}
    assert sb.requests[-1].items == 4


def test_bulk_all_ok(sb: Sandbox, api: httpx.Client) -> None:
    r = put(api, "/api/contact/_bulk", {str(i): CONTACT for i in range(50)})
    assert r.json()["error"] is False and r.json()["failures"] == {}
    assert len(r.json()["id"]) == 50 and None not in r.json()["id"]
    assert len(sb.contacts) == 50 and sum(sb.contact_writes.values()) == 50


def test_bulk_random_failures(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.bulk_retry_rate = 1.0
    reply = put(api, "/api/contact/_bulk", {"a": CONTACT, "b": CONTACT}).json()
    assert reply["failures"] == {"a": {"retry": True}, "b": {"retry": True}}
    assert reply["id"] == [None, None] and reply["error"] is True
    sb.faults.bulk_retry_rate = 0.0
    sb.faults.bulk_reject_rate = 1.0
    reply = put(api, "/api/contact/_bulk", {"a": CONTACT}).json()
    assert reply["failures"]["a"]["retry"] is False and reply["failures"]["a"]["reason"]
    assert sb.contacts == {}


def failures_with_seed(seed: int) -> dict[str, Any]:
    faults = Faults(bulk_retry_rate=0.3, bulk_reject_rate=0.2, seed=seed)
    with Sandbox(faults=faults) as sb, httpx.Client(base_url=sb.url, verify=TLS) as c:
        c.headers.update({"Authorization": f"Bearer {token(c)}", **JSON})
        r = put(c, "/api/contact/_bulk", {str(i): CONTACT for i in range(60)})
        failures: dict[str, Any] = r.json()["failures"]
        return failures


def test_bulk_faults_repeat_with_the_seed() -> None:
    first = failures_with_seed(7)
    assert first == failures_with_seed(7)
    assert 0 < len(first) < 60
    assert any(f["retry"] for f in first.values())
    assert any(not f["retry"] for f in first.values())
    assert first != failures_with_seed(8)


def test_bulk_item_limit_and_empty(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.bulk_item_limit = 2
    r = put(api, "/api/contact/_bulk", {"a": CONTACT, "b": CONTACT, "c": CONTACT})
    assert r.status_code == 400 and r.json() == {"bulkItemLimitExceeded": True}
    r = post(api, "/api/contact/campaigns/_bulk", {k: {"campaign": "x"} for k in "abc"})
    assert r.status_code == 400 and r.json() == {"bulkItemLimitExceeded": True}
    assert put(api, "/api/contact/_bulk", {"a": CONTACT, "b": CONTACT}).status_code == 200
    assert put(api, "/api/contact/_bulk", {}).status_code == 400
    assert sb.requests[1].items == 3


def test_bulk_routes_off(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.bulk_routes = False
    assert put(api, "/api/contact/_bulk", {"a": CONTACT}).status_code == 404
    assert post(api, "/api/contact/campaigns/_bulk", {"a": {"campaign": "x"}}).status_code == 404
    assert put_contact(api, "a").status_code == 200


# --- campaign links ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"campaign": "foo", "iteration": "2017-09"}, 200),
        ({"campaign": "foo"}, 200),
        ({"campaign": "foo", "iteration": None}, 200),
        ({}, 400),
        ({"campaign": ""}, 400),
        ({"campaign": 5}, 400),
        ({"campaign": None}, 400),
        ({"campaign": "foo", "iteration": 201709}, 400),
    ],
)
def test_link_validation(sb: Sandbox, api: httpx.Client, body: Any, status: int) -> None:
    put_contact(api, "c1")
    r = post(api, "/api/Contact/c1/campaigns", body)
    assert r.status_code == status, r.text
    if status == 200:
        assert isinstance(r.json()["id"], str)
        assert sb.links == [("c1", "foo", body.get("iteration"))]
    else:
        assert "campaign" in r.json()["message"] or "iteration" in r.json()["message"]
        assert sb.links == []


def test_link_strict_order(sb: Sandbox, api: httpx.Client) -> None:
    r = post(api, "/api/Contact/ghost/campaigns", {"campaign": "c"})
    assert r.status_code == 404 and r.json() == {"error": "contact not found"}
    sb.faults.strict_order = False
    assert post(api, "/api/Contact/ghost/campaigns", {"campaign": "c"}).status_code == 200
    assert sb.links == [("ghost", "c", None)]


def test_link_bulk(sb: Sandbox, api: httpx.Client) -> None:
    put(api, "/api/contact/_bulk", {"a": CONTACT, "b": CONTACT})
    body = {
        "a": {"campaign": "c", "iteration": "2017-09"},
        "ghost": {"campaign": "c"},
        "b": {"campaign": ""},
    }
    reply = post(api, "/api/contact/campaigns/_bulk", body).json()
    assert reply["error"] is True
    assert reply["id"][0] is not None and reply["id"][1:] == [None, None]
    assert reply["failures"]["ghost"] == {"retry": False, "reason": "contact not found"}
    assert reply["failures"]["b"]["retry"] is False
    assert sb.links == [("a", "c", "2017-09")]


# --- events -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "status", "field"),
    [
        ({}, 200, ""),
        ({"at": "2017-01-02T03:04:05.1234567Z"}, 200, ""),
        ({"amount": 12.5, "currency": "SEK", "note": None}, 200, ""),
        ({"at": None}, 400, "at"),
        ({"at": "2017-01-02T03:04:05"}, 400, "at"),
        ({"at": "2017-01-02"}, 400, "at"),
        ({"name": ""}, 400, "name"),
        ({"name": 3}, 400, "name"),
        ({"schema": 2}, 400, "schema"),
        ({"extra": {"x": 1}}, 400, "extra"),
    ],
)
def test_event_validation(
    sb: Sandbox, api: httpx.Client, changes: dict[str, Any], status: int, field: str
) -> None:
    put_contact(api, "c1")
    body = {**EVENT, **changes}
    r = post(api, "/api/Contact/c1/events", body)
    assert r.status_code == status, r.text
    if status == 200:
        reply = r.json()
        assert reply["error"] is False and isinstance(reply["id"][0], str)
        assert sb.events == [("c1", body)]
    else:
        assert field in r.json()["message"]
        assert sb.events == []


@pytest.mark.parametrize("missing", ["at", "name", "schema"])
def test_event_missing_field(api: httpx.Client, missing: str) -> None:
    put_contact(api, "c1")
    body = {k: v for k, v in EVENT.items() if k != missing}
    r = post(api, "/api/Contact/c1/events", body)
    assert r.status_code == 400 and missing in r.json()["message"]


def test_event_strict_order(sb: Sandbox, api: httpx.Client) -> None:
    r = post(api, "/api/Contact/ghost/events", EVENT)
    assert r.status_code == 404 and r.json() == {"error": "contact not found"}
    sb.faults.strict_order = False
    assert post(api, "/api/Contact/ghost/events", EVENT).status_code == 200


# --- faults -----------------------------------------------------------------------------------


def test_429_and_holdback_violation(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.rate_limit = 1.0
    sb.faults.retry_after = 2
    assert put_contact(api, "a").status_code == 200
    r = put_contact(api, "a")
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert sb.requests_during_holdback() == []
    time.sleep(0.3)
    r = put_contact(api, "a")  # inside the window: a violation, told the rest (1.7 s -> 2)
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert api.post("/auth/token/apikey", json={"key": KEY}).status_code == 200
    violations = sb.requests_during_holdback()
    assert [(v.path.lower(), v.status) for v in violations] == [
        ("/api/contact/a", 429),
        ("/auth/token/apikey", 200),
    ]
    assert len(sb.holdbacks) == 2
    start, end = sb.holdbacks[0]
    assert end - start == pytest.approx(2.0)
    assert sb.summary()["holdback_violations"] == 2
    assert sb.requests_during_holdback(grace=5.0) == []


def test_429_respected(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.rate_limit = 1.0
    assert put_contact(api, "a").status_code == 200
    r = put_contact(api, "a")
    assert r.status_code == 429
    time.sleep(int(r.headers["Retry-After"]) + 0.05)
    assert put_contact(api, "a").status_code == 200
    assert sb.requests_during_holdback() == []
    assert sb.summary()["holdback_violations"] == 0


def test_rate_limit_allows_a_burst(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.rate_limit = 5.0
    statuses = [put_contact(api, "a").status_code for _ in range(7)]
    assert statuses[:5] == [200] * 5 and statuses[-1] == 429


def test_error_rate(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.error_rate = 1.0
    r = put_contact(api, "a")
    assert r.status_code == 503 and r.json() == {"error": True}
    assert sb.contacts == {}


def test_error_rate_share(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.error_rate = 0.5
    statuses = [put_contact(api, "a").status_code for _ in range(100)]
    assert 25 < statuses.count(503) < 75
    assert set(statuses) == {200, 503}


def test_drop(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.drop_rate = 1.0
    with pytest.raises(httpx.TransportError):
        put_contact(api, "a")
    assert sb.requests[-1].status == 0
    sb.faults.drop_rate = 0.0
    assert put_contact(api, "a").status_code == 200


def test_latency(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.latency = 0.2
    started = time.monotonic()
    assert put_contact(api, "a").status_code == 200
    assert time.monotonic() - started >= 0.2


def test_misbehave_malformed_json(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.misbehave = "malformed_json"
    r = put_contact(api, "a")
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        r.json()


def test_misbehave_wrong_types(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.misbehave = "wrong_types"
    r = put_contact(api, "a")
    assert r.status_code == 200
    assert r.json() == {"id": 5, "error": "yes", "failures": []}


def test_misbehave_huge_body(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.misbehave = "huge_body"
    r = put_contact(api, "a")
    assert r.status_code == 200
    assert len(r.content) >= 20 * 1024 * 1024
    assert r.json()["error"] is False


def test_misbehave_redirect(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.misbehave = "redirect"
    r = put_contact(api, "a")
    assert r.status_code == 307
    assert r.headers["Location"] == "http://203.0.113.1/elsewhere"


def test_misbehave_hang(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.misbehave = "hang"
    with pytest.raises(httpx.ReadTimeout):
        api.put("/api/Contact/a", content=json.dumps(CONTACT), timeout=0.3)
    assert sb.requests[-1].status == 0


def test_stop_with_a_hung_connection() -> None:
    sb = Sandbox(faults=Faults(misbehave="hang")).start()
    outcome: list[BaseException | int] = []

    def hang() -> None:
        with httpx.Client(base_url=sb.url, timeout=30.0, verify=TLS) as c:
            headers = {"Authorization": f"Bearer {token(c)}", **JSON}
            try:
                outcome.append(c.put("/api/Contact/a", json=CONTACT, headers=headers).status_code)
            except httpx.HTTPError as exc:
                outcome.append(exc)

    thread = threading.Thread(target=hang, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not any(r.path.startswith("/api") for r in sb.requests):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    sb.stop()
    assert time.monotonic() - started < 1.0
    thread.join(2.0)
    assert not thread.is_alive()
    assert isinstance(outcome[0], httpx.TransportError)
    sb.stop()  # idempotent


def test_stop_closes_idle_keepalive_connections(sb: Sandbox, api: httpx.Client) -> None:
    assert put_contact(api, "a").status_code == 200
    sb.stop()
    with pytest.raises(httpx.TransportError):
        put_contact(api, "b")


def test_faults_change_while_serving(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.error_rate = 1.0
    assert put_contact(api, "a").status_code == 503
    sb.faults.error_rate = 0.0
    assert put_contact(api, "a").status_code == 200


# --- admin ------------------------------------------------------------------------------------


def test_admin_routes(sb: Sandbox, api: httpx.Client) -> None:
    put_contact(api, "a")
    post(api, "/api/Contact/a/campaigns", {"campaign": "c", "iteration": "2017-09"})
    post(api, "/api/Contact/a/events", EVENT)
    put_contact(api, "b", {"schema": 2})
    with httpx.Client(base_url=sb.url, verify=TLS) as plain:  # no token needed
        check_admin_routes(sb, plain)


def check_admin_routes(sb: Sandbox, plain: httpx.Client) -> None:
    summary = plain.get("/_sandbox/summary").json()
    assert summary == sb.summary()
    assert summary["contacts"] == 1 and summary["contact_writes"] == 1
    assert summary["links"] == 1 and summary["events"] == 1
    assert summary["requests"] == 5  # auth + 4 api calls; admin calls are not recorded
    assert summary["requests_by_status"] == {"200": 4, "400": 1}
    assert summary["holdback_violations"] == 0
    assert plain.get("/_sandbox/contacts").json() == {"a": CONTACT}
    assert plain.get("/_sandbox/links").json() == [
        {"contactId": "a", "campaign": "c", "iteration": "2017-09"}
    ]
    assert plain.get("/_sandbox/events").json() == [{"contactId": "a", "event": EVENT}]
    assert plain.post("/_sandbox/contacts").status_code == 405
    assert plain.get("/_sandbox/nothing").status_code == 404
    assert sb.summary()["requests"] == 5


def test_admin_routes_ignore_faults(sb: Sandbox) -> None:
    sb.faults.misbehave = "hang"
    sb.faults.error_rate = 1.0
    with httpx.Client(base_url=sb.url, timeout=2.0, verify=TLS) as c:
        assert c.get("/_sandbox/summary").status_code == 200


def test_admin_faults(sb: Sandbox) -> None:
    with httpx.Client(base_url=sb.url, verify=TLS) as c:
        r = c.post("/_sandbox/faults", json={"error_rate": 0.5, "reject_ids": ["x", "y"]})
        assert r.status_code == 200
        assert r.json()["error_rate"] == 0.5 and r.json()["reject_ids"] == ["x", "y"]
        assert sb.faults.reject_ids == {"x", "y"} and sb.faults.error_rate == 0.5
        r = c.post("/_sandbox/faults", json={"rate_limit": None, "misbehave": "hang"})
        assert r.json()["misbehave"] == "hang" and r.json()["error_rate"] == 0.5
        for bad in (
            {"nope": 1},
            {"error_rate": 2},
            {"error_rate": "x"},
            {"misbehave": "explode"},
            {"reject_ids": "x"},
            {"bulk_routes": 1},
            {"retry_after": 1.5},
        ):
            r = c.post("/_sandbox/faults", json=bad)
            assert r.status_code == 400, bad
            assert r.json()["message"]
        assert sb.faults.misbehave == "hang"  # a refused change leaves the faults alone
        assert c.get("/_sandbox/faults").json()["misbehave"] == "hang"


def test_admin_reset(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.rate_limit = 1.0
    put_contact(api, "a")
    assert put_contact(api, "a").status_code == 429
    r = httpx.post(f"{sb.url}/_sandbox/reset", verify=TLS)
    assert r.status_code == 200
    assert sb.contacts == {} and sb.requests == [] and sb.holdbacks == []
    assert sb.contact_writes == {} and sb.links == [] and sb.events == []
    assert sb.faults.rate_limit == 1.0  # faults are kept
    assert put_contact(api, "a").status_code == 200  # the token still works, bucket refilled


# --- records and life cycle -------------------------------------------------------------------


def test_request_records(sb: Sandbox, client: httpx.Client) -> None:
    before = time.monotonic()
    tok = token(client)
    headers = {"Authorization": f"Bearer {tok}", **JSON}
    client.put(
        "/api/contact/_bulk", content=json.dumps({"a": CONTACT, "b": CONTACT}), headers=headers
    )
    client.put("/api/Contact/a", content=b"{", headers=headers)
    client.put("/api/Contact/a", content=b"{}")
    recs = sb.requests
    assert [type(r) for r in recs] == [RequestRecord] * 4
    assert [(r.method, r.path, r.status, r.items) for r in recs] == [
        ("POST", "/auth/token/apikey", 200, 0),
        ("PUT", "/api/contact/_bulk", 200, 2),
        ("PUT", "/api/Contact/a", 400, 1),
        ("PUT", "/api/Contact/a", 401, 1),
    ]
    assert before <= recs[0].at <= recs[1].at <= recs[3].at <= time.monotonic()


def test_url_and_context_manager() -> None:
    with Sandbox() as sb:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", sb.url)
        assert httpx.get(f"{sb.url}/_sandbox/summary", verify=TLS).status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{sb.url}/_sandbox/summary", timeout=1.0, verify=TLS)


def test_serve_forever_in_a_thread() -> None:
    sb = Sandbox()
    thread = threading.Thread(target=sb.serve_forever, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not sb.url:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert httpx.get(f"{sb.url}/_sandbox/summary", verify=TLS).status_code == 200
    sb.stop()
    thread.join(2.0)
    assert not thread.is_alive()


def test_concurrent_clients(sb: Sandbox) -> None:
    limits = httpx.Limits(max_connections=8)
    with httpx.Client(base_url=sb.url, limits=limits, verify=TLS) as c:
        c.headers.update({"Authorization": f"Bearer {token(c)}", **JSON})

        def work(n: int) -> None:
            for i in range(25):
                assert put_contact(c, f"{n}-{i}").status_code == 200

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(sb.contacts) == 200
    ids = sorted(int(r.path.split("/")[-1].split("-")[0]) for r in sb.requests[1:])
    assert len(ids) == 200


# --- faults that reproduce production: a proxy's page, calls applied but not answered --------


def html_page(r: httpx.Response) -> bool:
    return r.headers["Content-Type"].startswith("text/html") and "<html>" in r.text


def test_foreign_page_answers_as_a_proxy_and_applies_nothing(
    sb: Sandbox, api: httpx.Client
) -> None:
    sb.faults.foreign_page = 1.0
    r = post(api, "/api/Contact/a/events", EVENT)
    assert r.status_code == 200 and html_page(r)
    with pytest.raises(json.JSONDecodeError):
        r.json()
    r = put_contact(api, "a")
    assert r.status_code == 200 and html_page(r)
    # The proxy stands in front of the API: no token needed to get its page.
    assert sb.faults.foreign_page == 1.0
    r = api.put("/api/Contact/a", content=json.dumps(CONTACT), headers={"Authorization": ""})
    assert r.status_code == 200 and html_page(r)
    assert sb.contacts == {} and sb.events == []
    assert [(rec.status, rec.applied) for rec in sb.requests[1:]] == [(200, False)] * 3
    sb.faults.foreign_page_status = 502
    r = put_contact(api, "a")
    assert r.status_code == 502 and html_page(r)
    sb.faults.foreign_page = 0.0
    r = put_contact(api, "a")
    assert r.status_code == 200 and r.json()["error"] is False
    assert list(sb.contacts) == ["a"]


def test_foreign_page_for_the_next_calls_only(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.foreign_page = Next(2)
    replies = [put_contact(api, "a") for _ in range(4)]
    assert [html_page(r) for r in replies] == [True, True, False, False]
    assert sb.faults.foreign_page == Next(0)
    assert sb.contact_writes["a"] == 2


def foreign_pattern(seed: int) -> list[bool]:
    with Sandbox(faults=Faults(foreign_page=0.5, seed=seed)) as sb, httpx.Client(
        base_url=sb.url, verify=TLS
    ) as c:
        c.headers.update({"Authorization": f"Bearer {token(c)}", **JSON})
        return [html_page(put_contact(c, "a")) for _ in range(40)]


def test_foreign_page_share_repeats_with_the_seed() -> None:
    first = foreign_pattern(7)
    assert 5 < first.count(True) < 35
    assert foreign_pattern(7) == first
    assert foreign_pattern(8) != first


def test_drop_after_apply_keeps_the_effect_and_sends_no_reply(
    sb: Sandbox, api: httpx.Client
) -> None:
    assert put_contact(api, "a").status_code == 200
    sb.faults.drop_after_apply = Next(1)
    with pytest.raises(httpx.TransportError):
        post(api, "/api/Contact/a/events", EVENT)
    assert sb.events == [("a", EVENT)]  # applied although the client saw nothing
    assert (sb.requests[-1].status, sb.requests[-1].applied) == (0, True)
    assert post(api, "/api/Contact/a/events", EVENT).status_code == 200  # the count is used up
    assert sb.events == [("a", EVENT), ("a", EVENT)]  # the resend is a duplicate, kept
    assert sb.summary()["events"] == 2


def test_drop_after_apply_counts_only_applied_calls(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.drop_after_apply = Next(1)
    r = post(api, "/api/Contact/ghost/events", EVENT)  # strict order: 404, not applied
    assert r.status_code == 404
    assert put_contact(api, "a", {"schema": 2}).status_code == 400
    assert sb.faults.drop_after_apply == Next(1)
    with pytest.raises(httpx.TransportError):
        put(api, "/api/contact/_bulk", {"a": CONTACT, "b": {"schema": 2}})
    assert list(sb.contacts) == ["a"]
    assert [(r.status, r.applied, r.items) for r in sb.requests[1:]] == [
        (404, False, 1),
        (400, False, 1),
        (0, True, 2),
    ]


def test_drop_after_apply_share(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.drop_after_apply = 1.0
    for cid in ("a", "b", "c"):
        with pytest.raises(httpx.TransportError):
            put_contact(api, cid)
    assert sorted(sb.contacts) == ["a", "b", "c"]
    sb.faults.drop_after_apply = 0.0
    assert put_contact(api, "d").status_code == 200


def test_slow_after_apply_applies_before_the_client_gives_up(
    sb: Sandbox, api: httpx.Client
) -> None:
    assert put_contact(api, "a").status_code == 200
    sb.faults.slow_after_apply = 2.0
    with pytest.raises(httpx.ReadTimeout):
        api.post("/api/Contact/a/events", content=json.dumps(EVENT), timeout=0.3)
    assert sb.events == [("a", EVENT)]
    assert (sb.requests[-1].status, sb.requests[-1].applied) == (200, True)
    # A call that is not applied is answered at once, well inside the same short timeout.
    r = api.post("/api/Contact/a/events", content=b"{", timeout=0.3)
    assert r.status_code == 400
    sb.faults.slow_after_apply = 0.0
    r = api.post("/api/Contact/a/events", content=json.dumps(EVENT), timeout=0.3)
    assert r.status_code == 200
    assert len(sb.events) == 2


def test_error_and_drop_rates_take_counts(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults.error_rate = Next(2)
    assert [put_contact(api, "a").status_code for _ in range(3)] == [503, 503, 200]
    sb.faults.drop_rate = Next(1)
    with pytest.raises(httpx.TransportError):
        put_contact(api, "b")
    assert put_contact(api, "b").status_code == 200
    assert sb.contact_writes == {"a": 1, "b": 1}


def test_request_records_say_what_was_applied(sb: Sandbox, api: httpx.Client) -> None:
    put_contact(api, "a")
    put_contact(api, "b", {"schema": 2})
    post(api, "/api/Contact/a/campaigns", {"campaign": "c"})
    post(api, "/api/Contact/ghost/campaigns", {"campaign": "c"})
    sb.faults.bulk_reject_rate = 1.0
    put(api, "/api/contact/_bulk", {"x": CONTACT})
    assert [r.applied for r in sb.requests] == [False, True, False, True, False, False]


def test_admin_sets_the_new_knobs(sb: Sandbox) -> None:
    with httpx.Client(base_url=sb.url, verify=TLS) as c:
        change = {
            "foreign_page": {"next": 2},
            "foreign_page_status": 502,
            "drop_after_apply": 0.25,
            "slow_after_apply": 1.5,
            "error_rate": {"next": 1},
        }
        r = c.post("/_sandbox/faults", json=change)
        assert r.status_code == 200
        assert {k: r.json()[k] for k in change} == change
        assert sb.faults.foreign_page == Next(2) and sb.faults.error_rate == Next(1)
        assert sb.faults.drop_after_apply == 0.25 and sb.faults.slow_after_apply == 1.5
        assert sb.faults.foreign_page_status == 502
        for bad in (
            {"foreign_page": {"next": -1}},
            {"foreign_page": {"nxt": 1}},
            {"foreign_page": {"next": 1.5}},
            {"drop_after_apply": 1.5},
            {"slow_after_apply": -1},
            {"foreign_page_status": 99},
        ):
            r = c.post("/_sandbox/faults", json=bad)
            assert r.status_code == 400, bad
            assert r.json()["message"].startswith(next(iter(bad)))
        assert c.get("/_sandbox/faults").json()["foreign_page"] == {"next": 2}


def test_next_refuses_a_negative_count() -> None:
    with pytest.raises(ValueError, match="Next"):
        Next(-1)
