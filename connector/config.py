"""The config a user writes: YAML in, validated and frozen settings out.

`load(path)` reads the file, fills `${VAR}` and `${VAR:-default}` from the environment,
validates everything and raises one `ConfigError` that lists every problem with its place
(`contacts.customers.cursor: field required`). Secrets (the API key, the database password)
are held as `SecretStr` and never appear in a `repr`, an error or a log line.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from connector import dialects
from connector.errors import ConfigError

DEFAULT_PATH = "connector.yaml"
ENV_PATH = "CONNECTOR_CONFIG"
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}

# These models use no pydantic plugin, and looking plugins up reads the metadata of every
# installed package (about 20 ms at each start of a command). A user who wants plugins
# sets PYDANTIC_DISABLE_PLUGINS themselves (e.g. to 0), which this leaves alone.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

# ---------------------------------------------------------------------------
# Small value types: durations and rates as people write them.

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: object) -> timedelta:
    """`90`, `"90s"`, `"10m"`, `"1.5h"`, `"500ms"` -> timedelta. A bare number is seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 10m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration; write it as 30s, 10m, 1h or 500ms")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return timedelta(seconds=seconds)


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_RATE_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60,
                 "h": 3600, "hour": 3600}


def parse_rate(value: object) -> float | None:
    """`"50/s"`, `"3000/min"`, `50` (per second) -> requests per second; `none`/null -> None."""
    if value is None or (isinstance(value, str) and value.strip().lower() in {"none", "off"}):
        return None
    if isinstance(value, bool):
        raise ValueError("expected a rate such as 50/s or 3000/min")
    if isinstance(value, int | float):
        rate = float(value)
    else:
        match = _RATE.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a rate; write it as 50/s, 3000/min or none")
        rate = float(match.group(1)) / _RATE_SECONDS[match.group(2)]
    if rate <= 0:
        raise ValueError("a rate must be above zero (or `none` for no limit)")
    return rate


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Rate = Annotated[float | None, BeforeValidator(parse_rate)]


class _Model(BaseModel):
    # defer_build: a model's validator is built when first used, not at import; the
    # settings' validator holds every nested model's schema, so the nested ones are
    # never built on their own (a few ms of every command's start).
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True,
                              defer_build=True)


# ---------------------------------------------------------------------------
# Where rows come from.


class TableRef(_Model):
    """A table or view. `"public.customers"` or `{schema: public, name: customers}`."""

    name: str = Field(min_length=1)
    schema_: str | None = Field(default=None, alias="schema")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: object) -> object:
        if isinstance(value, str):
            schema, dot, name = value.partition(".")
            return {"schema": schema, "name": name} if dot else {"name": value}
        return value

    def __str__(self) -> str:
        return f"{self.schema_}.{self.name}" if self.schema_ else self.name


class Condition(_Model):
    """A test on one column of a row, written without SQL: exactly one operator."""

    column: str = Field(min_length=1)
    equals: Any = None
    not_equals: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    not_in: list[Any] | None = None
    not_null: bool | None = None
    is_null: bool | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        given = [name for name in ("equals", "not_equals", "in_", "not_in", "not_null", "is_null")
                 if name in self.model_fields_set]
        if len(given) != 1:
            raise ValueError("give exactly one of equals, not_equals, in, not_in, not_null, "
                             f"is_null (got {len(given)})")
        return self


PHONE = "phone"
FieldKind = Literal["auto", "phone", "string", "date", "timestamp", "integer", "number", "boolean"]
# Wiraya's standard fields whose kind is known; any other field is sent as its value's kind.
STANDARD_KINDS: dict[str, str] = {
    "phoneNumber": "phone",
    "birthDate": "date",
    "timeOfRegistration": "timestamp",
    "latestClientDetailUpdate": "timestamp",
    "latestLogin": "timestamp",
}


class FieldMap(_Model):
    """One Wiraya field filled from one column. A plain string is the column name."""

    column: str = Field(min_length=1)
    kind: FieldKind = Field(default="auto", alias="as")
    region: str | None = Field(default=None, min_length=2, max_length=2)
    required: bool | None = None
    max_length: int | None = Field(default=None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: object) -> object:
        return {"column": value} if isinstance(value, str) else value

    @field_validator("region")
    @classmethod
    def _upper_region(cls, value: str | None) -> str | None:
        return value.upper() if value else value


class Iteration(_Model):
    """A campaign iteration: fixed text, or a column's value (dates formatted by `format`)."""

    value: str | None = None
    column: str | None = None
    format: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_scalar(cls, value: object) -> object:
        if isinstance(value, str | int):
            return {"value": str(value)}
        return value

    @model_validator(mode="after")
    def _value_or_column(self) -> Iteration:
        if (self.value is None) == (self.column is None):
            raise ValueError("give either a fixed text (iteration: \"2026-11\") or a column "
                             "(iteration: {column: cohort, format: \"%Y-%m\"})")
        if self.format and self.column is None:
            raise ValueError("format applies to a column: {column: created_at, format: \"%Y-%m\"}")
        return self


class CampaignLink(_Model):
    """Link each contact of a stream to a campaign (communication flow), once per iteration."""

    campaign: str = Field(min_length=1)
    iteration: Iteration | None = None
    when: Condition | None = None


class ColumnEvent(_Model):
    """An event sent once when a condition on the contact's row becomes true (an opt-out flag)."""

    name: str = Field(min_length=1)
    when: Condition
    at: str | None = None  # column with the time it happened; default: the stream's cursor


NO_CURSOR = "none"  # `cursor: none`: no change column; each pass compares the whole table


class DeleteEvent(_Model):
    """`on_delete: {event: OptOut}`: the event sent once when a contact's row disappears."""

    event: str = Field(min_length=1)


class StreamBase(_Model):
    table: TableRef
    id: str = Field(min_length=1)
    cursor: str = Field(min_length=1)
    # None: 10 minutes for a time cursor, 1000 values for an integer cursor.
    lookback: timedelta | int | None = None
    every: Duration = timedelta(minutes=1)
    page_size: int | None = Field(default=None, gt=0, le=100_000)
    # The daemon reads the lookback window in full at least this often; in between, a pass
    # whose index probe finds the window as the last pass left it reads nothing (probe.py).
    # 0s: every pass reads the window.
    reread: Duration = timedelta(minutes=1)

    @field_validator("lookback", mode="before")
    @classmethod
    def _lookback(cls, value: object) -> object:
        # An integer cursor takes a row count (`lookback: 500`); a time cursor a duration.
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise ValueError("lookback cannot be negative")
            return value
        return parse_duration(value)

    @model_validator(mode="after")
    def _reread_within_lookback(self) -> StreamBase:
        # A change only a full read sees must still be inside the window when it comes.
        # (Left at its default, reread shrinks to a shorter lookback: probe.reread_seconds.)
        if "reread" in self.model_fields_set and isinstance(self.lookback, timedelta) \
                and self.reread > self.lookback:
            raise ValueError(f"reread ({self.reread}) is longer than lookback "
                             f"({self.lookback}): a change only a full read of the window "
                             "sees could leave the window first; make reread shorter")
        return self


class ContactStream(StreamBase):
    personal: dict[str, FieldMap] = Field(default_factory=dict)
    general: dict[str, FieldMap] = Field(default_factory=dict)
    campaign: CampaignLink | None = None  # the short form of one entry in `campaigns`
    campaigns: list[CampaignLink] = Field(default_factory=list)
    events: list[ColumnEvent] = Field(default_factory=list)
    # A full comparison of the table on this schedule (cursor streams; off by default).
    reconcile: Duration | None = None
    on_delete: Literal["ignore"] | DeleteEvent = "ignore"

    @field_validator("on_delete", mode="before")
    @classmethod
    def _on_delete(cls, value: object) -> object:
        fits = value == "ignore" or (isinstance(value, dict) and set(value) == {"event"}
                                     and isinstance(value["event"], str) and value["event"])
        if not fits:
            raise ValueError(f"{value!r} is not a choice: give ignore (count deleted rows, "
                             "send nothing) or {event: NAME} (e.g. {event: OptOut})")
        return value

    @model_validator(mode="after")
    def _whole(self) -> ContactStream:
        if self.compares_whole and self.lookback is not None:
            raise ValueError("lookback has no meaning with cursor: none (each pass reads the "
                             "whole table); remove lookback")
        if self.compares_whole and self.reconcile is not None:
            raise ValueError("reconcile has no meaning with cursor: none (every pass is a full "
                             "comparison already); remove reconcile")
        if not self.personal and not self.general:
            raise ValueError("map at least one field under personal or general "
                             "(Wiraya needs at least personal.phoneNumber)")
        if self.campaign is not None and self.campaigns:
            raise ValueError("give either campaign or campaigns, not both")
        return self

    @property
    def compares_whole(self) -> bool:
        """`cursor: none`: no change column, each pass compares the whole table."""
        return self.cursor == NO_CURSOR

    @property
    def links(self) -> list[CampaignLink]:
        """Every campaign this stream links its contacts to."""
        return [self.campaign] if self.campaign is not None else list(self.campaigns)

    def columns(self) -> list[str]:
        """Every column this stream reads, in a stable order, without repeats."""
        names = [self.id] if self.compares_whole else [self.id, self.cursor]
        names += [f.column for f in self.personal.values()]
        names += [f.column for f in self.general.values()]
        for link in self.links:
            if link.iteration and link.iteration.column:
                names.append(link.iteration.column)
            if link.when:
                names.append(link.when.column)
        for event in self.events:
            names.append(event.when.column)
            if event.at:
                names.append(event.at)
        return list(dict.fromkeys(names))

    def fingerprint(self) -> str:
        """Digest of everything that shapes the payloads; a change re-maps every row read."""
        shape = self.model_dump(mode="json", include={"id", "personal", "general", "events"})
        shape["campaigns"] = [link.model_dump(mode="json") for link in self.links]
        return _digest(shape)


class EventStream(StreamBase):
    contact: str = Field(min_length=1)
    at: str | None = None  # default: the cursor column
    name: str = Field(default="Conversion", min_length=1)
    fields: dict[str, str] = Field(default_factory=dict)  # extra body fields -> column
    contacts_stream: str | None = None  # wait for this contact stream (default: all of them)
    wait_for_contact: bool = True

    @field_validator("cursor")
    @classmethod
    def _ordered(cls, value: str) -> str:
        if value == NO_CURSOR:
            # An event is sent once per row, in order; a deleted event row is history.
            raise ValueError("an event stream needs a cursor (events are read in order, each "
                             "once); a growing id works: cursor: <the id column>")
        return value

    @field_validator("fields")
    @classmethod
    def _no_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = {"at", "name", "schema"} & set(value)
        if reserved:
            raise ValueError(f"{', '.join(sorted(reserved))} is set by the connector; "
                             "pick another field name")
        return value

    def columns(self) -> list[str]:
        names = [self.id, self.cursor, self.contact, self.at or self.cursor]
        names += list(self.fields.values())
        return list(dict.fromkeys(names))

    def fingerprint(self) -> str:
        return _digest(self.model_dump(mode="json", include={"id", "contact", "at", "name",
                                                             "fields"}))


def _digest(shape: object) -> str:
    text = json.dumps(shape, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


# ---------------------------------------------------------------------------
# Where rows go, and where the connector keeps its memory.


class Source(_Model):
    url: SecretStr
    timezone: str = "UTC"
    page_size: int = Field(default=5000, gt=0, le=100_000)
    connect_timeout: Duration = timedelta(seconds=10)
    statement_timeout: Duration = timedelta(minutes=5)

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        # No message here may quote the URL or a part of it: it holds the password. Checked
        # without SQLAlchemy, whose import a command that only reads the state (status)
        # should not pay for; the engine parses the URL again when it connects.
        try:
            parts = urlsplit(dialects.driver_url(value.get_secret_value()).url)
            parts.port  # noqa: B018 - a port that is not a number raises here
        except dialects.UnknownScheme as exc:
            raise ValueError(str(exc)) from None
        except ValueError:
            raise ValueError("not a database URL; write it as "
                             f"{dialects.WORKING_FORMS}") from None
        if parts.netloc.count("@") > 1:
            raise ValueError("the host part holds an @; if the password has one, write it as "
                             "%40 (URL-encoded)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as UTC or "
                             "Europe/Stockholm") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def display_url(self) -> str:
        """The URL with the password masked, wherever it was written: the only printable form."""
        from sqlalchemy.engine import make_url

        url = make_url(self.url.get_secret_value())
        query = {key: "***" if key.lower() in _SECRET_PARAMETERS else value
                 for key, value in url.query.items()}
        return url.set(query=query).render_as_string(hide_password=True)

    @property
    def secrets(self) -> list[str]:
        """Every secret the URL holds, for the log filter to mask."""
        from sqlalchemy.engine import make_url

        url = make_url(self.url.get_secret_value())
        found = [url.password] if url.password else []
        for key, value in url.query.items():
            if key.lower() in _SECRET_PARAMETERS:
                found += [value] if isinstance(value, str) else list(value)
        return [str(item) for item in found]

    @property
    def driver_url(self) -> dialects.DriverUrl:
        """The URL with the driver's scheme (`mysql://` -> `mysql+pymysql://`): a secret."""
        return dialects.driver_url(self.url.get_secret_value())


_SECRET_PARAMETERS = {"password", "passfile", "sslpassword", "sslkey"}


class Wiraya(_Model):
    base_url: str = "https://api.wiraya.ai"
    api_key: SecretStr
    rate_limit: Rate = 50.0
    concurrency: int = Field(default=8, ge=1, le=256)
    bulk_size: int = Field(default=100, ge=1, le=10_000)
    timeout: Duration = timedelta(seconds=30)
    max_attempts: int = Field(default=6, ge=1, le=100)
    backoff: Duration = timedelta(seconds=0.5)
    backoff_max: Duration = timedelta(seconds=30)
    token_refresh_margin: Duration = timedelta(seconds=30)
    # The longest Retry-After hold obeyed by waiting. Longer: the pass fails at once and says
    # so (`connector sync` exits 1). 5 minutes: longer than any rate-limit window a client can
    # sit out usefully inside one pass, short enough that a pass never blocks unseen for long.
    max_hold: Duration = timedelta(minutes=5)
    # A header name (e.g. Idempotency-Key) under which each event carries a stable key; none
    # by default: Wiraya is not known to honour one, and nothing relies on it.
    idempotency_header: str | None = None

    @field_validator("idempotency_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", value):
            raise ValueError(f"{value!r} is not an HTTP header name; write it as "
                             "Idempotency-Key")
        if value is not None and value.lower() in {"authorization", "content-type", "accept",
                                                   "user-agent", "host", "content-length"}:
            raise ValueError(f"{value} is a header the client sets itself; pick another "
                             "name, e.g. Idempotency-Key")
        return value

    @field_validator("api_key")
    @classmethod
    def _key(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("the API key is empty; set it, e.g. api_key: ${WIRAYA_API_KEY}")
        return value

    @field_validator("base_url")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"{value!r} is not a URL; write it as https://api.wiraya.ai")
        if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
            raise ValueError("the API must be reached over https:// (plain http:// is allowed "
                             "only for a local sandbox on 127.0.0.1)")
        return value.rstrip("/")


class Logging(_Model):
    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Metrics(_Model):
    listen: str = "127.0.0.1:9464"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not host:port, e.g. 127.0.0.1:9464")
        return value

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)


class Daemon(_Model):
    """`connector run`: how it stops and when it stops calling itself ready."""

    stop_timeout: Duration = timedelta(seconds=30)  # SIGTERM: time to finish the pages in flight
    unready_after_failures: int = Field(default=2, ge=1, le=1000)  # passes failed in a row


class Settings(_Model):
    source: Source
    wiraya: Wiraya
    state: Path = Path("./state/connector.db")
    contacts: dict[str, ContactStream] = Field(default_factory=dict)
    events: dict[str, EventStream] = Field(default_factory=dict)
    logging: Logging = Logging()
    metrics: Metrics | None = None
    daemon: Daemon = Daemon()

    @property
    def streams(self) -> dict[str, ContactStream | EventStream]:
        return {**self.contacts, **self.events}

    def page_size(self, stream: StreamBase) -> int:
        return stream.page_size or self.source.page_size

    def contact_streams_for(self, stream: EventStream) -> list[str]:
        """The contact streams an event of this stream waits for."""
        if not stream.wait_for_contact:
            return []
        return [stream.contacts_stream] if stream.contacts_stream else list(self.contacts)


# ---------------------------------------------------------------------------
# Loading: file -> environment -> validation, every problem listed.

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(node: object, place: str, env: Mapping[str, str],
            problems: list[tuple[str, str]]) -> object:
    """Fill `${VAR}` / `${VAR:-default}` in every string; `$$` is a literal `$`."""
    if isinstance(node, dict):
        return {key: _expand(value, f"{place}.{key}" if place else str(key), env, problems)
                for key, value in node.items()}
    if isinstance(node, list):
        return [_expand(value, f"{place}[{i}]", env, problems) for i, value in enumerate(node)]
    if not isinstance(node, str) or "$" not in node:
        return node

    def fill(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if env.get(f"{name}_FILE"):
            return _read_var_file(name, env[f"{name}_FILE"], place, problems)
        if default is not None:
            return default
        problems.append((place, f"environment variable {name} is not set; export it, or write "
                                f"${{{name}:-default}} to give a default"))
        return ""

    return _VAR.sub(fill, node)


def _read_var_file(name: str, path: str, place: str, problems: list[tuple[str, str]]) -> str:
    """`${VAR}` from the file `$VAR_FILE` names (Docker and systemd secrets), when VAR is unset.
    One trailing newline is dropped: `echo key > file` must not put a newline in the key."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problems.append((place, f"cannot read {name}_FILE={path}: {reason}; mount the file "
                                f"there, or set {name} instead"))
        return ""
    value = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
    if not value:
        problems.append((place, f"{name}_FILE={path} names an empty file; write the value "
                                "into it"))
    return value

def _vocabulary() -> list[str]:
    names: set[str] = set()
    models: list[type[BaseModel]] = [Settings, Source, Wiraya, Logging, Metrics, ContactStream,
                                     EventStream, FieldMap, CampaignLink, Iteration, Condition,
                                     ColumnEvent, TableRef, Daemon, DeleteEvent]
    for model in models:
        for name, info in model.model_fields.items():
            names.add(info.alias or name)
    return sorted(names)


def _place(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f"{'.' if text else ''}{part}"
    return text


def _cross_checks(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """Checks that span streams; run on the raw mapping so they show beside field problems."""
    contacts = raw.get("contacts") or {}
    events = raw.get("events") or {}
    if not isinstance(contacts, dict) or not isinstance(events, dict):
        return []
    problems = []
    if not contacts and not events:
        problems.append(("", "configure at least one stream under contacts: or events:"))
    for name in sorted(set(contacts) & set(events)):
        problems.append((f"events.{name}", "stream names must be unique; this name is also a "
                                           "contact stream"))
    for section, streams in (("contacts", contacts), ("events", events)):
        for name in streams:
            if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", str(name)):
                problems.append((f"{section}.{name}", "a stream name may hold letters, digits, "
                                                      "_ . and - only"))
    for name, stream in contacts.items():
        if isinstance(stream, dict) and "campaign" in stream and stream.get("campaigns"):
            problems.append((f"contacts.{name}", "give either campaign or campaigns, not both"))
    for name, stream in events.items():
        for key in ("reconcile", "on_delete") if isinstance(stream, dict) else ():
            if key in stream:
                problems.append((f"events.{name}.{key}", "is for contact streams only: an "
                                 "event row once sent is history, its deletion sends nothing"))
        wanted = stream.get("contacts_stream") if isinstance(stream, dict) else None
        if wanted is not None and wanted not in contacts:
            known = ", ".join(map(str, contacts)) or "none"
            problems.append((f"events.{name}.contacts_stream",
                             f"{wanted!r} is not a contact stream (known: {known})"))
    return problems


def _problems(error: ValidationError) -> list[tuple[str, str]]:
    vocabulary = _vocabulary()
    problems = []
    for item in error.errors():
        # Drop the validator names pydantic puts in a location ("function-before[...]").
        loc = tuple(part for part in item["loc"]
                    if not (isinstance(part, str) and "function-" in part))
        place = _place(loc)
        kind = item["type"]
        message = str(item["msg"]).removeprefix("Value error, ")
        if kind == "missing":
            message = "required; add it"
        elif kind == "extra_forbidden":
            unknown = str(loc[-1]) if loc else ""
            close = difflib.get_close_matches(unknown, vocabulary, n=1, cutoff=0.6)
            message = "unknown key" + (f"; did you mean {close[0]!r}?" if close else "")
        problems.append((place, message))
    return problems


def parse(text: str, source: str = "config", env: Mapping[str, str] | None = None,
          base_dir: Path | None = None) -> Settings:
    """Validate a YAML text. Relative `state:` paths are taken from `base_dir`."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")],
                          source) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([("", "the config must be a mapping of keys (source:, wiraya:, ...)")],
                          source)
    problems: list[tuple[str, str]] = []
    expanded = _expand(raw, "", os.environ if env is None else env, problems)
    assert isinstance(expanded, dict)
    problems += _cross_checks(expanded)
    try:
        settings = Settings.model_validate(expanded)
    except ValidationError as exc:
        # A place already reported (an unset variable) is not reported twice.
        reported = {place for place, _ in problems}
        problems += [p for p in _problems(exc) if p[0] not in reported]
        raise ConfigError(problems, source) from None
    if problems:
        raise ConfigError(problems, source)
    if base_dir is not None and not settings.state.is_absolute():
        settings = settings.model_copy(update={"state": base_dir / settings.state})
    return settings


def find(path: str | os.PathLike[str] | None) -> Path:
    """`--config`, else `$CONNECTOR_CONFIG`, else `./connector.yaml`."""
    return Path(path or os.environ.get(ENV_PATH) or DEFAULT_PATH)


def load(path: str | os.PathLike[str] | None = None,
         env: Mapping[str, str] | None = None) -> Settings:
    where = find(path)
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([("", f"no config file at {where}; pass --config PATH, set "
                                f"${ENV_PATH}, or create ./{DEFAULT_PATH}: `connector init` "
                                "writes one from your database, `connector init --example` "
                                "prints a full example")], str(where)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("", f"cannot read the config: {exc}")], str(where)) from None
    return parse(text, str(where), env, where.parent)
