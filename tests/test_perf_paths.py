"""The per-row shortcuts of the first sync give the answers of the longer paths they skip.

`diff.payload_digest` keeps one prebuilt JSON encoder; `mapping.as_text` / `auto_value`
take plain `str` values first and check UTF-8 only for text that is not ASCII.
"""

from __future__ import annotations

from datetime import UTC

import pytest

from connector.diff import payload_digest
from connector.mapping import Rejected, as_text, auto_value


def test_payload_digest_is_the_one_earlier_versions_stored() -> None:
    # The state file keeps these digests: a different text would resend every contact once.
    # The value is what the connector computed before the prebuilt encoder (commit 9d1d823).
    payload = {"schema": 1,
               "personal": {"phoneNumber": "46701000001", "givenName": "Åsa \u2028 \"q\"",
                            "surName": "O'Brien"},
               "general": {"city": "Göteborg", "score": 1.5e16, "n": -3, "ok": True,
                           "none": None, "d": "2024-01-02"}}
    assert payload_digest(payload).hex() == "63d4b3d953d8ab478a27a556a72242ff"


class Name(str):
    """A str subclass (a driver's own text type): takes the general path."""


@pytest.mark.parametrize("text", ["plain", "Åsa Öberg", "tab\there", "日本語", ""])
def test_text_comes_back_as_it_was(text: str) -> None:
    assert as_text(text, 100) == text
    assert auto_value(text, UTC, 100) == text
    assert as_text(Name(text), 100) == text


@pytest.mark.parametrize("value", ["lone \ud800 surrogate", Name("lone \udfff surrogate")])
def test_text_that_is_not_utf8_is_refused(value: str) -> None:
    for convert in (lambda: as_text(value, 100), lambda: auto_value(value, UTC, 100)):
        with pytest.raises(Rejected, match="not valid UTF-8"):
            convert()


def test_text_over_the_limit_is_refused_whatever_its_type() -> None:
    for value in ("x" * 11, Name("x" * 11), "é" * 11):
        with pytest.raises(Rejected, match="11 characters long; the limit is 10"):
            as_text(value, 10)
