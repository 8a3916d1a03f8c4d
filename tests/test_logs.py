"""The log filter that masks every known secret (no server: the filter on its own)."""

from __future__ import annotations

import json
import logging

import pytest

from connector import logs

KEY = "wk_live_5f3a9c0d1e2b"
PASSWORD = "db-pass-91aa"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_secret_in_a_message_or_a_traceback_never_reaches_the_log(
        capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    logs.register_secret(KEY)
    logs.register_secret(PASSWORD)
    logs.setup(fmt)
    log = logging.getLogger("connector.test")
    log.error("the API answered 400 to %s", json.dumps({"key": KEY}))
    try:
        raise RuntimeError(f"connect to postgresql://me:{PASSWORD}@db/shop failed")
    except RuntimeError:
        log.exception("the pass failed")
    logs.for_stream("customers").warning("retrying with %s", KEY)
    written = capsys.readouterr().err
    assert KEY not in written and PASSWORD not in written
    assert written.count("***") == 3
    assert "connect to postgresql://me:***@db/shop failed" in written


def test_payloads_shown_by_a_dry_run_are_masked_everywhere() -> None:
    logs.register_secret(KEY)
    body = {"personal": {"givenName": f"x{KEY}"}, KEY: [KEY, 7, None]}
    assert logs.mask_all(body) == {"personal": {"givenName": "x***"}, "***": ["***", 7, None]}


def test_short_values_are_not_taken_for_secrets() -> None:
    logs.register_secret("ab")  # an empty or tiny password would mask every "ab" in the log
    assert logs.mask("a tab and a cab") == "a tab and a cab"
