"""The phone number shortcut (connector.phone) against the full `phonenumbers` path.

`mapping.phone_digits` answers `+`-and-digits input from `phone.canonical_digits` when it
can; whatever it answers must be what `phonenumbers.parse` + `is_valid_number` + E.164
formatting gives, and a number refused must be refused for the same reason class. The
reference below is `phonenumbers` itself, called the way the connector promises to behave
(README: `00` is read as `+`).
"""

from __future__ import annotations

from typing import Any

import phonenumbers
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberType

from connector.mapping import Rejected, phone_digits
from connector.phone import canonical_digits
from tests import tiers

REGIONS = ["SE", "GB", "US", "DE", "NO", "FI", "DK", "FR", "IT", "ES", "NL", "PL", "CA", "RU",
           "KZ", "AU", "IM", "JE", "GG", "AR", "MX", "BR", "IN", "CN", "JP", "SM", "VA", "BE"]
TYPES = [PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE, PhoneNumberType.TOLL_FREE,
         PhoneNumberType.PREMIUM_RATE, PhoneNumberType.VOIP, PhoneNumberType.UAN,
         PhoneNumberType.PERSONAL_NUMBER, PhoneNumberType.PAGER, PhoneNumberType.SHARED_COST]


def reference(text: str, region: str | None) -> tuple[str, str]:
    """What `phonenumbers` makes of a text: ("ok", digits), ("unparsable", ""), or
    ("invalid", "")."""
    text = text.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return ("unparsable", "")
    if not phonenumbers.is_valid_number(number):
        return ("invalid", "")
    return ("ok", phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:])


def connector(text: str, region: str | None) -> tuple[str, str]:
    try:
        return ("ok", phone_digits(text, region))
    except Rejected as exc:
        if exc.reason.startswith("is not a valid phone number"):
            return ("invalid", "")
        assert exc.reason.startswith("is not a phone number"), exc.reason
        return ("unparsable", "")


def check(text: str, region: str | None) -> None:
    expected = reference(text, region)
    assert connector(text, region) == expected, (text, region)
    fast = canonical_digits(text.strip())
    if fast is not None:  # the shortcut only ever answers with a valid number's digits
        assert ("ok", fast) == reference(text, None), (text, region)


# ---------------------------------------------------------------------------
# Every country calling code and every example number phonenumbers knows


def examples() -> list[tuple[str, str]]:
    """(E.164 text, national significant number) of every example number, every region."""
    found = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in TYPES:
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                found.append((phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat
                                                         .E164),
                              phonenumbers.national_significant_number(number)))
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is not None:
            found.append((phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat
                                                     .E164),
                          phonenumbers.national_significant_number(number)))
    return found


def test_every_example_number_and_its_neighbours_match_phonenumbers() -> None:
    answered = 0
    for e164, nsn in examples():
        code = e164[1:len(e164) - len(nsn)]
        variants = {e164, f"+{code}0{nsn}", f"+{code}{nsn[:-1]}", f"+{code}{nsn}0",
                    f"+{code}{nsn[1:]}", f"+{code}8{nsn}", f"+{code}{nsn[::-1]}"}
        for text in variants:
            check(text, None)
            answered += canonical_digits(text) is not None
    assert answered > 400  # the shortcut really answers, for most of the world's numbers


@pytest.mark.parametrize("text, digits", [
    ("+46701000001", "46701000001"), ("0046701000001", "46701000001"),
    ("+447911123456", "447911123456"), ("+14155552671", "14155552671"),
    ("+4915123456789", "4915123456789"), ("+390612345678", "390612345678"),
    ("+46 70-100 00 01", "46701000001"), ("+1 (415) 555-2671", "14155552671"),
    ("0044 7911.123456", "447911123456"), ("+49\u00a0151\u00a023456789", "4915123456789"),
])
def test_the_shortcut_answers_for_canonical_numbers(text: str, digits: str) -> None:
    assert canonical_digits("+" + text[2:] if text.startswith("00") else text) == digits
    assert phone_digits(text, "SE") == digits


@pytest.mark.parametrize("text", [
    "+460701000001",  # a trunk 0 after the country code: parse strips it
    "+46 (0)70-100 00 01", "+46 70 100 00 01 ext. 12", "+0701000001", "+999123456789",
    "46701000001",
    "+467010000011234567890", "+٤٦٧٠١٠٠٠٠٠١",  # Arabic-Indic digits: phonenumbers reads them
])
def test_other_shapes_take_the_full_path(text: str) -> None:
    assert canonical_digits(text) is None
    check(text, "SE")


# ---------------------------------------------------------------------------
# Real-world shapes, at random


@st.composite
def written(draw: Any) -> tuple[str, str | None]:
    """A number as people type it: from an example number of a region (maybe with a digit
    changed, dropped or added), written +CC, 00CC, national with or without the trunk 0,
    with spaces, dashes or parentheses; parsed with its region, another, or none."""
    region = draw(st.sampled_from(REGIONS))
    number = phonenumbers.example_number_for_type(region, draw(st.sampled_from(TYPES))) \
        or phonenumbers.example_number(region)
    assert number is not None
    nsn = phonenumbers.national_significant_number(number)
    change = draw(st.sampled_from(["none", "digit", "drop", "add"]))
    at = draw(st.integers(0, len(nsn) - 1))
    digit = draw(st.sampled_from("0123456789"))
    nsn = {"none": nsn, "digit": nsn[:at] + digit + nsn[at + 1:], "drop": nsn[:at] + nsn[at + 1:],
           "add": nsn[:at] + digit + nsn[at:]}[change]
    code = str(number.country_code)
    trunk = draw(st.sampled_from(["", "0", "1", "8"]))
    shape = draw(st.sampled_from(["+", "00", "national", "bare"]))
    head = {"+": f"+{code}", "00": f"00{code}", "national": "", "bare": ""}[shape]
    body = trunk + nsn if shape in {"national", "+"} else nsn
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(body) - 1)), max_size=3)))
    parts = [body[i:j] for i, j in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    joiner = draw(st.sampled_from(["", " ", "-", ".", "  ", " - ", "\u00a0", "/", "x"]))
    if len(parts) > 1 and draw(st.booleans()):
        parts[0] = f"({parts[0]})"
    separator = draw(st.sampled_from(["", " ", "-", "\u00a0"])) if head else ""
    if shape == "+" and draw(st.booleans()):
        plus = draw(st.sampled_from(["+ ", "+(", "(+", "+-"]))
        head = plus + code + (")" if "(" in plus else "")
    text = head + separator + joiner.join(parts)
    parse_region = draw(st.sampled_from([region, region, "SE", "GB", "US", "DE", None]))
    return text, parse_region


@given(written())
@settings(max_examples=tiers.examples(1500), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@example(("+44 07911 123456", "GB")).via("a trunk 0 after +CC")
@example(("(0)70-100 00 01", "SE")).via("parentheses around the trunk 0")
def test_real_world_shapes_match_phonenumbers(case: tuple[str, str | None]) -> None:
    check(*case)


@given(st.text("0123456789", min_size=1, max_size=20),
       st.sampled_from(["+", "00", ""]), st.sampled_from(["SE", "GB", "US", "DE", None]))
@settings(max_examples=tiers.examples(1500), deadline=None)
def test_random_digit_strings_match_phonenumbers(digits: str, head: str, region: str | None
                                                 ) -> None:
    check(head + digits, region)
