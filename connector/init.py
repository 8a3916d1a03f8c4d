"""`connector init`: look at a database and write a config that `connector check` accepts.

    scan (init_scan)       the database -> tables, columns, keys, indexes, a small sample
    propose (init_propose) pure: tables -> contact and event streams, each with its reasons
    render (init_render)   pure: the proposal -> commented YAML, no secret in it

The URL comes from `--url` or `$DATABASE_URL`; the file says `${DATABASE_URL}` and
`${WIRAYA_API_KEY}`, never their values. What was found, and why, goes to stderr, one line
per candidate.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import TextIO

import phonenumbers
from pydantic import SecretStr, ValidationError

from connector import config
from connector.errors import ConfigError, ConnectorError
from connector.init_propose import Proposal, propose
from connector.init_render import comment, render
from connector.init_scan import scan
from connector.source import Source

EXAMPLE = ("examples", "connector.example.yaml")


def example() -> str:
    """The full example config, as shipped in the package."""
    return resources.files("connector").joinpath(*EXAMPLE).read_text(encoding="utf-8")


def run(url: str | None, output: str, force: bool = False, region: str | None = None, *,
        stdout: TextIO, stderr: TextIO) -> int:
    """Scan the database at `url`, write the config to `output` (`-`: stdout), summarise."""
    target = None if output == "-" else Path(output)
    if target is not None and target.exists() and not force:
        raise ConfigError([("--output", f"{target} exists; pass --force to overwrite it, or "
                                        "--output PATH (- for stdout)")], "connector init")
    source = Source(_source_settings(url))
    try:
        schema = scan(source)
        quote = source.engine.dialect.identifier_preparer.quote
    finally:
        source.close()
    proposal = propose(schema, _region(region))
    for line in summary(proposal):
        print(comment(line), file=stderr)
    if not proposal.contacts:
        raise ConnectorError("found no contact table (a table with a one-column primary key "
                             "and a phone number column); `connector init --example` prints "
                             "a full example to start from")
    text = render(proposal, quote)
    if target is None:
        stdout.write(text)
        return 0
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConnectorError(f"cannot write {target}: {exc.strerror}") from None
    print(f"wrote {target}; next: set DATABASE_URL and WIRAYA_API_KEY, then "
          f"`connector --config {target} check`", file=stderr)
    return 0


def _source_settings(url: str | None) -> config.Source:
    url = url or os.environ.get("DATABASE_URL")
    if not url:
        raise ConfigError([("--url", "no database URL: pass --url URL or set $DATABASE_URL")],
                          "connector init")
    try:
        return config.Source(url=SecretStr(url))
    except ValidationError as exc:
        # The messages of config.Source never quote the URL (it may hold a password).
        message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise ConfigError([("--url", message)], "connector init") from None


def _region(region: str | None) -> str | None:
    if region is None:
        return None
    if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError([("--region", f"{region!r} is not a region phonenumbers knows; give "
                                        "a two-letter country code such as SE or GB")],
                          "connector init")
    return region.upper()


def summary(proposal: Proposal) -> list[str]:
    """One line per candidate: what it is and why."""
    lines = []
    for number, item in enumerate(proposal.contacts):
        role = "proposed" if number == 0 else "alternative (commented out)"
        cursor = item.cursor.column or "none"
        lines.append(f"contacts.{item.stream}: {role}: table {item.table.name}, id {item.id}, "
                     f"phone {item.phone.column} ({item.phone.why}), cursor {cursor} "
                     f"({item.cursor.why})")
        for opt_out in item.opt_outs:
            lines.append(f"contacts.{item.stream}: OptOut event when {opt_out.column} "
                         f"{opt_out.condition.replace('-', ' ')} ({opt_out.why})")
    for event in proposal.events:
        lines.append(f"events.{event.stream}: {event.name} events of {event.for_stream}: "
                     f"table {event.table.name}, contact {event.contact} ({event.link}), "
                     f"at {event.at}, cursor {event.cursor.column or 'none'} "
                     f"({event.cursor.why})")
    for table, why in proposal.skipped:
        lines.append(f"skipped {table}: {why}")
    return lines
