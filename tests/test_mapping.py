"""Rows to Wiraya payloads (connector.mapping): ids, phone numbers, dates, times, text,
numbers, conditions, campaign links, column events, and the input digest.

Mappers are built from real `config.ContactStream` / `config.EventStream` objects and fed
rows as tuples in `stream.columns()` order, exactly as `sync.py` does.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector import config
from connector.mapping import (
    MAX_KEY,
    MAX_TEXT,
    ContactMapper,
    EventMapper,
    Flag,
    Link,
    MappedContact,
    MappedEvent,
    Rejected,
    as_boolean,
    as_date,
    as_key,
    as_number,
    as_text,
    as_timestamp,
    auto_value,
    event_body,
    holds,
    phone_digits,
)
from tests import tiers

STOCKHOLM = ZoneInfo("Europe/Stockholm")
NEW_YORK = ZoneInfo("America/New_York")
Z_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")
# E.164 allows 15 digits; phonenumbers' metadata accepts a few longer German numbers.
E164_DIGITS = re.compile(r"^[1-9]\d{6,16}$")


# ---------------------------------------------------------------------------
# Helpers: real config objects, rows in `columns()` order.


def contact_stream(**extra: Any) -> config.ContactStream:
    spec: dict[str, Any] = {
        "table": "public.customers",
        "id": "customer_id",
        "cursor": "updated_at",
        "personal": {"phoneNumber": {"column": "mobile", "region": "SE"}},
    }
    spec.update(extra)
    return config.ContactStream.model_validate(spec)


def event_stream(**extra: Any) -> config.EventStream:
    spec: dict[str, Any] = {
        "table": "public.orders",
        "id": "order_id",
        "contact": "customer_id",
        "cursor": "created_at",
    }
    spec.update(extra)
    return config.EventStream.model_validate(spec)


def contact_mapper(stream: config.ContactStream, zone: Any = UTC) -> ContactMapper:
    return ContactMapper(stream, stream.columns(), zone)


def event_mapper(stream: config.EventStream, zone: Any = UTC) -> EventMapper:
    return EventMapper(stream, stream.columns(), zone)


def make_row(stream: config.ContactStream | config.EventStream, **values: Any) -> tuple[Any, ...]:
    """A row in the stream's column order; columns not named are NULL."""
    unknown = set(values) - set(stream.columns())
    assert not unknown, f"not columns of the stream: {unknown}"
    return tuple(values.get(column) for column in stream.columns())


GOOD = {"customer_id": 42, "updated_at": datetime(2026, 11, 3, 9, 0), "mobile": "070-413 45 61"}


def rejected(call: Callable[[], Any]) -> str:
    """The reason of the `Rejected` that `call` raises."""
    with pytest.raises(Rejected) as info:
        call()
    reason = info.value.reason
    assert isinstance(reason, str)
    assert reason.strip()
    assert str(info.value) == reason
    return reason


# ---------------------------------------------------------------------------
# as_key


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, "1"),
        (0, "0"),
        (-7, "-7"),
        (2**63, "9223372036854775808"),
        (1.0, "1"),
        (-3.0, "-3"),
        (Decimal("42"), "42"),
        (Decimal("42.000"), "42"),
        ("abc", "abc"),
        ("  abc  ", "abc"),
        ("0042", "0042"),
        ("a/b", "a/b"),
        ("what?", "what?"),
        ("x#1", "x#1"),
        ("100%", "100%"),
        ("with inner spaces", "with inner spaces"),
        ("kund-ÅÄÖ-日本-😀", "kund-ÅÄÖ-日本-😀"),
        ("x" * MAX_KEY, "x" * MAX_KEY),
    ],
)
def test_as_key_accepts(value: Any, expected: str) -> None:
    assert as_key(value) == expected


def test_as_key_uuid_is_its_text() -> None:
    value = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert as_key(value) == "12345678-1234-5678-1234-567812345678"


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "  ",
        "\t\n ",
        True,
        False,
        1.5,
        -0.25,
        Decimal("2.5"),
        math.nan,
        math.inf,
        -math.inf,
        "x" * (MAX_KEY + 1),
        "a\x00b",
        "a\x01b",
        "a\x1bb",
        "a\x1fb",
        "a\x7fb",
        "abc\udc80",  # a lone surrogate: invalid UTF-8 handed over with surrogateescape
        "\ud800",
        b"abc",
        bytearray(b"abc"),
        [1],
        {"a": 1},
        date(2026, 1, 1),
        datetime(2026, 1, 1),
    ],
    ids=repr,
)
def test_as_key_rejects(value: Any) -> None:
    rejected(lambda: as_key(value))


def test_as_key_reason_names_what() -> None:
    assert rejected(lambda: as_key(None, "contact id (column c)")).startswith(
        "contact id (column c)")
    assert "id" in rejected(lambda: as_key(""))


def test_as_key_length_reason_gives_the_limit_not_the_id() -> None:
    value = "secret-" + "y" * 400
    reason = rejected(lambda: as_key(value))
    assert str(MAX_KEY) in reason
    assert value not in reason


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"),
                                   Decimal("sNaN")], ids=repr)
def test_as_key_rejects_non_finite_decimals(value: Decimal) -> None:
    rejected(lambda: as_key(value))


@pytest.mark.parametrize("value", [10**300, Decimal("1e300"), Decimal("1e5000")],
                         ids=["int-1e300", "decimal-1e300", "decimal-1e5000"])
def test_as_key_rejects_over_long_numeric_ids(value: Any) -> None:
    rejected(lambda: as_key(value))


@pytest.mark.parametrize("value", ["a\nb", "a\tb", "a\rb", "a\x85b", "a\x9bb"], ids=repr)
def test_as_key_rejects_every_control_character(value: str) -> None:
    rejected(lambda: as_key(value))


# ---------------------------------------------------------------------------
# phone_digits


SE_SHAPES = [
    "070-413 45 61",
    "0704134561",
    "070 413 45 61",
    "070.413.45.61",
    "(070) 413 45 61",
    "  070-413 45 61  ",
    "+46704134561",
    "+46 70 413 45 61",
    "+46-70-413-45-61",
    "+46 (0)70-413 45 61",
    "0046 70 413 45 61",
    "0046704134561",
    "46704134561",
]


@pytest.mark.parametrize("text", SE_SHAPES)
def test_phone_swedish_shapes(text: str) -> None:
    assert phone_digits(text, "SE") == "46704134561"


def test_phone_as_integer() -> None:
    assert phone_digits(46704134561, "SE") == "46704134561"
    assert phone_digits(704134561, "SE") == "46704134561"


@pytest.mark.parametrize(
    ("text", "region", "expected"),
    [
        ("07911 123456", "GB", "447911123456"),
        ("+44 7911 123456", "GB", "447911123456"),
        ("0044 7911 123456", "GB", "447911123456"),
        ("020 7946 0018", "GB", "442079460018"),
        ("(020) 7946 0018", "GB", "442079460018"),
        ("(202) 555-0125", "US", "12025550125"),
        ("202-555-0125", "US", "12025550125"),
        ("202.555.0125", "US", "12025550125"),
        ("1-202-555-0125", "US", "12025550125"),
        ("+1 (202) 555-0125", "US", "12025550125"),
        ("011 46 70 413 45 61", "US", "46704134561"),  # US international prefix
        ("030 1234567", "DE", "49301234567"),
        ("+49 30 1234567", "DE", "49301234567"),
        ("0049 30 1234567", "DE", "49301234567"),
        ("+49 (0)30 1234567", "DE", "49301234567"),
        ("0151 12345678", "DE", "4915112345678"),
    ],
)
def test_phone_other_regions(text: str, region: str, expected: str) -> None:
    assert phone_digits(text, region) == expected


@pytest.mark.parametrize("region", ["SE", "GB", "US", "DE", None])
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+46 70 413 45 61", "46704134561"),
        ("+44 7911 123456", "447911123456"),
        ("+1 202 555 0125", "12025550125"),
        ("+49 30 1234567", "49301234567"),
        ("0046 70 413 45 61", "46704134561"),
        ("0044 7911 123456", "447911123456"),
    ],
)
def test_phone_international_forms_ignore_region(text: str, region: str | None,
                                                 expected: str) -> None:
    assert phone_digits(text, region) == expected


def test_phone_local_form_needs_a_region() -> None:
    reason = rejected(lambda: phone_digits("070-413 45 61", None))
    assert "region" in reason
    assert "070" not in reason


def test_phone_local_form_of_another_country_is_refused() -> None:
    reason = rejected(lambda: phone_digits("070-413 45 61", "GB"))
    assert "GB" in reason


GARBAGE_PHONES = [
    "abc",
    "not-a-number",
    "123",
    "46",
    "+46",
    "0",
    "00000000",
    "070-413 45 6",
    "+46 70 413 45 61 99 99 99",
    "+0 123",
    "11111111111111111111",
    "070-SECRET-99",
    "9" * 300,
    "070\udc80413",
    "\udc80",
]


@pytest.mark.parametrize("text", GARBAGE_PHONES, ids=repr)
@pytest.mark.parametrize("region", ["SE", "US", None])
def test_phone_garbage_is_rejected_without_echo(text: str, region: str | None) -> None:
    reason = rejected(lambda: phone_digits(text, region))
    assert text not in reason
    assert text.strip() not in reason
    digits = re.sub(r"\D", "", text)
    if len(digits) >= 3:
        assert digits not in reason
    assert "SECRET" not in reason


@pytest.mark.parametrize("value", [None, "", "   ", 70.5, 46704134561.0, True, b"0704134561",
                                   ["0704134561"], Decimal("46704134561")], ids=repr)
def test_phone_non_text_is_rejected(value: Any) -> None:
    reason = rejected(lambda: phone_digits(value, "SE"))
    assert "0704134561" not in reason
    assert "46704134561" not in reason


# ---------------------------------------------------------------------------
# as_date


def test_as_date_shapes() -> None:
    assert as_date(date(1980, 1, 1), UTC, "birthDate") == "1980-01-01"
    assert as_date("1980-01-01", UTC, "birthDate") == "1980-01-01"
    assert as_date(" 1980-01-01 ", UTC, "birthDate") == "1980-01-01"
    assert as_date(datetime(1980, 1, 1, 23, 59), STOCKHOLM, "birthDate") == "1980-01-01"
    assert as_date(date(1900, 1, 1), UTC, "birthDate") == "1900-01-01"


def test_as_date_aware_time_is_the_day_in_the_configured_zone() -> None:
    late = datetime(2026, 1, 1, 23, 30, tzinfo=UTC)  # 00:30 on Jan 2 in Stockholm
    assert as_date(late, STOCKHOLM, "since") == "2026-01-02"
    assert as_date(late, UTC, "since") == "2026-01-01"


def test_as_date_birth_date_range() -> None:
    tomorrow = datetime.now(UTC).date() + timedelta(days=2)
    assert "future" in rejected(lambda: as_date(tomorrow, UTC, "birthDate"))
    assert "future" in rejected(lambda: as_date(tomorrow.isoformat(), UTC, "birthDate"))
    assert "1900" in rejected(lambda: as_date(date(1899, 12, 31), UTC, "birthDate"))
    assert "1900" in rejected(lambda: as_date("0001-01-01", UTC, "birthDate"))
    # Other date fields have no such range.
    assert as_date(date(1850, 6, 1), UTC, "foundedOn") == "1850-06-01"
    assert as_date(tomorrow, UTC, "renewalDate") == tomorrow.isoformat()


@pytest.mark.parametrize("value", ["", "soon", "1980-13-01", "31/12/1980", "1980\udc80",
                                   12, 1.5, True, b"1980-01-01", None], ids=repr)
def test_as_date_rejects(value: Any) -> None:
    reason = rejected(lambda: as_date(value, UTC, "birthDate"))
    if isinstance(value, str) and value:
        assert value not in reason


@pytest.mark.parametrize(
    "value",
    [datetime.max.replace(tzinfo=UTC),
     datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=5)))],
    ids=repr,
)
def test_as_date_rejects_out_of_range_times(value: datetime) -> None:
    rejected(lambda: as_date(value, STOCKHOLM, "since"))


# ---------------------------------------------------------------------------
# as_timestamp


@pytest.mark.parametrize(
    ("value", "zone", "expected"),
    [
        (datetime(2026, 7, 1, 12, 0), STOCKHOLM, "2026-07-01T10:00:00Z"),  # CEST, +2
        (datetime(2026, 1, 15, 12, 0), STOCKHOLM, "2026-01-15T11:00:00Z"),  # CET, +1
        (datetime(2026, 1, 15, 12, 0), UTC, "2026-01-15T12:00:00Z"),
        (datetime(2026, 1, 15, 12, 0), NEW_YORK, "2026-01-15T17:00:00Z"),
        (datetime(2026, 7, 1, 12, 0, tzinfo=timezone(timedelta(hours=-4))), STOCKHOLM,
         "2026-07-01T16:00:00Z"),
        (datetime(2026, 7, 1, 12, 0, tzinfo=UTC), STOCKHOLM, "2026-07-01T12:00:00Z"),
        (datetime(2026, 1, 15, 12, 0, 0, 123456), STOCKHOLM, "2026-01-15T11:00:00.123456Z"),
        (datetime(2026, 1, 15, 12, 0, 0, 1), UTC, "2026-01-15T12:00:00.000001Z"),
        (datetime(2026, 1, 15, 12, 0, 0, 500000), UTC, "2026-01-15T12:00:00.5Z"),
        (date(2026, 7, 1), STOCKHOLM, "2026-06-30T22:00:00Z"),
        (date(2026, 1, 15), UTC, "2026-01-15T00:00:00Z"),
        ("2026-07-01T12:00:00+02:00", UTC, "2026-07-01T10:00:00Z"),
        ("2026-07-01 12:00:00", STOCKHOLM, "2026-07-01T10:00:00Z"),
        ("2026-07-01T12:00:00.250Z", STOCKHOLM, "2026-07-01T12:00:00.25Z"),
        ("2026-01-15", STOCKHOLM, "2026-01-14T23:00:00Z"),
    ],
)
def test_as_timestamp(value: Any, zone: Any, expected: str) -> None:
    assert as_timestamp(value, zone) == expected


@pytest.mark.parametrize("value", ["", "yesterday", "2026-13-01T00:00:00", "12:00",
                                   "2026\udc80", 1_700_000_000, 1.5, True, None, b"2026-01-01",
                                   datetime.min], ids=repr)
def test_as_timestamp_rejects(value: Any) -> None:
    reason = rejected(lambda: as_timestamp(value, STOCKHOLM))
    if isinstance(value, str) and value:
        assert value not in reason


@pytest.mark.parametrize(
    ("value", "zone", "expected"),
    [
        (datetime(999, 1, 1), UTC, "0999-01-01T00:00:00Z"),
        (date(201, 5, 1), UTC, "0201-05-01T00:00:00Z"),
        # Before 1879 Stockholm kept local mean time, +01:12:12.
        (datetime(1000, 1, 1, 0, 30), STOCKHOLM, "0999-12-31T23:17:48Z"),
    ],
)
def test_as_timestamp_pads_early_years(value: Any, zone: Any, expected: str) -> None:
    assert as_timestamp(value, zone) == expected


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
       st.one_of(st.none(), st.timezones()), st.sampled_from([UTC, STOCKHOLM, NEW_YORK]))
def test_as_timestamp_keeps_the_instant(moment: datetime, tz: Any, zone: Any) -> None:
    if tz is not None:
        moment = moment.replace(tzinfo=tz)
    text = as_timestamp(moment, zone)
    assert Z_TIME.match(text)
    back = datetime.fromisoformat(text.removesuffix("Z") + "+00:00")
    expected = moment if moment.tzinfo else moment.replace(tzinfo=zone)
    assert back == expected


# ---------------------------------------------------------------------------
# as_text, as_number, as_boolean, auto_value


def test_as_text() -> None:
    assert as_text("Anna-Lena Åström", 100) == "Anna-Lena Åström"
    assert as_text(5, 100) == "5"
    assert as_text("x" * 100, 100) == "x" * 100
    reason = rejected(lambda: as_text("secret" + "x" * 100, 100))
    assert "100" in reason
    assert "secret" not in reason
    rejected(lambda: as_text(b"bytes", 100))
    rejected(lambda: as_text(math.nan, 100))
    rejected(lambda: as_text(math.inf, 100))
    reason = rejected(lambda: as_text("Anna\udcc3\udc85", 100))
    assert "Anna" not in reason


@pytest.mark.parametrize(
    ("value", "integer", "expected"),
    [
        (5, True, 5),
        (5.0, True, 5),
        (Decimal("5.000"), True, 5),
        ("  7 ", True, 7),
        ("7.0", True, 7),
        (-3, False, -3),
        (5.5, False, 5.5),
        (1e20, False, 1e20),
        (Decimal("5.25"), False, 5.25),
        (Decimal("5"), False, 5),
        ("2.5", False, 2.5),
    ],
)
def test_as_number(value: Any, integer: bool, expected: float) -> None:
    result = as_number(value, integer)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("value", "integer"),
    [
        (5.5, True),
        (Decimal("5.5"), True),
        ("5.5", True),
        (math.nan, False),
        (math.inf, False),
        (-math.inf, True),
        (Decimal("NaN"), False),
        (Decimal("Infinity"), True),
        ("NaN", False),
        ("inf", False),
        ("abc", False),
        ("", False),
        ("1\udc80", False),
        (True, True),
        (False, False),
        (date(2026, 1, 1), False),
        (b"5", False),
        ([5], False),
    ],
    ids=repr,
)
def test_as_number_rejects(value: Any, integer: bool) -> None:
    rejected(lambda: as_number(value, integer))


@pytest.mark.parametrize("value", ["sNaN", " snan ", Decimal("sNaN"), Decimal("-sNaN")],
                         ids=repr)
@pytest.mark.parametrize("integer", [True, False])
def test_as_number_rejects_signalling_nan(value: Any, integer: bool) -> None:
    rejected(lambda: as_number(value, integer))


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), (1, True), (0, False), ("true", True), ("FALSE", False),
     (" t ", True), ("f", False), ("1", True), ("0", False)],
)
def test_as_boolean(value: Any, expected: bool) -> None:
    assert as_boolean(value) is expected


@pytest.mark.parametrize("value", [2, -1, "yes!", "", "maybe", None, b"1", [True]], ids=repr)
def test_as_boolean_rejects(value: Any) -> None:
    rejected(lambda: as_boolean(value))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        (5, 5),
        (5.5, 5.5),
        (Decimal("5"), 5),
        (Decimal("1.25"), 1.25),
        ("text", "text"),
        ("", ""),
        (datetime(2026, 7, 1, 12, 0), "2026-07-01T10:00:00Z"),
        (datetime(2026, 7, 1, 12, 0, 0, 42, tzinfo=UTC), "2026-07-01T12:00:00.000042Z"),
        (date(2026, 7, 1), "2026-07-01"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
    ],
)
def test_auto_value(value: Any, expected: Any) -> None:
    result = auto_value(value, STOCKHOLM, MAX_TEXT)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("value", [{"a": 1}, [1, 2], (1, 2), {}, []], ids=repr)
def test_auto_value_rejects_nested_values(value: Any) -> None:
    assert "nested" in rejected(lambda: auto_value(value, UTC, MAX_TEXT))


@pytest.mark.parametrize("value", [b"\x00\x01", math.nan, math.inf, Decimal("NaN"),
                                   "a\udc80", "x" * (MAX_TEXT + 1)], ids=lambda v: repr(v)[:20])
def test_auto_value_rejects(value: Any) -> None:
    rejected(lambda: auto_value(value, UTC, MAX_TEXT))


# ---------------------------------------------------------------------------
# Conditions


def cond(**spec: Any) -> config.Condition:
    return config.Condition.model_validate({"column": "c", **spec})


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        ({"equals": "active"}, "active", True),
        ({"equals": "active"}, "Active", False),
        ({"equals": "active"}, None, False),
        ({"equals": 1}, 1, True),
        ({"equals": 1}, "1", True),
        ({"equals": 1}, Decimal("1"), True),
        ({"equals": 1}, 2, False),
        ({"equals": "1"}, 1, True),
        ({"equals": True}, True, True),
        ({"equals": True}, 1, True),
        ({"equals": True}, "t", True),
        ({"equals": True}, "true", True),
        ({"equals": True}, False, False),
        ({"equals": True}, 0, False),
        ({"equals": True}, "maybe", False),
        ({"equals": True}, None, False),
        ({"equals": False}, 0, True),
        ({"equals": False}, "false", True),
        ({"equals": None}, None, True),
        ({"equals": None}, "x", False),
        ({"not_equals": "deleted"}, "active", True),
        ({"not_equals": "deleted"}, "deleted", False),
        ({"not_equals": "deleted"}, None, True),
        ({"in": ["a", "b"]}, "a", True),
        ({"in": ["a", "b"]}, "c", False),
        ({"in": ["a", "b"]}, None, False),
        ({"in": [1, 2]}, "2", True),
        ({"in": []}, "a", False),
        ({"not_in": ["a", "b"]}, "c", True),
        ({"not_in": ["a", "b"]}, "b", False),
        ({"not_null": True}, "", True),
        ({"not_null": True}, 0, True),
        ({"not_null": True}, None, False),
        ({"not_null": False}, None, True),
        ({"is_null": True}, None, True),
        ({"is_null": True}, "", False),
        ({"is_null": False}, "x", True),
        ({"is_null": False}, None, False),
    ],
)
def test_holds(spec: dict[str, Any], value: Any, expected: bool) -> None:
    assert holds(cond(**spec), value) is expected


def test_holds_null_is_not_the_text_none() -> None:
    assert holds(cond(equals=None), "None") is False


def test_holds_survives_signalling_nan() -> None:
    assert holds(cond(equals=1), Decimal("sNaN")) is False


# ---------------------------------------------------------------------------
# ContactMapper


def full_stream() -> config.ContactStream:
    """The design's example stream, with a few typed fields."""
    return contact_stream(
        personal={
            "phoneNumber": {"column": "mobile", "region": "SE"},
            "givenName": "first_name",
            "surName": "last_name",
            "birthDate": "born",
        },
        general={
            "city": "city",
            "timeOfRegistration": "created_at",
            "nrLogins": {"column": "logins", "as": "integer"},
            "vip": {"column": "vip", "as": "boolean"},
            "postCode": {"column": "zip", "as": "string"},
        },
        campaign={"campaign": "welcome-flow", "iteration": "2026-11"},
    )


def test_contact_full_row() -> None:
    stream = full_stream()
    mapper = contact_mapper(stream, STOCKHOLM)
    row = make_row(stream, customer_id=42, updated_at=datetime(2026, 11, 3, 9, 0),
                   mobile="070-413 45 61", first_name="John", last_name="Doe",
                   born=date(1980, 1, 1), city="Testershire",
                   created_at=datetime(2018, 3, 30, 18, 43, 11), logins=Decimal("6"),
                   vip="t", zip=11122)
    mapped = mapper.map(row)
    assert mapped == MappedContact(
        contact_id="42",
        payload={
            "schema": 1,
            "personal": {"phoneNumber": "46704134561", "givenName": "John", "surName": "Doe",
                         "birthDate": "1980-01-01"},
            "general": {"city": "Testershire", "timeOfRegistration": "2018-03-30T16:43:11Z",
                        "nrLogins": 6, "vip": True, "postCode": "11122"},
        },
        links=(Link("42", "welcome-flow", "2026-11"),),
        flags=(),
    )
    assert mapper.key(row) == "42"
    json.dumps(mapped.payload, allow_nan=False)


def test_contact_empty_optional_fields_are_left_out() -> None:
    stream = full_stream()
    mapper = contact_mapper(stream)
    for empty in (None, "", "   ", "\t"):
        row = make_row(stream, **GOOD, first_name=empty, city=empty)
        payload = mapper.map(row).payload
        assert payload["personal"] == {"phoneNumber": "46704134561"}
        assert payload["general"] == {}


@pytest.mark.parametrize("empty", [None, "", "   ", "\n"], ids=repr)
def test_contact_without_phone_is_rejected(empty: Any) -> None:
    stream = contact_stream()
    row = make_row(stream, customer_id=1, mobile=empty)
    reason = rejected(lambda: contact_mapper(stream).map(row))
    assert "phoneNumber" in reason
    assert "mobile" in reason


def test_contact_required_flags() -> None:
    stream = contact_stream(personal={
        "phoneNumber": {"column": "mobile", "required": False},
        "givenName": {"column": "first_name", "required": True},
    })
    mapper = contact_mapper(stream)
    assert mapper.map(make_row(stream, customer_id=1, first_name="Ann")).payload["personal"] \
        == {"givenName": "Ann"}
    reason = rejected(lambda: mapper.map(make_row(stream, customer_id=1, first_name=" ")))
    assert "givenName" in reason


@pytest.mark.parametrize("bad_id", [None, "", "  ", True, 1.5, "a\x00b", "x" * 300, "\udc80"],
                         ids=repr)
def test_contact_bad_id_is_rejected(bad_id: Any) -> None:
    stream = contact_stream()
    row = make_row(stream, **{**GOOD, "customer_id": bad_id})
    reason = rejected(lambda: contact_mapper(stream).map(row))
    assert "id" in reason


def test_contact_phone_reasons_name_the_field_not_the_number() -> None:
    stream = contact_stream()
    mapper = contact_mapper(stream)
    for text in GARBAGE_PHONES:
        reason = rejected(lambda t=text: mapper.map(make_row(stream, **{**GOOD, "mobile": t})))
        assert reason.startswith("personal.phoneNumber (column mobile)")
        assert text not in reason
        assert "SECRET" not in reason


def test_contact_reasons_never_echo_personal_values() -> None:
    stream = contact_stream(
        personal={
            "phoneNumber": {"column": "mobile", "region": "SE"},
            "birthDate": "born",
            "givenName": {"column": "first_name", "max_length": 10},
            "nickname": {"column": "nick", "as": "string"},
        },
        general={
            "nrLogins": {"column": "logins", "as": "integer"},
            "score": {"column": "score", "as": "number"},
            "vip": {"column": "vip", "as": "boolean"},
            "latestLogin": "seen",
        },
    )
    mapper = contact_mapper(stream)
    bad_values = {
        "mobile": "SECRET 070 413",
        "born": "SECRET-1980",
        "first_name": "SECRETSECRETSECRET",
        "nick": "SECRET\udc80",
        "logins": "SECRET",
        "score": "12.5SECRET",
        "vip": "SECRET",
        "seen": "SECRET 2026-01-01",
    }
    good = {**GOOD, "born": None}
    for column, value in bad_values.items():
        reason = rejected(lambda c=column, v=value: mapper.map(make_row(stream,
                                                                        **{**good, c: v})))
        assert "SECRET" not in reason, (column, reason)
        assert f"column {column}" in reason, reason


def test_contact_birth_date_range() -> None:
    stream = contact_stream(personal={"phoneNumber": {"column": "mobile", "region": "SE"},
                                      "birthDate": "born"})
    mapper = contact_mapper(stream)
    future = datetime.now(UTC).date() + timedelta(days=3)
    for born in (future, date(1899, 12, 31), "1850-01-01", "someday"):
        reason = rejected(lambda b=born: mapper.map(make_row(stream, **GOOD, born=b)))
        assert reason.startswith("personal.birthDate (column born)")
    assert mapper.map(make_row(stream, **GOOD, born="1990-05-17")).payload["personal"][
        "birthDate"] == "1990-05-17"


def test_contact_100kb_text_needs_max_length() -> None:
    big = "å" * 100_000
    default = contact_stream(general={"notes": "notes"})
    reason = rejected(lambda: contact_mapper(default).map(make_row(default, **GOOD, notes=big)))
    assert "general.notes" in reason
    assert str(MAX_TEXT) in reason
    assert big[:50] not in reason

    roomy = contact_stream(general={"notes": {"column": "notes", "max_length": 200_000}})
    payload = contact_mapper(roomy).map(make_row(roomy, **GOOD, notes=big)).payload
    assert payload["general"]["notes"] == big


def test_contact_lone_surrogates_are_rejected() -> None:
    # What the SQLite driver hands over for bytes that are not UTF-8 (surrogateescape).
    raw = b"G\xf6ran".decode("utf-8", "surrogateescape")
    stream = contact_stream(personal={"phoneNumber": {"column": "mobile", "region": "SE"},
                                      "givenName": "first_name"},
                            general={"city": {"column": "city", "as": "string"}})
    mapper = contact_mapper(stream)
    reason = rejected(lambda: mapper.map(make_row(stream, **GOOD, first_name=raw)))
    assert "givenName" in reason
    assert "UTF-8" in reason
    rejected(lambda: mapper.map(make_row(stream, **GOOD, city=raw)))
    rejected(lambda: mapper.map(make_row(stream, **{**GOOD, "customer_id": raw})))


@pytest.mark.parametrize("value", [{"a": 1}, [1, 2], ("x",)], ids=repr)
def test_contact_nested_values_are_rejected(value: Any) -> None:
    stream = contact_stream(general={"extra": "extra"})
    reason = rejected(lambda: contact_mapper(stream).map(make_row(stream, **GOOD, extra=value)))
    assert reason.startswith("general.extra (column extra)")
    assert "nested" in reason


def test_contact_numbers_as_configured() -> None:
    stream = contact_stream(general={
        "n": {"column": "n", "as": "integer"},
        "x": {"column": "x", "as": "number"},
        "auto": "auto",
    })
    mapper = contact_mapper(stream)
    general = mapper.map(make_row(stream, **GOOD, n=3.0, x=Decimal("2.50"),
                                  auto=Decimal("7"))).payload["general"]
    assert general == {"n": 3, "x": 2.5, "auto": 7}
    assert type(general["n"]) is int
    reason = rejected(lambda: mapper.map(make_row(stream, **GOOD, n=3.5)))
    assert reason.startswith("general.n (column n)")
    for bad in (math.nan, math.inf, -math.inf, Decimal("NaN")):
        rejected(lambda b=bad: mapper.map(make_row(stream, **GOOD, x=b)))
        rejected(lambda b=bad: mapper.map(make_row(stream, **GOOD, auto=b)))


def test_contact_timestamps_in_the_configured_zone() -> None:
    stream = contact_stream(general={"timeOfRegistration": "created_at",
                                     "latestLogin": "seen", "day": {"column": "day",
                                                                    "as": "date"}})
    mapper = contact_mapper(stream, STOCKHOLM)
    general = mapper.map(make_row(stream, **GOOD, created_at=datetime(2026, 7, 1, 12, 0, 0, 7),
                                  seen=datetime(2026, 1, 15, 12, 0),
                                  day=datetime(2026, 1, 15, 23, 30))).payload["general"]
    assert general == {"timeOfRegistration": "2026-07-01T10:00:00.000007Z",
                       "latestLogin": "2026-01-15T11:00:00Z", "day": "2026-01-15"}


def test_contact_kind_string_turns_numbers_to_text() -> None:
    stream = contact_stream(general={"postCode": {"column": "zip", "as": "string"}})
    general = contact_mapper(stream).map(make_row(stream, **GOOD, zip=11122)).payload["general"]
    assert general == {"postCode": "11122"}


# ---------------------------------------------------------------------------
# Campaign links


def test_link_fixed_iteration() -> None:
    stream = contact_stream(campaign={"campaign": "welcome-flow", "iteration": "2026-11"})
    mapped = contact_mapper(stream).map(make_row(stream, **GOOD))
    assert mapped.links == (Link("42", "welcome-flow", "2026-11"),)
    assert mapped.links[0].body() == {"campaign": "welcome-flow", "iteration": "2026-11"}
    assert mapped.links[0].key == ("42", "welcome-flow", "2026-11")


def test_link_without_iteration() -> None:
    stream = contact_stream(campaign={"campaign": "welcome-flow"})
    (link,) = contact_mapper(stream).map(make_row(stream, **GOOD)).links
    assert link == Link("42", "welcome-flow", None)
    assert link.body() == {"campaign": "welcome-flow"}
    assert link.key == ("42", "welcome-flow", "")


def test_link_integer_iteration_is_text() -> None:
    stream = contact_stream(campaign={"campaign": "c", "iteration": 202611})
    (link,) = contact_mapper(stream).map(make_row(stream, **GOOD)).links
    assert link.iteration == "202611"


@pytest.mark.parametrize(
    ("cohort", "zone", "expected"),
    [
        (datetime(2026, 11, 30, 23, 30), STOCKHOLM, "2026-11"),  # naive: already local
        (datetime(2026, 11, 30, 23, 30, tzinfo=UTC), STOCKHOLM, "2026-12"),
        (datetime(2026, 11, 30, 23, 30, tzinfo=UTC), UTC, "2026-11"),
        (date(2026, 11, 5), STOCKHOLM, "2026-11"),
        ("2026-11-05T10:00:00", UTC, "2026-11"),
        ("2026-11-05", UTC, "2026-11"),
    ],
)
def test_link_iteration_from_a_column_with_format(cohort: Any, zone: Any, expected: str) -> None:
    stream = contact_stream(campaign={"campaign": "monthly",
                                      "iteration": {"column": "cohort", "format": "%Y-%m"}})
    (link,) = contact_mapper(stream, zone).map(make_row(stream, **GOOD, cohort=cohort)).links
    assert link == Link("42", "monthly", expected)


def test_link_iteration_column_null_means_no_link_yet() -> None:
    stream = contact_stream(campaign={"campaign": "monthly",
                                      "iteration": {"column": "cohort", "format": "%Y-%m"}})
    mapped = contact_mapper(stream).map(make_row(stream, **GOOD, cohort=None))
    assert mapped.links == ()
    assert mapped.payload["personal"] == {"phoneNumber": "46704134561"}


def test_link_iteration_column_bad_date_is_rejected_with_its_column() -> None:
    stream = contact_stream(campaign={"campaign": "monthly",
                                      "iteration": {"column": "cohort", "format": "%Y-%m"}})
    reason = rejected(lambda: contact_mapper(stream).map(make_row(stream, **GOOD,
                                                                  cohort="next month")))
    assert "cohort" in reason
    assert "iteration" in reason


def test_link_iteration_column_without_format_is_its_text() -> None:
    stream = contact_stream(campaign={"campaign": "c", "iteration": {"column": "segment"}})
    mapper = contact_mapper(stream)
    assert mapper.map(make_row(stream, **GOOD, segment="spring")).links[0].iteration == "spring"
    assert mapper.map(make_row(stream, **GOOD, segment=7)).links[0].iteration == "7"


@pytest.mark.parametrize("segment", [b"raw", "x" * (MAX_KEY + 1), "a\udc80"], ids=repr)
def test_link_iteration_text_reasons_name_the_column(segment: Any) -> None:
    stream = contact_stream(campaign={"campaign": "c", "iteration": {"column": "segment"}})
    reason = rejected(lambda: contact_mapper(stream).map(make_row(stream, **GOOD,
                                                                  segment=segment)))
    assert "segment" in reason


def test_link_iteration_out_of_range_time_is_rejected() -> None:
    stream = contact_stream(campaign={"campaign": "monthly",
                                      "iteration": {"column": "cohort", "format": "%Y-%m"}})
    row = make_row(stream, **GOOD, cohort=datetime.max.replace(tzinfo=UTC))
    rejected(lambda: contact_mapper(stream, STOCKHOLM).map(row))


def test_link_when_condition() -> None:
    stream = contact_stream(campaigns=[
        {"campaign": "active-flow", "when": {"column": "status", "equals": "active"}},
        {"campaign": "vip-flow", "iteration": "2026", "when": {"column": "vip", "equals": True}},
        {"campaign": "all"},
    ])
    mapper = contact_mapper(stream)
    links = mapper.map(make_row(stream, **GOOD, status="active", vip=1)).links
    assert links == (Link("42", "active-flow", None), Link("42", "vip-flow", "2026"),
                     Link("42", "all", None))
    links = mapper.map(make_row(stream, **GOOD, status="paused", vip="false")).links
    assert links == (Link("42", "all", None),)
    links = mapper.map(make_row(stream, **GOOD, status=None, vip="t")).links
    assert links == (Link("42", "vip-flow", "2026"), Link("42", "all", None))


def test_link_when_and_iteration_column_share_nothing_but_the_row() -> None:
    stream = contact_stream(campaign={"campaign": "m",
                                      "iteration": {"column": "cohort", "format": "%Y"},
                                      "when": {"column": "cohort", "not_null": True}})
    mapper = contact_mapper(stream)
    assert mapper.map(make_row(stream, **GOOD, cohort=date(2025, 3, 1))).links == (
        Link("42", "m", "2025"),)
    assert mapper.map(make_row(stream, **GOOD, cohort=None)).links == ()


# ---------------------------------------------------------------------------
# Column events (flags)


def flag_stream(**event: Any) -> config.ContactStream:
    spec = {"name": "OptOut", "when": {"column": "opted_out", "equals": True}, **event}
    return contact_stream(events=[spec])


def test_flag_active_with_its_time() -> None:
    stream = flag_stream(at="opted_out_at")
    mapper = contact_mapper(stream, STOCKHOLM)
    mapped = mapper.map(make_row(stream, **GOOD, opted_out=True,
                                 opted_out_at=datetime(2026, 7, 1, 12, 0, 0, 250000)))
    assert mapped.flags == (Flag("OptOut", True, "2026-07-01T10:00:00.25Z"),)


def test_flag_inactive_has_no_time() -> None:
    stream = flag_stream(at="opted_out_at")
    mapper = contact_mapper(stream)
    for value in (False, None, 0, "f"):
        mapped = mapper.map(make_row(stream, **GOOD, opted_out=value,
                                     opted_out_at="not a time at all"))
        assert mapped.flags == (Flag("OptOut", False, None),)


def test_flag_time_defaults_to_the_cursor() -> None:
    stream = flag_stream()
    mapped = contact_mapper(stream, STOCKHOLM).map(make_row(stream, **GOOD, opted_out="true"))
    assert mapped.flags == (Flag("OptOut", True, "2026-11-03T08:00:00Z"),)


def test_flag_active_without_time_column_value() -> None:
    stream = flag_stream(at="opted_out_at")
    mapped = contact_mapper(stream).map(make_row(stream, **GOOD, opted_out=1, opted_out_at=None))
    assert mapped.flags == (Flag("OptOut", True, None),)


def test_flag_bad_time_is_rejected_with_the_event() -> None:
    stream = flag_stream(at="opted_out_at")
    reason = rejected(lambda: contact_mapper(stream).map(make_row(
        stream, **GOOD, opted_out=True, opted_out_at="whenever")))
    assert "OptOut" in reason


def test_several_flags_in_config_order() -> None:
    stream = contact_stream(events=[
        {"name": "OptOut", "when": {"column": "status", "equals": "unsubscribed"}},
        {"name": "Churned", "when": {"column": "status", "in": ["closed", "unsubscribed"]},
         "at": "closed_at"},
    ])
    mapped = contact_mapper(stream).map(make_row(stream, **GOOD, status="closed",
                                                 closed_at=date(2026, 2, 1)))
    assert mapped.flags == (Flag("OptOut", False, None),
                            Flag("Churned", True, "2026-02-01T00:00:00Z"))


def test_event_body_of_a_flag() -> None:
    assert event_body("OptOut", "2026-01-01T00:00:00Z") == {
        "at": "2026-01-01T00:00:00Z", "name": "OptOut", "schema": 1}


# ---------------------------------------------------------------------------
# EventMapper


def orders_stream(**extra: Any) -> config.EventStream:
    return event_stream(at="created_at", name="Conversion",
                        fields={"amount": "total", "currency": "cur"}, **extra)


def test_event_full_row() -> None:
    stream = orders_stream()
    row = make_row(stream, order_id=17, customer_id="c-42",
                   created_at=datetime(2026, 7, 1, 12, 0, 0, 5), total=Decimal("99.50"),
                   cur="SEK")
    mapped = event_mapper(stream, STOCKHOLM).map(row)
    assert mapped == MappedEvent(
        row_key="17", contact_id="c-42",
        body={"at": "2026-07-01T10:00:00.000005Z", "name": "Conversion", "schema": 1,
              "amount": 99.5, "currency": "SEK"})
    assert event_mapper(stream).key(row) == "17"
    json.dumps(mapped.body, allow_nan=False)


def test_event_defaults_name_and_time_from_cursor() -> None:
    stream = event_stream()
    assert stream.name == "Conversion"
    mapped = event_mapper(stream).map(make_row(stream, order_id="o1", customer_id=5,
                                               created_at="2026-01-02T03:04:05Z"))
    assert mapped.body == {"at": "2026-01-02T03:04:05Z", "name": "Conversion", "schema": 1}
    assert mapped.contact_id == "5"


def test_event_opt_out_with_integer_cursor() -> None:
    stream = config.EventStream.model_validate({
        "table": "public.unsubscribes", "id": "id", "contact": "customer_id", "cursor": "id",
        "at": "unsubscribed_at", "name": "OptOut"})
    mapped = event_mapper(stream).map(make_row(stream, id=9, customer_id=1.0,
                                               unsubscribed_at=date(2026, 3, 1)))
    assert mapped == MappedEvent("9", "1", {"at": "2026-03-01T00:00:00Z", "name": "OptOut",
                                            "schema": 1})


def test_event_time_must_be_a_time() -> None:
    stream = config.EventStream.model_validate({
        "table": "t", "id": "id", "contact": "customer_id", "cursor": "id"})
    mapper = event_mapper(stream)
    reason = rejected(lambda: mapper.map(make_row(stream, id=9, customer_id=1)))
    assert "at:" in reason
    assert "set at:" in reason

    stream = orders_stream()
    mapper = event_mapper(stream)
    assert "empty" in rejected(lambda: mapper.map(make_row(stream, order_id=1, customer_id=1)))
    reason = rejected(lambda: mapper.map(make_row(stream, order_id=1, customer_id=1,
                                                  created_at="last tuesday")))
    assert reason.startswith("at: column created_at")
    in_stockholm = event_mapper(stream, STOCKHOLM)  # datetime.min is before year 1 in UTC
    rejected(lambda: in_stockholm.map(make_row(stream, order_id=1, customer_id=1,
                                               created_at=datetime.min)))


@pytest.mark.parametrize("contact", [None, "", " ", True, 2.5, "a\x00", "\udc80"], ids=repr)
def test_event_bad_contact_is_rejected(contact: Any) -> None:
    stream = orders_stream()
    reason = rejected(lambda: event_mapper(stream).map(make_row(
        stream, order_id=1, customer_id=contact, created_at=datetime(2026, 1, 1))))
    assert "contact id (column customer_id)" in reason


@pytest.mark.parametrize("order_id", [None, "", 1.5, False], ids=repr)
def test_event_bad_row_id_is_rejected(order_id: Any) -> None:
    stream = orders_stream()
    rejected(lambda: event_mapper(stream).map(make_row(
        stream, order_id=order_id, customer_id=1, created_at=datetime(2026, 1, 1))))


def test_event_extra_fields() -> None:
    stream = orders_stream()
    mapper = event_mapper(stream)
    base = {"order_id": 1, "customer_id": 1, "created_at": datetime(2026, 1, 1)}
    assert mapper.map(make_row(stream, **base, total=None, cur=None)).body == {
        "at": "2026-01-01T00:00:00Z", "name": "Conversion", "schema": 1}
    for bad in ({"a": 1}, [1], math.nan, b"x", "\udc80"):
        reason = rejected(lambda b=bad: mapper.map(make_row(stream, **base, total=b)))
        assert reason.startswith("amount (column total)")


# ---------------------------------------------------------------------------
# input_digest


def test_input_digest_equal_rows() -> None:
    stream = full_stream()
    mapper = contact_mapper(stream)
    first = "".join(["Jo", "hn"])
    second = "".join(["J", "ohn"])
    assert first == second
    assert first is not second
    one = make_row(stream, **GOOD, first_name=first, born=date(1980, 1, 1))
    two = make_row(stream, **GOOD, first_name=second, born=date(1980, 1, 1))
    digest = mapper.input_digest(one)
    assert isinstance(digest, bytes)
    assert digest == mapper.input_digest(two)
    assert digest == mapper.input_digest(list(one))
    assert digest == contact_mapper(full_stream()).input_digest(one)


def test_input_digest_follows_values() -> None:
    stream = full_stream()
    mapper = contact_mapper(stream)
    base = make_row(stream, **GOOD, first_name="John")
    digests = {mapper.input_digest(base)}
    changes: list[dict[str, Any]] = [
        {"first_name": "Johan"}, {"first_name": None}, {"first_name": "John "},
        {"customer_id": "42"}, {"customer_id": 43},
        {"updated_at": datetime(2026, 11, 3, 9, 0, 0, 1)},
        {"updated_at": datetime(2026, 11, 3, 9, 0, tzinfo=UTC)},
        {"mobile": "0704134561"},
    ]
    for change in changes:
        row = make_row(stream, **{**GOOD, "first_name": "John", **change})
        digests.add(mapper.input_digest(row))
    assert len(digests) == len(changes) + 1


def test_input_digest_follows_the_mapping_config() -> None:
    base = full_stream()
    row = make_row(base, **GOOD)
    digest = contact_mapper(base).input_digest(row)
    assert contact_mapper(base, STOCKHOLM).input_digest(row) != digest
    other_shapes = [
        contact_stream(personal={"phoneNumber": {"column": "mobile", "region": "DE"},
                                 "givenName": "first_name", "surName": "last_name",
                                 "birthDate": "born"},
                       general=base.model_dump(by_alias=True)["general"],
                       campaign={"campaign": "welcome-flow", "iteration": "2026-11"}),
        base.model_copy(update={"campaign": None, "campaigns": []}),
        base.model_copy(update={"general": {**base.general,
                                            "city": config.FieldMap(column="city",
                                                                    max_length=5)}}),
    ]
    for stream in other_shapes:
        assert stream.columns() == base.columns()
        assert contact_mapper(stream).input_digest(row) != digest


@given(st.lists(st.one_of(st.none(), st.text(), st.integers(), st.floats(allow_nan=False),
                          st.dates(), st.datetimes()), min_size=3, max_size=3))
def test_input_digest_is_a_function_of_the_values(values: list[Any]) -> None:
    stream = contact_stream()
    mapper = contact_mapper(stream)
    copy = [("".join(list(v)) + "") if isinstance(v, str) else v for v in values]
    assert mapper.input_digest(tuple(values)) == mapper.input_digest(tuple(copy))


# ---------------------------------------------------------------------------
# Property tests: any row either maps to a clean payload or is Rejected with a reason.


def _surrogate_text() -> st.SearchStrategy[str]:
    lone = st.integers(0xD800, 0xDFFF).map(chr)
    return st.builds(lambda a, s, b: a + s + b, st.text(max_size=5), lone, st.text(max_size=5))


ANY_VALUE: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=30),
    _surrogate_text(),
    st.sampled_from(["070-413 45 61", "+46704134561", "2026-07-01", "2026-07-01T12:00:00+02:00",
                     "1980-01-01", "true", "f", "1", "0", "NaN", "inf", "-1.5", "  ", "",
                     "x" * (MAX_TEXT + 1), "active", "None"]),
    st.integers(),
    st.floats(),
    st.decimals(),
    st.dates(),
    st.datetimes(),
    st.datetimes(timezones=st.timezones()),
    st.binary(max_size=10),
    st.uuids(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)

_IDS = st.one_of(st.integers(), st.uuids(),
                 st.text(st.characters(categories=["L", "N", "P"]), min_size=1, max_size=20))
_TIMES = st.one_of(st.datetimes(min_value=datetime(1901, 1, 1)),
                   st.datetimes(min_value=datetime(1901, 1, 1), timezones=st.timezones()))

# Plausible values per column; each row takes arbitrary values in a drawn set of columns
# (sometimes all of them) and plausible ones elsewhere, so that rows reach every field.
GOOD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "customer_id": _IDS,
    "order_id": _IDS,
    "updated_at": _TIMES,
    "mobile": st.sampled_from(SE_SHAPES),
    "first_name": st.text(max_size=20),
    "born": st.dates(min_value=date(1900, 1, 1), max_value=date(2020, 1, 1)),
    "city": st.one_of(st.none(), st.text(max_size=20)),
    "created_at": _TIMES,
    "logins": st.one_of(st.none(), st.integers(-(2**63), 2**63)),
    "score": st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                       st.decimals(allow_nan=False, allow_infinity=False, places=4)),
    "vip": st.one_of(st.booleans(), st.sampled_from(["t", "false", 1, 0])),
    "note": st.text(max_size=50),
    "since": st.one_of(st.dates(min_value=date(1901, 1, 1)), _TIMES),
    "ref": st.sampled_from([None, "+46 70 413 45 61", "+44 7911 123456", "0049 30 1234567"]),
    "cohort": st.one_of(st.none(), st.dates(min_value=date(1901, 1, 1)), _TIMES),
    "status": st.sampled_from(["active", "closed", None, 1, True, "paused"]),
    "segment": st.one_of(st.none(), st.text(max_size=20)),
    "opted_out": st.one_of(st.none(), st.booleans()),
    "opted_out_at": st.one_of(st.none(), _TIMES),
    "happened": _TIMES,
    "total": st.one_of(st.none(), st.integers(), st.decimals(allow_nan=False,
                                                             allow_infinity=False, places=2)),
}


def _rows(columns: list[str]) -> st.SearchStrategy[tuple[Any, ...]]:
    @st.composite
    def rows(draw: st.DrawFn) -> tuple[Any, ...]:
        if draw(st.integers(0, 9)) == 0:
            wild = set(columns)
        else:
            wild = draw(st.sets(st.sampled_from(columns), max_size=3))
        return tuple(draw(ANY_VALUE if column in wild or column not in GOOD_VALUES
                          else GOOD_VALUES[column])
                     for column in columns)
    return rows()


def property_stream() -> config.ContactStream:
    return contact_stream(
        personal={
            "phoneNumber": {"column": "mobile", "region": "SE"},
            "givenName": "first_name",
            "birthDate": "born",
        },
        general={
            "city": "city",
            "timeOfRegistration": "created_at",
            "nrLogins": {"column": "logins", "as": "integer"},
            "score": {"column": "score", "as": "number"},
            "vip": {"column": "vip", "as": "boolean"},
            "note": {"column": "note", "as": "string", "max_length": 50},
            "since": {"column": "since", "as": "date"},
            "ref": {"column": "ref", "as": "phone", "required": False},
        },
        campaigns=[
            {"campaign": "welcome", "iteration": {"column": "cohort", "format": "%Y-%m"},
             "when": {"column": "status", "in": ["active", 1, True]}},
            {"campaign": "fixed", "iteration": "2026-11"},
            {"campaign": "plain", "iteration": {"column": "segment"},
             "when": {"column": "status", "not_equals": "closed"}},
        ],
        events=[
            {"name": "OptOut", "when": {"column": "opted_out", "equals": True},
             "at": "opted_out_at"},
            {"name": "Churn", "when": {"column": "status", "not_null": True}},
        ],
    )


PROPERTY_STREAM = property_stream()


def contact_rows() -> st.SearchStrategy[tuple[Any, ...]]:
    return _rows(PROPERTY_STREAM.columns())


def _scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int | bool)


PROPERTY_SETTINGS = settings(max_examples=tiers.examples(400), deadline=None,
                             suppress_health_check=[HealthCheck.too_slow,
                                                    HealthCheck.filter_too_much])


# Well-formed rows, built from parts whose payload is known without the mapper: these must
# map, to exactly the payload the parts say (a mapper that rejects everything fails here).
_LETTERS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZåäöÉ", min_size=1, max_size=20)
_AWARE = st.datetimes(min_value=datetime(1901, 1, 2), max_value=datetime(2100, 1, 1),
                      timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                                 timezone(timedelta(hours=-8))])
                      ).map(lambda t: t.replace(microsecond=0))
_DATES = st.dates(min_value=date(1901, 1, 1), max_value=date(2019, 12, 31))


def utc_z(moment: datetime) -> str:
    """An aware time as the API wants it: UTC, whole seconds, Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def se_mobile(digits: str, shape: int) -> str:
    """A Swedish mobile 070-<digits> written the way people do."""
    return [f"070-{digits[:3]} {digits[3:5]} {digits[5:]}", f"+4670{digits}",
            f"0046 70 {digits}", f"070{digits}", f"  (070) {digits}  "][shape]


@st.composite
def well_formed_contact(draw: st.DrawFn) -> tuple[tuple[Any, ...], MappedContact]:
    cid = draw(st.integers(1, 10**15))
    digits = draw(st.text(alphabet="0123456789", min_size=7, max_size=7))
    given_name, note = draw(_LETTERS), draw(_LETTERS)
    born, since = draw(_DATES), draw(_DATES)
    updated, registered = draw(_AWARE), draw(_AWARE)
    city = draw(st.one_of(st.none(), _LETTERS))
    logins = draw(st.integers(-(10**9), 10**9))
    score = draw(st.integers(-(10**6), 10**6)) / 4
    vip = draw(st.booleans())
    cohort = draw(st.one_of(st.none(), _DATES))
    status = draw(st.sampled_from(["active", "closed", "paused"]))
    segment = draw(st.one_of(st.none(), _LETTERS))
    opted_out = draw(st.sampled_from([None, True, False]))
    opted_out_at = draw(st.one_of(st.none(), _AWARE))
    row = make_row(PROPERTY_STREAM, customer_id=cid, updated_at=updated,
                   mobile=se_mobile(digits, draw(st.integers(0, 4))), first_name=given_name,
                   born=born, city=city, created_at=registered, logins=logins, score=score,
                   vip=vip, note=note, since=since, ref=None, cohort=cohort, status=status,
                   segment=segment, opted_out=opted_out, opted_out_at=opted_out_at)
    general = {"city": city, "timeOfRegistration": utc_z(registered), "nrLogins": logins,
               "score": score, "vip": vip, "note": note, "since": since.isoformat()}
    links = [Link(str(cid), "welcome", f"{cohort.year:04d}-{cohort.month:02d}")] \
        if status == "active" and cohort else []
    links.append(Link(str(cid), "fixed", "2026-11"))
    if status != "closed" and segment:
        links.append(Link(str(cid), "plain", segment))
    opt_out_at = utc_z(opted_out_at) if opted_out is True and opted_out_at else None
    expected = MappedContact(
        contact_id=str(cid),
        payload={"schema": 1,
                 "personal": {"phoneNumber": "4670" + digits, "givenName": given_name,
                              "birthDate": born.isoformat()},
                 "general": {k: v for k, v in general.items() if v is not None}},
        links=tuple(links),
        flags=(Flag("OptOut", opted_out is True, opt_out_at), Flag("Churn", True, utc_z(updated))),
    )
    return row, expected


def contact_cases() -> st.SearchStrategy[tuple[tuple[Any, ...], MappedContact | None]]:
    """Well-formed rows with their payload, or arbitrary rows (None: clean or rejected)."""
    return st.one_of(well_formed_contact(), contact_rows().map(lambda row: (row, None)))


@PROPERTY_SETTINGS
@given(contact_cases(), st.sampled_from([UTC, STOCKHOLM, NEW_YORK]))
def test_property_contact_maps_cleanly_or_is_rejected(
        case: tuple[tuple[Any, ...], MappedContact | None], zone: Any) -> None:
    row, expected = case
    mapper = ContactMapper(PROPERTY_STREAM, PROPERTY_STREAM.columns(), zone)
    if expected is not None:
        assert mapper.map(row) == expected
        return
    try:
        mapped = mapper.map(row)
    except Rejected as exc:
        assert isinstance(exc.reason, str)
        assert exc.reason.strip()
        return
    assert isinstance(mapped, MappedContact)
    text = json.dumps(mapped.payload, allow_nan=False)
    text.encode("utf-8")
    assert mapped.payload["schema"] == 1
    assert set(mapped.payload) == {"schema", "personal", "general"}
    for section in ("personal", "general"):
        assert all(_scalar(value) for value in mapped.payload[section].values())
    assert mapped.contact_id == mapper.key(row)
    assert mapped.contact_id.strip() == mapped.contact_id != ""
    assert E164_DIGITS.match(mapped.payload["personal"]["phoneNumber"])
    for field in ("timeOfRegistration",):
        if field in mapped.payload["general"]:
            assert Z_TIME.match(mapped.payload["general"][field])
    for link in mapped.links:
        assert link.contact_id == mapped.contact_id
        json.dumps(link.body(), allow_nan=False).encode("utf-8")
    assert [flag.event for flag in mapped.flags] == ["OptOut", "Churn"]
    for flag in mapped.flags:
        assert flag.at is None or Z_TIME.match(flag.at)
        assert flag.active or flag.at is None


EVENT_STREAM = event_stream(at="happened", name="Conversion",
                            fields={"amount": "total", "note": "note"})


def event_rows() -> st.SearchStrategy[tuple[Any, ...]]:
    return _rows(EVENT_STREAM.columns())


@st.composite
def well_formed_event(draw: st.DrawFn) -> tuple[tuple[Any, ...], MappedEvent]:
    order = draw(st.one_of(st.integers(-(10**15), 10**15), _LETTERS))
    contact = draw(st.one_of(st.integers(1, 10**15), _LETTERS))
    happened = draw(_AWARE)
    total = draw(st.one_of(st.none(), st.integers(-(10**9), 10**9)))
    note = draw(st.one_of(st.none(), _LETTERS))
    row = make_row(EVENT_STREAM, order_id=order, customer_id=contact,
                   created_at=draw(_AWARE), happened=happened, total=total, note=note)
    body: dict[str, Any] = {"at": utc_z(happened), "name": "Conversion", "schema": 1}
    body.update({k: v for k, v in (("amount", total), ("note", note)) if v is not None})
    return row, MappedEvent(row_key=str(order), contact_id=str(contact), body=body)


def event_cases() -> st.SearchStrategy[tuple[tuple[Any, ...], MappedEvent | None]]:
    return st.one_of(well_formed_event(), event_rows().map(lambda row: (row, None)))


@PROPERTY_SETTINGS
@given(event_cases(), st.sampled_from([UTC, STOCKHOLM]))
def test_property_event_maps_cleanly_or_is_rejected(
        case: tuple[tuple[Any, ...], MappedEvent | None], zone: Any) -> None:
    row, expected = case
    mapper = EventMapper(EVENT_STREAM, EVENT_STREAM.columns(), zone)
    if expected is not None:
        assert mapper.map(row) == expected
        return
    try:
        mapped = mapper.map(row)
    except Rejected as exc:
        assert isinstance(exc.reason, str)
        assert exc.reason.strip()
        return
    assert isinstance(mapped, MappedEvent)
    json.dumps(mapped.body, allow_nan=False).encode("utf-8")
    assert mapped.body["schema"] == 1
    assert mapped.body["name"] == "Conversion"
    assert Z_TIME.match(mapped.body["at"])
    assert set(mapped.body) <= {"at", "name", "schema", "amount", "note"}
    assert all(_scalar(value) for value in mapped.body.values())
    assert mapped.row_key == mapper.key(row)
    assert mapped.contact_id


@settings(max_examples=tiers.examples(300), deadline=None)
@given(st.one_of(st.text(max_size=40), _surrogate_text(), st.integers()),
       st.sampled_from(["SE", "GB", "US", "DE", None]))
def test_property_phone_digits_is_e164_or_rejected(value: Any, region: str | None) -> None:
    try:
        digits = phone_digits(value, region)
    except Rejected as exc:
        assert exc.reason.strip()
        if isinstance(value, str) and len(value.strip()) >= 4:
            assert value.strip() not in exc.reason
        return
    assert E164_DIGITS.match(digits)
    assert phone_digits("+" + digits, None) == digits
