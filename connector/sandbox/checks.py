"""Whether a request body is one the API takes, and if not, why (the message names the field)."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

TIMESTAMP_KEYS = frozenset({"timeOfRegistration", "latestClientDetailUpdate", "latestLogin"})

_TIMESTAMP_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?Z", re.ASCII)
_DATE_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)


def _is_timestamp(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    m = _TIMESTAMP_RE.fullmatch(value)
    if m is None:
        return False
    try:
        datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6]))
    except ValueError:
        return False
    return True


def _is_date(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    m = _DATE_RE.fullmatch(value)
    if m is None:
        return False
    try:
        date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return False
    return True


def _is_phone(value: Any) -> bool:
    return (
        isinstance(value, str)
        and 7 <= len(value) <= 15
        and value.isascii()
        and value.isdigit()
        and value[0] != "0"
    )


def check_contact(body: Any) -> str | None:
    """Why a contact body is invalid, or None when it is valid."""
    if not isinstance(body, dict):
        return "contact body must be a JSON object"
    schema = body.get("schema")
    if type(schema) is not int or schema != 1:
        return "schema: must be 1"
    for section in ("personal", "general"):
        if section not in body:
            continue
        part = body[section]
        if not isinstance(part, dict):
            return f"{section}: must be an object"
        for key, value in part.items():
            if isinstance(value, dict | list):
                return f"{section}.{key}: must be a string, number, boolean or null"
            if key in TIMESTAMP_KEYS and not _is_timestamp(value):
                return f"{section}.{key}: must be a UTC timestamp like 2018-03-30T16:43:11Z"
    personal = body.get("personal")
    if personal:
        if "phoneNumber" in personal and not _is_phone(personal["phoneNumber"]):
            return (
                "personal.phoneNumber: must be a string of 7 to 15 digits with country code,"
                " no '+' and no leading 0"
            )
        if "birthDate" in personal and not _is_date(personal["birthDate"]):
            return "personal.birthDate: must be a real date as YYYY-MM-DD"
    return None


def check_link(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "link body must be a JSON object"
    campaign = body.get("campaign")
    if not isinstance(campaign, str) or not campaign:
        return "campaign: required non-empty string"
    iteration = body.get("iteration")
    if iteration is not None and not isinstance(iteration, str):
        return "iteration: must be a string or null"
    return None


def check_event(body: dict[str, Any]) -> str | None:
    if not _is_timestamp(body.get("at")):
        return "at: required UTC timestamp like 2017-01-02T03:04:05Z"
    name = body.get("name")
    if not isinstance(name, str) or not name:
        return "name: required non-empty string"
    schema = body.get("schema")
    if type(schema) is not int or schema != 1:
        return "schema: must be 1"
    for key, value in body.items():
        if isinstance(value, dict | list):
            return f"{key}: extra event fields must be a string, number, boolean or null"
    return None
