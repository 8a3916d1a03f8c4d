"""The YAML config (connector.config): the full shape, defaults, every problem at once with
its place, environment variables, and secrets that never show."""

from __future__ import annotations

import re
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from connector import config
from connector.errors import ConfigError

API_KEY = "wk_live_SECRET_KEY_9f8e7d"
DB_PASSWORD = "Db-Pa55-SECRET"
DB_URL = f"postgresql+psycopg://connector:{DB_PASSWORD}@db.internal:5432/shop"
ENV = {"DATABASE_URL": DB_URL, "WIRAYA_API_KEY": API_KEY}

DESIGN_CONFIG = """
source:
  url: ${DATABASE_URL}          # postgresql+psycopg://..., or sqlite:///demo.db
  timezone: UTC                 # for naive timestamp columns
wiraya:
  base_url: https://api.wiraya.ai
  api_key: ${WIRAYA_API_KEY}
  rate_limit: 50/s
  concurrency: 8
  bulk_size: 100                # 1 = one call per contact
state: ./state/connector.db
contacts:
  customers:                    # stream name
    table: public.customers     # a table or a view
    id: customer_id
    cursor: updated_at
    lookback: 10m
    every: 1m
    personal:
      phoneNumber: {column: mobile, region: SE}
      givenName: first_name
      surName: last_name
    general:
      city: city
      timeOfRegistration: created_at
    campaign: {campaign: welcome-flow, iteration: "2026-11"}
events:
  conversions:
    table: public.orders
    id: order_id
    contact: customer_id
    cursor: created_at
    at: created_at
    name: Conversion
    every: 1m
  opt_outs:
    table: public.unsubscribes
    id: id
    contact: customer_id
    cursor: id
    at: unsubscribed_at
    name: OptOut
"""


def dump(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False)


def minimal(**top: Any) -> dict[str, Any]:
    """A small valid document; keyword arguments replace or add top-level sections."""
    document: dict[str, Any] = {
        "source": {"url": "${DATABASE_URL}"},
        "wiraya": {"api_key": "${WIRAYA_API_KEY}"},
        "contacts": {"customers": {
            "table": "public.customers", "id": "customer_id", "cursor": "updated_at",
            "personal": {"phoneNumber": {"column": "mobile", "region": "SE"}},
        }},
    }
    document.update(top)
    return document


def with_stream(**changes: Any) -> dict[str, Any]:
    document = minimal()
    document["contacts"]["customers"].update(changes)
    return document


def problems_of(text: str, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        config.parse(text, env=ENV if env is None else env)
    error = info.value
    assert error.exit_code == 2
    assert error.problems
    # The message lists every problem, one a line, with its place.
    message = str(error)
    assert message.splitlines()[0] == f"config: {len(error.problems)} problem(s)"
    for place, text_ in error.problems:
        assert (f"  {place}: {text_}" if place else f"  {text_}") in message.splitlines()
    return error.problems


def problem_at(problems: list[tuple[str, str]], place: str) -> str:
    found = [message for where, message in problems if where == place]
    assert found, f"no problem at {place!r}: {problems}"
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------------------
# A full valid config and its defaults


def test_design_config_parses() -> None:
    settings = config.parse(DESIGN_CONFIG, env=ENV)
    assert settings.source.url.get_secret_value() == DB_URL
    assert settings.source.timezone == "UTC"
    assert str(settings.source.zone) == "UTC"
    assert settings.wiraya.base_url == "https://api.wiraya.ai"
    assert settings.wiraya.api_key.get_secret_value() == API_KEY
    assert settings.wiraya.rate_limit == 50.0
    assert settings.wiraya.concurrency == 8
    assert settings.wiraya.bulk_size == 100
    assert settings.state == Path("state/connector.db")

    customers = settings.contacts["customers"]
    assert str(customers.table) == "public.customers"
    assert (customers.table.schema_, customers.table.name) == ("public", "customers")
    assert (customers.id, customers.cursor) == ("customer_id", "updated_at")
    assert customers.lookback == timedelta(minutes=10)
    assert customers.every == timedelta(minutes=1)
    assert customers.personal["phoneNumber"] == config.FieldMap(column="mobile", region="SE")
    assert customers.personal["phoneNumber"].kind == "auto"
    assert customers.personal["givenName"].column == "first_name"
    assert customers.personal["surName"].column == "last_name"
    assert list(customers.general) == ["city", "timeOfRegistration"]
    assert customers.links == [config.CampaignLink(
        campaign="welcome-flow", iteration=config.Iteration(value="2026-11"))]
    assert customers.events == []
    assert customers.columns() == ["customer_id", "updated_at", "mobile", "first_name",
                                   "last_name", "city", "created_at"]

    conversions = settings.events["conversions"]
    assert (conversions.contact, conversions.at, conversions.name) == (
        "customer_id", "created_at", "Conversion")
    opt_outs = settings.events["opt_outs"]
    assert (opt_outs.cursor, opt_outs.at, opt_outs.name) == ("id", "unsubscribed_at", "OptOut")
    assert list(settings.streams) == ["customers", "conversions", "opt_outs"]
    assert settings.contact_streams_for(opt_outs) == ["customers"]


# ---------------------------------------------------------------------------
# Defaults: the README's config reference is the promise. Each default it states is checked
# against the model by behaviour (writing the default out changes nothing, a required key
# left out is named), so a default changed without the README fails here.

README = Path(__file__).resolve().parents[1] / "README.md"
ORDERS = {"table": "orders", "id": "order_id", "contact": "customer_id", "cursor": "created_at"}


def readme_config_rows() -> list[tuple[str, str]]:
    """(dotted key, default cell) for each key in the README's "Config reference" table;
    a row "`a.b` / `c`" with default "`x` / `y`" gives a.b -> `x` and a.c -> `y`."""
    section = README.read_text(encoding="utf-8").split("## Config reference", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows: list[tuple[str, str]] = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        key_cell, default_cell = (cell.strip() for cell in line.strip().strip("|").split("|")[:2])
        keys = [part.strip().strip("`") for part in key_cell.split(" / ")]
        defaults = default_cell.split(" / ")
        if len(keys) == len(defaults) and all(re.fullmatch(r"[\w.]+", k) for k in keys):
            parent = keys[0].rpartition(".")[0]
            for i, (key, default) in enumerate(zip(keys, defaults, strict=True)):
                rows.append((key if i == 0 else f"{parent}.{key}", default.strip()))
        else:
            rows.append((re.findall(r"`([^`]+)`", key_cell)[0], default_cell))
    return rows


README_ROWS = readme_config_rows()


def document_with(key: str, value: Any) -> dict[str, Any]:
    """The minimal document (with an event stream), with `key` set to `value`."""
    document = minimal(events={"orders": dict(ORDERS)})
    node = document
    parts = key.replace(".NAME.", ".customers." if key.startswith("contacts") else ".orders.")
    *path, last = parts.split(".")
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value
    return document


def document_without(key: str) -> dict[str, Any]:
    document = minimal(events={"orders": dict(ORDERS)})
    *path, last = key.replace(".NAME.", ".customers." if key.startswith("contacts")
                              else ".orders.").split(".")
    node = document
    for part in path:
        node = node[part]
    del node[last]
    return document


def check_none(key: str, settings: config.Settings) -> None:
    customers = settings.contacts["customers"]
    absent = {
        "metrics.listen": lambda: settings.metrics is None,
        "contacts.NAME.campaign": lambda: customers.links == [],
        "contacts.NAME.events": lambda: customers.events == [],
        "events.NAME.fields": lambda: settings.events["orders"].fields == {},
        "wiraya.idempotency_header": lambda: settings.wiraya.idempotency_header is None,
        "contacts.NAME.reconcile": lambda: customers.reconcile is None,
    }
    assert key in absent, f"README: {key} says none/off; tell this test how to see that"
    assert absent[key](), key


def check_the_cursor(key: str, settings: config.Settings) -> None:
    assert key == "events.NAME.at"
    from connector.mapping import EventMapper

    explicit = config.parse(dump(document_with(key, "created_at")), env=ENV).events["orders"]
    implicit = settings.events["orders"]
    row = (7, datetime(2026, 3, 1, 12, 0, tzinfo=UTC), 42)  # order_id, created_at, customer_id
    assert implicit.columns() == explicit.columns() == ["order_id", "created_at", "customer_id"]
    mapped = EventMapper(implicit, implicit.columns(), UTC).map(row)
    assert mapped == EventMapper(explicit, explicit.columns(), UTC).map(row)
    assert mapped.body["at"] == "2026-03-01T12:00:00Z"


def check_every_contact_stream(key: str, settings: config.Settings) -> None:
    assert key == "events.NAME.contacts_stream"
    document = document_with("contacts.leads", {**minimal()["contacts"]["customers"],
                                                "table": "public.leads"})
    two = config.parse(dump(document), env=ENV)
    assert sorted(two.contact_streams_for(two.events["orders"])) == ["customers", "leads"]
    assert settings.contact_streams_for(settings.events["orders"]) == ["customers"]


def check_source_page_size(key: str, settings: config.Settings) -> None:
    assert key == "contacts.NAME.page_size"
    assert settings.page_size(settings.contacts["customers"]) == settings.source.page_size
    bigger = config.parse(dump(document_with("source.page_size", 1234)), env=ENV)
    assert bigger.page_size(bigger.contacts["customers"]) == 1234


def check_lookback(key: str, settings: config.Settings) -> None:
    from connector.cursor import default_lookback

    assert key == "contacts.NAME.lookback"
    time_default, integer_default = re.findall(r"`([^`]+)`", dict(README_ROWS)[key])
    explicit = config.parse(dump(document_with(key, time_default)), env=ENV)
    assert default_lookback("timestamp") == explicit.contacts["customers"].lookback
    document = document_with(key, int(integer_default))
    document["contacts"]["customers"]["cursor"] = "id"
    explicit = config.parse(dump(document), env=ENV)
    assert default_lookback("integer") == explicit.contacts["customers"].lookback
    assert settings.contacts["customers"].lookback is None  # resolved by cursor kind


SPECIAL = {
    "none": check_none,
    "off": check_none,
    "the cursor": check_the_cursor,
    "every contact stream": check_every_contact_stream,
    "`source.page_size`": check_source_page_size,
    "`10m` (integer cursor: `1000`)": check_lookback,
}


def test_readme_config_table_is_read() -> None:
    keys = [key for key, _ in README_ROWS]
    assert len(keys) == len(set(keys)) >= 30
    assert ("source.connect_timeout", "`10s`") in README_ROWS
    assert ("source.statement_timeout", "`5m`") in README_ROWS
    assert ("logging.level", "`info`") in README_ROWS


@pytest.mark.parametrize(("key", "default"), README_ROWS, ids=[k for k, _ in README_ROWS])
def test_readme_default_is_the_model_default(key: str, default: str) -> None:
    settings = config.parse(dump(minimal(events={"orders": dict(ORDERS)})), env=ENV)
    if default in ("", "as for contacts") or default.startswith("a column name"):
        return  # the row states no default of its own
    if default == "required":
        problems = problems_of(dump(document_without(key)))
        place = key.replace(".NAME.", ".customers." if key.startswith("contacts")
                            else ".orders.")
        assert (place, "required; add it") in problems
        return
    if default in SPECIAL:
        SPECIAL[default](key, settings)
        return
    literal = re.fullmatch(r"`([^`]+)`", default)
    assert literal, f"README: default {default!r} of {key} is neither a value nor known here"
    explicit = config.parse(dump(document_with(key, yaml.safe_load(literal[1]))), env=ENV)
    assert explicit == settings, f"README says {key} defaults to {literal[1]}; the model differs"


def test_a_minimal_config_names_the_streams_and_their_columns() -> None:
    settings = config.parse(dump(minimal(events={"orders": dict(ORDERS)})), env=ENV)
    customers = settings.contacts["customers"]
    assert str(customers.table) == "public.customers"
    orders = settings.events["orders"]
    assert orders.columns() == ["order_id", "created_at", "customer_id"]


def test_settings_are_frozen() -> None:
    settings = config.parse(dump(minimal()), env=ENV)
    with pytest.raises(ValidationError):
        settings.wiraya.concurrency = 99  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.contacts["customers"].cursor = "id"  # type: ignore[misc]


def test_optional_sections() -> None:
    settings = config.parse(dump(minimal(
        logging={"format": "json", "level": "debug"},
        metrics={"listen": "[::1]:9100"},
        source={"url": "sqlite:///demo.db", "timezone": "Europe/Stockholm", "page_size": 50},
    )), env=ENV)
    assert settings.logging == config.Logging(format="json", level="debug")
    assert settings.metrics is not None
    assert settings.metrics.address == ("::1", 9100)
    assert str(settings.source.zone) == "Europe/Stockholm"
    assert settings.page_size(settings.contacts["customers"]) == 50


def test_event_stream_waits_for_its_contact_stream() -> None:
    document = minimal(events={
        "orders": {"table": "orders", "id": "id", "contact": "c", "cursor": "at",
                   "contacts_stream": "customers"},
        "clicks": {"table": "clicks", "id": "id", "contact": "c", "cursor": "at",
                   "wait_for_contact": False},
    })
    settings = config.parse(dump(document), env=ENV)
    assert settings.contact_streams_for(settings.events["orders"]) == ["customers"]
    assert settings.contact_streams_for(settings.events["clicks"]) == []


# ---------------------------------------------------------------------------
# Durations and rates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (90, timedelta(seconds=90)),
        ("90", timedelta(seconds=90)),
        ("90s", timedelta(seconds=90)),
        ("10m", timedelta(minutes=10)),
        ("1.5h", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("500ms", timedelta(milliseconds=500)),
        (" 5 m ", timedelta(minutes=5)),
    ],
)
def test_durations(text: Any, expected: timedelta) -> None:
    settings = config.parse(dump(with_stream(every=text)), env=ENV)
    assert settings.contacts["customers"].every == expected


@pytest.mark.parametrize("text", ["10x", "ten minutes", "-5s", "5 mins", "", True])
def test_bad_durations(text: Any) -> None:
    message = problem_at(problems_of(dump(with_stream(every=text))), "contacts.customers.every")
    assert "duration" in message


def test_lookback_is_a_count_for_integer_cursors() -> None:
    settings = config.parse(dump(with_stream(lookback=500)), env=ENV)
    assert settings.contacts["customers"].lookback == 500
    message = problem_at(problems_of(dump(with_stream(lookback=-1))),
                         "contacts.customers.lookback")
    assert "negative" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("50/s", 50.0), ("3000/min", 50.0), ("7200/hour", 2.0), ("10 / second", 10.0), (25, 25.0),
     ("none", None), ("off", None), (None, None)],
)
def test_rates(text: Any, expected: float | None) -> None:
    settings = config.parse(dump(minimal(wiraya={"api_key": "k", "rate_limit": text})),
                            env=ENV)
    assert settings.wiraya.rate_limit == expected


@pytest.mark.parametrize("text", ["50/fortnight", "fast", "0/s", 0, -3, "50/", True])
def test_bad_rates(text: Any) -> None:
    problems = problems_of(dump(minimal(wiraya={"api_key": "k", "rate_limit": text})))
    assert "rate" in problem_at(problems, "wiraya.rate_limit")


# ---------------------------------------------------------------------------
# Every problem at once, each with its place


BROKEN = """
source:
  url: "sqlite:///x.db"
  timzone: UTC
wiraya:
  api_key: k
  rate_limit: 50/fortnight
  concurency: 3
contacts:
  customers:
    table: public.customers
    id: customer_id
    every: 10x
    lookback: -5
    personal:
      phoneNumber: {column: mobile, region: SE}
  shop:
    table: t
    id: id
    cursor: c
    personal: {phoneNumber: mobile}
    campaigns:
      - campaign: x
        when: {column: a}
      - campaign: y
        when: {column: a, equals: 1, not_null: true}
      - campaign: z
        iteration: {value: a, column: b}
events:
  shop:
    table: o
    id: id
    contact: c
    cursor: c
  conv:
    table: o
    id: id
    contact: c
    cursr: c
    contacts_stream: nope
"""


def test_every_problem_is_listed_with_its_place() -> None:
    problems = problems_of(BROKEN)
    assert problems_of(BROKEN) == problems  # stable
    expected = {
        "contacts.customers.cursor": "required; add it",
        "contacts.customers.every": "'10x' is not a duration",
        "contacts.customers.lookback": "lookback cannot be negative",
        "source.timzone": "unknown key; did you mean 'timezone'?",
        "wiraya.rate_limit": "'50/fortnight' is not a rate",
        "wiraya.concurency": "unknown key; did you mean 'concurrency'?",
        "contacts.shop.campaigns[0].when": "give exactly one of equals, not_equals, in, "
                                           "not_in, not_null, is_null (got 0)",
        "contacts.shop.campaigns[1].when": "give exactly one of equals, not_equals, in, "
                                           "not_in, not_null, is_null (got 2)",
        "contacts.shop.campaigns[2].iteration": "give either a fixed text",
        "events.shop": "stream names must be unique",
        "events.conv.contacts_stream": "'nope' is not a contact stream (known: customers, shop)",
        "events.conv.cursor": "required; add it",
        "events.conv.cursr": "unknown key; did you mean 'cursor'?",
    }
    assert {place for place, _ in problems} == set(expected)
    for place, start in expected.items():
        assert problem_at(problems, place).startswith(start)


@pytest.mark.parametrize(
    ("key", "hint"),
    [("cursr", "cursor"), ("lookbak", "lookback"), ("campain", "campaign"),
     ("personl", "personal"), ("page_sise", "page_size")],
)
def test_unknown_key_in_a_stream_gets_a_hint(key: str, hint: str) -> None:
    problems = problems_of(dump(with_stream(**{key: "x"})))
    assert problem_at(problems, f"contacts.customers.{key}") == (
        f"unknown key; did you mean {hint!r}?")


def test_unknown_keys_elsewhere() -> None:
    document = minimal(wiraya={"api_kye": API_KEY}, logging={"levle": "info"},
                       zzzqqq=1)
    problems = problems_of(dump(document))
    assert problem_at(problems, "wiraya.api_kye") == "unknown key; did you mean 'api_key'?"
    assert problem_at(problems, "wiraya.api_key") == "required; add it"
    assert problem_at(problems, "logging.levle") == "unknown key; did you mean 'level'?"
    assert problem_at(problems, "zzzqqq") == "unknown key"


def test_unknown_key_in_a_field_map_and_condition() -> None:
    document = with_stream(
        personal={"phoneNumber": {"column": "mobile", "regoin": "SE"}},
        campaign={"campaign": "c", "when": {"column": "s", "equals": 1, "equal": 2}},
    )
    problems = problems_of(dump(document))
    assert problem_at(problems, "contacts.customers.personal.phoneNumber.regoin") == (
        "unknown key; did you mean 'region'?")
    assert problem_at(problems, "contacts.customers.campaign.when.equal") == (
        "unknown key; did you mean 'equals'?")


def test_empty_document() -> None:
    problems = problems_of("")
    assert ("", "configure at least one stream under contacts: or events:") in problems
    assert problem_at(problems, "source") == "required; add it"
    assert problem_at(problems, "wiraya") == "required; add it"


def test_no_streams() -> None:
    problems = problems_of(dump(minimal(contacts={})))
    assert problems == [("", "configure at least one stream under contacts: or events:")]


def test_stream_without_fields() -> None:
    problems = problems_of(dump(with_stream(personal={})))
    assert "map at least one field" in problem_at(problems, "contacts.customers")


def test_bad_stream_name() -> None:
    document = minimal()
    document["contacts"]["my customers!"] = document["contacts"].pop("customers")
    problems = problems_of(dump(document))
    assert "letters, digits" in problem_at(problems, "contacts.my customers!")


def test_reserved_event_fields() -> None:
    document = minimal(events={"orders": {"table": "o", "id": "id", "contact": "c",
                                          "cursor": "t", "fields": {"at": "x", "amount": "y"}}})
    problems = problems_of(dump(document))
    assert "at is set by the connector" in problem_at(problems, "events.orders.fields")


# ---------------------------------------------------------------------------
# Environment variables


def test_unset_variable_is_a_problem_at_its_place() -> None:
    problems = problems_of(DESIGN_CONFIG, env={"DATABASE_URL": DB_URL})
    assert problems == [("wiraya.api_key", "environment variable WIRAYA_API_KEY is not set; "
                                           "export it, or write ${WIRAYA_API_KEY:-default} "
                                           "to give a default")]


def test_empty_variable_counts_as_unset() -> None:
    problems = problems_of(DESIGN_CONFIG, env={**ENV, "WIRAYA_API_KEY": ""})
    assert [place for place, _ in problems] == ["wiraya.api_key"]
    assert "WIRAYA_API_KEY is not set" in problems[0][1]


def test_unset_variables_everywhere_are_all_listed() -> None:
    document = minimal(wiraya={"api_key": "${KEY}", "base_url": "${BASE}"})
    document["contacts"]["customers"]["campaigns"] = [{"campaign": "${FLOW}"}]
    problems = problems_of(dump(document), env={})
    assert {place for place, _ in problems} == {
        "source.url", "wiraya.api_key", "wiraya.base_url",
        "contacts.customers.campaigns[0].campaign"}
    assert "FLOW is not set" in problem_at(problems, "contacts.customers.campaigns[0].campaign")


def test_variable_defaults_and_dollars() -> None:
    document = minimal(
        source={"url": "${DB:-sqlite:///fallback.db}", "timezone": "${TZ_NAME:-UTC}"},
        wiraya={"api_key": "pre-${WIRAYA_API_KEY}-$$-$${NOT_A_VAR}-a$b",
                "base_url": "${BASE:-https://api.wiraya.ai}"},
    )
    document["contacts"]["customers"]["table"] = "${SCHEMA:-public}.${TABLE}"
    settings = config.parse(dump(document), env={"WIRAYA_API_KEY": "k1", "TABLE": "people",
                                                 "TZ_NAME": "Europe/Stockholm"})
    assert settings.source.url.get_secret_value() == "sqlite:///fallback.db"
    assert settings.source.timezone == "Europe/Stockholm"
    assert settings.wiraya.api_key.get_secret_value() == "pre-k1-$-${NOT_A_VAR}-a$b"
    assert settings.wiraya.base_url == "https://api.wiraya.ai"
    assert str(settings.contacts["customers"].table) == "public.people"


def test_variable_set_wins_over_default() -> None:
    settings = config.parse(dump(minimal(source={"url": "${DATABASE_URL:-sqlite:///x.db}"})),
                            env=ENV)
    assert settings.source.url.get_secret_value() == DB_URL


def test_variable_value_is_not_expanded_again() -> None:
    settings = config.parse(dump(minimal()), env={**ENV, "WIRAYA_API_KEY": "a${OTHER}$$b"})
    assert settings.wiraya.api_key.get_secret_value() == "a${OTHER}$$b"


# ---------------------------------------------------------------------------
# The API's base URL


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.wiraya.ai", "https://api.wiraya.ai"),
        ("https://api.wiraya.ai/", "https://api.wiraya.ai"),
        ("https://eu.example.com:8443/wiraya", "https://eu.example.com:8443/wiraya"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:9000/", "http://localhost:9000"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_base_urls_accepted(url: str, expected: str) -> None:
    settings = config.parse(dump(minimal(wiraya={"api_key": "k", "base_url": url})), env=ENV)
    assert settings.wiraya.base_url == expected


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://api.wiraya.ai", "https://"),
        ("HTTP://api.wiraya.ai", "https://"),
        ("http://10.0.0.5:8080", "https://"),
        ("http://127.0.0.1.nip.io", "https://"),
        ("http://localhost@evil.example", "https://"),
        ("ftp://api.wiraya.ai", "not a URL"),
        ("api.wiraya.ai", "not a URL"),
        ("https://", "not a URL"),
    ],
)
def test_base_urls_refused(url: str, words: str) -> None:
    problems = problems_of(dump(minimal(wiraya={"api_key": "k", "base_url": url})))
    assert words in problem_at(problems, "wiraya.base_url")


# ---------------------------------------------------------------------------
# Source: database URL and time zone


@pytest.mark.parametrize("url", ["sqlite:///demo.db", "sqlite://", "sqlite:////abs/demo.db",
                                 "postgresql+psycopg://u@localhost/db",
                                 "postgresql+psycopg://u:p@h:5433/db?sslmode=require"])
def test_database_urls_accepted(url: str) -> None:
    settings = config.parse(dump(minimal(source={"url": url})), env=ENV)
    assert settings.source.url.get_secret_value() == url


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("oracle+cx_oracle://u:p@h/db", "'oracle' database is not supported"),
        ("mssql+pyodbc://u:p@h/db", "'mssql' database is not supported"),
        ("postgresql+psycopg2://u:p@h/db", "psycopg 3 driver"),
        ("not a url at all", "not a database URL"),
        ("", "not a database URL"),
    ],
)
def test_database_urls_refused(url: str, words: str) -> None:
    problems = problems_of(dump(minimal(source={"url": url})))
    assert words in problem_at(problems, "source.url")


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "", "UTC+2",
                                  "Europe/Stockholm "])
def test_bad_time_zone(zone: str) -> None:
    problems = problems_of(dump(minimal(source={"url": "sqlite:///x.db", "timezone": zone})))
    assert "unknown time zone" in problem_at(problems, "source.timezone")


# ---------------------------------------------------------------------------
# Streams: conditions, campaigns, cross-stream checks


@pytest.mark.parametrize(
    ("when", "count"),
    [
        ({"column": "status"}, 0),
        ({"column": "status", "equals": "a", "not_equals": "b"}, 2),
        ({"column": "status", "in": ["a"], "not_in": ["b"]}, 2),
        ({"column": "status", "is_null": True, "not_null": False}, 2),
    ],
)
def test_condition_needs_exactly_one_operator(when: dict[str, Any], count: int) -> None:
    problems = problems_of(dump(with_stream(campaign={"campaign": "c", "when": when})))
    message = problem_at(problems, "contacts.customers.campaign.when")
    assert message.startswith("give exactly one of equals, not_equals, in, not_in, not_null, "
                              "is_null")
    assert message.endswith(f"(got {count})")


def test_condition_operators() -> None:
    events = [{"name": f"E{i}", "when": {"column": "s", **op}} for i, op in enumerate(
        [{"equals": None}, {"not_equals": 1}, {"in": [1, "a"]}, {"not_in": []},
         {"not_null": True}, {"is_null": True}])]
    settings = config.parse(dump(with_stream(events=events)), env=ENV)
    conditions = [event.when for event in settings.contacts["customers"].events]
    assert conditions[0].equals is None
    assert "equals" in conditions[0].model_fields_set
    assert conditions[2].in_ == [1, "a"]
    assert conditions[3].not_in == []


def test_condition_in_needs_a_list() -> None:
    problems = problems_of(dump(with_stream(campaign={"campaign": "c",
                                                      "when": {"column": "s", "in": "a"}})))
    assert problem_at(problems, "contacts.customers.campaign.when.in")


def test_campaign_and_campaigns_together_are_refused() -> None:
    problems = problems_of(dump(with_stream(campaign={"campaign": "a"},
                                            campaigns=[{"campaign": "b"}])))
    assert problems == [("contacts.customers", "give either campaign or campaigns, not both")]


def test_campaign_and_campaigns_together_do_not_hide_other_problems() -> None:
    document = with_stream(campaign={"campaign": "a"}, campaigns=[{"campaign": "b"}])
    del document["contacts"]["customers"]["cursor"]
    problems = problems_of(dump(document))
    assert problem_at(problems, "contacts.customers") == (
        "give either campaign or campaigns, not both")
    assert problem_at(problems, "contacts.customers.cursor") == "required; add it"


def test_campaign_short_and_long_forms() -> None:
    short = config.parse(dump(with_stream(campaign={"campaign": "a", "iteration": 202611})),
                         env=ENV).contacts["customers"]
    long = config.parse(dump(with_stream(campaigns=[{"campaign": "a",
                                                     "iteration": "202611"}])),
                        env=ENV).contacts["customers"]
    assert short.links == long.links
    assert short.fingerprint() == long.fingerprint()
    assert short.links[0].iteration == config.Iteration(value="202611")


@pytest.mark.parametrize(
    ("iteration", "words"),
    [
        ({"format": "%Y-%m"}, "give either a fixed text"),
        ({"value": "2026", "column": "c"}, "give either a fixed text"),
        ({"value": "2026", "format": "%Y"}, "format applies to a column"),
    ],
)
def test_bad_iterations(iteration: dict[str, Any], words: str) -> None:
    problems = problems_of(dump(with_stream(campaign={"campaign": "c",
                                                      "iteration": iteration})))
    assert words in problem_at(problems, "contacts.customers.campaign.iteration")


def test_iteration_column_is_read() -> None:
    settings = config.parse(dump(with_stream(campaign={
        "campaign": "c", "iteration": {"column": "cohort", "format": "%Y-%m"},
        "when": {"column": "status", "equals": "active"}},
        events=[{"name": "OptOut", "when": {"column": "opted_out", "equals": True},
                 "at": "opted_out_at"}])), env=ENV)
    assert settings.contacts["customers"].columns() == [
        "customer_id", "updated_at", "mobile", "cohort", "status", "opted_out", "opted_out_at"]


def test_events_contacts_stream_must_name_a_contact_stream() -> None:
    document = minimal(events={"orders": {"table": "o", "id": "id", "contact": "c",
                                          "cursor": "t", "contacts_stream": "custmers"}})
    problems = problems_of(dump(document))
    assert problems == [("events.orders.contacts_stream",
                         "'custmers' is not a contact stream (known: customers)")]


def test_events_contacts_stream_with_no_contact_streams() -> None:
    document = minimal(events={"orders": {"table": "o", "id": "id", "contact": "c",
                                          "cursor": "t", "contacts_stream": "customers"}})
    del document["contacts"]
    problems = problems_of(dump(document))
    assert problems == [("events.orders.contacts_stream",
                         "'customers' is not a contact stream (known: none)")]


def test_duplicate_stream_names_across_sections() -> None:
    document = minimal(events={"customers": {"table": "o", "id": "id", "contact": "c",
                                             "cursor": "t"}})
    problems = problems_of(dump(document))
    assert problems == [("events.customers",
                         "stream names must be unique; this name is also a contact stream")]


@pytest.mark.parametrize(
    ("table", "schema", "name"),
    [
        ('we"ird; DROP TABLE x', None, 'we"ird; DROP TABLE x'),
        ('public.we"ird; DROP TABLE x', "public", 'we"ird; DROP TABLE x'),
        ("select", None, "select"),
        ("'; DELETE FROM users; --", None, "'; DELETE FROM users; --"),
        ({"schema": 'sch"ema', "name": "from"}, 'sch"ema', "from"),
    ],
)
def test_table_names_are_names(table: Any, schema: str | None, name: str) -> None:
    settings = config.parse(dump(with_stream(table=table)), env=ENV)
    ref = settings.contacts["customers"].table
    assert (ref.schema_, ref.name) == (schema, name)


def test_fingerprint_follows_what_shapes_payloads() -> None:
    base = config.parse(dump(minimal()), env=ENV).contacts["customers"]
    same = config.parse(dump(with_stream(every="5m", lookback="1h", page_size=10)),
                        env=ENV).contacts["customers"]
    assert same.fingerprint() == base.fingerprint()
    for change in ({"personal": {"phoneNumber": {"column": "mobile", "region": "DE"}}},
                   {"personal": {"phoneNumber": {"column": "phone", "region": "SE"}}},
                   {"general": {"city": "city"}},
                   {"campaign": {"campaign": "c"}},
                   {"id": "other_id"}):
        changed = config.parse(dump(with_stream(**change)), env=ENV).contacts["customers"]
        assert changed.fingerprint() != base.fingerprint(), change


# ---------------------------------------------------------------------------
# YAML and document shape


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("a: [1, 2\nb: 3\n", "line 2, column 2"),
        ("source:\n  url: x\n\twiraya: {}\n", "line 3, column 1"),
        ("source: {url: 'x'\n", "line 2, column 1"),
    ],
)
def test_yaml_syntax_error_has_line_and_column(text: str, place: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1
    assert problems[0][0] == place
    assert problems[0][1].startswith("not valid YAML: ")


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just text\n", "42\n", "[]\n"])
def test_document_must_be_a_mapping(text: str) -> None:
    assert problems_of(text) == [("", "the config must be a mapping of keys "
                                      "(source:, wiraya:, ...)")]


def test_source_names_the_file() -> None:
    with pytest.raises(ConfigError) as info:
        config.parse("- 1\n", source="/etc/connector.yaml", env=ENV)
    assert str(info.value).startswith("/etc/connector.yaml: 1 problem(s)")
    assert info.value.source == "/etc/connector.yaml"


# ---------------------------------------------------------------------------
# load(): files, missing files, relative state paths


def test_load_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "connector.yaml"
    with pytest.raises(ConfigError) as info:
        config.load(missing, env=ENV)
    message = str(info.value)
    assert str(missing) in message
    assert "--config" in message
    assert "$CONNECTOR_CONFIG" in message
    assert "./connector.yaml" in message
    assert info.value.exit_code == 2


def test_load_resolves_relative_state_against_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "etc" / "connector"
    folder.mkdir(parents=True)
    path = folder / "connector.yaml"
    path.write_text(DESIGN_CONFIG, encoding="utf-8")
    settings = config.load(path, env=ENV)
    assert settings.state == folder / "state" / "connector.db"
    assert settings.state.is_absolute()

    path.write_text(dump(minimal(state="data/memory.db")), encoding="utf-8")
    assert config.load(str(path), env=ENV).state == folder / "data" / "memory.db"

    absolute = tmp_path / "elsewhere" / "memory.db"
    path.write_text(dump(minimal(state=str(absolute))), encoding="utf-8")
    assert config.load(path, env=ENV).state == absolute


def test_load_default_state_is_beside_the_file(tmp_path: Path) -> None:
    path = tmp_path / "connector.yaml"
    path.write_text(dump(minimal()), encoding="utf-8")
    assert config.load(path, env=ENV).state == tmp_path / "state" / "connector.db"


def test_load_reports_problems_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "connector.yaml"
    path.write_text("source: [\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        config.load(path, env=ENV)
    assert str(info.value).startswith(f"{path}: 1 problem(s)")


def test_load_refuses_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "connector.yaml"
    path.write_bytes(b"source: {url: '\xff\xfe'}\n")
    with pytest.raises(ConfigError) as info:
        config.load(path, env=ENV)
    assert "cannot read the config" in str(info.value)


def test_find_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CONNECTOR_CONFIG", raising=False)
    assert config.find(None) == Path("connector.yaml")
    monkeypatch.setenv("CONNECTOR_CONFIG", str(tmp_path / "env.yaml"))
    assert config.find(None) == tmp_path / "env.yaml"
    assert config.find(tmp_path / "flag.yaml") == tmp_path / "flag.yaml"


# ---------------------------------------------------------------------------
# Secrets never show


def assert_no_secret(text: str) -> None:
    assert API_KEY not in text
    assert DB_PASSWORD not in text


def test_secrets_hidden_in_settings() -> None:
    settings = config.parse(DESIGN_CONFIG, env=ENV)
    for text in (str(settings), repr(settings), str(settings.source), repr(settings.wiraya),
                 settings.model_dump_json(), str(settings.model_dump())):
        assert_no_secret(text)
    assert settings.source.display_url == "postgresql+psycopg://connector:***@db.internal:5432/shop"


def test_secrets_hidden_in_config_errors() -> None:
    broken = textwrap.dedent(f"""
        source:
          url: {DB_URL}
          timezone: Nowhere/Land
          extra: {DB_PASSWORD}
        wiraya:
          api_key: {API_KEY}
          base_url: http://api.wiraya.ai
          rate_limit: 50/fortnight
          apikey: {API_KEY}
        contacts:
          customers: {{table: t, id: i, personal: {{phoneNumber: m}}}}
        """)
    with pytest.raises(ConfigError) as info:
        config.parse(broken, env={})
    assert len(info.value.problems) == 6
    assert_no_secret(str(info.value))
    assert_no_secret(repr(info.value))


@pytest.mark.parametrize(
    "url",
    [
        f"oracle://connector:{DB_PASSWORD}@db/shop",
        f"mysql+mysqldb://connector:{DB_PASSWORD}@db/shop",
        f"postgres://connector:{DB_PASSWORD}@db:notaport/shop",
        f"postgresql+psycopg://connector:{DB_PASSWORD}@db:notaport/shop",
        f"{DB_PASSWORD}",
    ],
)
def test_bad_database_url_errors_hide_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse(dump(minimal(source={"url": url})), env=ENV)
    assert_no_secret(str(info.value))


def test_bad_api_key_values_are_not_echoed() -> None:
    for key in ("   ", ""):
        problems = problems_of(dump(minimal(wiraya={"api_key": key})))
        assert "API key is empty" in problem_at(problems, "wiraya.api_key")
    with pytest.raises(ConfigError) as info:
        config.parse(dump(minimal(wiraya={"api_key": [API_KEY]})), env=ENV)
    assert_no_secret(str(info.value))


def test_yaml_error_does_not_echo_the_line() -> None:
    text = f"wiraya:\n  api_key: {API_KEY}\n  base_url: [{API_KEY}\n"
    with pytest.raises(ConfigError) as info:
        config.parse(text, env=ENV)
    assert_no_secret(str(info.value))


def test_display_url_hides_a_password_in_the_query() -> None:
    url = f"postgresql+psycopg://connector@db.internal/shop?password={DB_PASSWORD}"
    settings = config.parse(dump(minimal(source={"url": url})), env=ENV)
    assert DB_PASSWORD not in settings.source.display_url


def test_a_password_with_an_unescaped_at_sign_is_refused_without_showing_it() -> None:
    url = "postgresql+psycopg://connector:Pa55@SECRETTAIL@db.internal:5432/shop"
    with pytest.raises(ConfigError) as caught:
        config.parse(dump(minimal(source={"url": url})), env=ENV)
    assert caught.value.problems == [("source.url", "the host part holds an @; if the "
                                                    "password has one, write it as %40 "
                                                    "(URL-encoded)")]
    assert "SECRETTAIL" not in str(caught.value) and "Pa55" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://connector:{DB_PASSWORD}",  # forgot @host
        f"postgresql+psycopg://connector:{DB_PASSWORD}/shop",
    ],
)
def test_bad_port_error_hides_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse(dump(minimal(source={"url": url})), env=ENV)
    assert_no_secret(str(info.value))


# ---------------------------------------------------------------------------
# cursor: none, reconcile, on_delete


def test_cursor_none_reads_no_cursor_column() -> None:
    settings = config.parse(dump(with_stream(cursor="none", on_delete={"event": "OptOut"})),
                            env=ENV)
    customers = settings.contacts["customers"]
    assert customers.compares_whole
    assert customers.columns() == ["customer_id", "mobile"]
    assert customers.on_delete == config.DeleteEvent(event="OptOut")
    assert customers.reconcile is None


def test_reconcile_and_on_delete_on_a_cursor_stream() -> None:
    settings = config.parse(dump(with_stream(reconcile="1h", on_delete="ignore")), env=ENV)
    customers = settings.contacts["customers"]
    assert not customers.compares_whole
    assert customers.reconcile == timedelta(hours=1)
    assert customers.on_delete == "ignore"


@pytest.mark.parametrize(("changes", "message"), [
    ({"cursor": "none", "lookback": "10m"},
     "lookback has no meaning with cursor: none (each pass reads the whole table); remove "
     "lookback"),
    ({"cursor": "none", "reconcile": "1h"},
     "reconcile has no meaning with cursor: none (every pass is a full comparison already); "
     "remove reconcile"),
])
def test_cursor_none_refuses_what_has_no_meaning(changes: dict[str, Any], message: str) -> None:
    assert problem_at(problems_of(dump(with_stream(**changes))), "contacts.customers") == message


def test_an_event_stream_needs_a_cursor() -> None:
    document = minimal(events={"orders": {**ORDERS, "cursor": "none"}})
    assert problem_at(problems_of(dump(document)), "events.orders.cursor") == (
        "an event stream needs a cursor (events are read in order, each once); a growing id "
        "works: cursor: <the id column>")


@pytest.mark.parametrize("key", ["reconcile", "on_delete"])
def test_reconcile_and_on_delete_are_for_contact_streams(key: str) -> None:
    document = minimal(events={"orders": {**ORDERS, key: "1h"}})
    assert problem_at(problems_of(dump(document)), f"events.orders.{key}") == (
        "is for contact streams only: an event row once sent is history, its deletion sends "
        "nothing")


@pytest.mark.parametrize(("value", "shown"), [
    ("optout", "'optout'"), ({"event": ""}, "{'event': ''}"), ({"evnt": "X"}, "{'evnt': 'X'}")])
def test_on_delete_is_ignore_or_an_event(value: Any, shown: str) -> None:
    assert problems_of(dump(with_stream(on_delete=value))) == [(
        "contacts.customers.on_delete", f"{shown} is not a choice: give ignore (count deleted "
        "rows, send nothing) or {event: NAME} (e.g. {event: OptOut})")]
