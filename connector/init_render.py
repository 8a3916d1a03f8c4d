"""Pure: a proposal -> the commented YAML config `connector init` writes.

Every reason becomes a comment beside what it explains. Identifiers are written as YAML
scalars that read back as the same text (quoted when YAML would read them otherwise, `$`
doubled so that `${VAR}` expansion leaves them alone). No secret is ever written: the URL
and the API key are `${DATABASE_URL}` and `${WIRAYA_API_KEY}`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import yaml

from connector.init_propose import Contacts, Cursor, Events, Proposal

Quote = Callable[[str], str]  # an SQL identifier, quoted for this database
_FLOW_UNSAFE = re.compile(r"[,\[\]{}#:&*!|>'\"%@`?\s]")


def scalar(text: str, flow: bool = False) -> str:
    """`text` as a YAML scalar that loads back as `text` (inside `{...}` when `flow`)."""
    text = text.replace("$", "$$")
    plain = yaml.safe_dump(text, width=1_000_000, allow_unicode=True)
    plain = plain.removesuffix("\n").removesuffix("\n...")
    if "\n" not in plain and yaml.safe_load(plain) == text \
            and not (flow and _FLOW_UNSAFE.search(plain)):
        return plain
    quoted = yaml.safe_dump(text, width=1_000_000, allow_unicode=True, default_style='"')
    return quoted.strip()


def comment(text: str) -> str:
    """One comment line's text: no line break may end the comment early."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", text)


def _line(indent: int, body: str, why: str = "") -> str:
    line = " " * indent + body
    if why:
        line = line.ljust(34) + "  # " + comment(why)
    return line


def header(proposal: Proposal) -> list[str]:
    contacts = 1 if proposal.contacts else 0
    events = len([item for item in proposal.events if _active(proposal, item)])
    return [
        f"# Written by `connector init` from a {proposal.dialect} database: {contacts} contact "
        f"stream, {events} event stream(s).",
        "# Read it, change what does not fit, then run `connector check`. No secret is written",
        "# here: ${VAR} is read from the environment when the connector starts.",
        "",
        "source:",
        _line(2, "url: ${DATABASE_URL}"),
        _line(2, "timezone: UTC", "how to read timestamp columns without a time zone"),
        "",
        "wiraya:",
        _line(2, "base_url: ${WIRAYA_BASE_URL:-https://api.wiraya.ai}"),
        _line(2, "api_key: ${WIRAYA_API_KEY}"),
        "",
        _line(0, "state: ./state/connector.db", "the connector's memory (SQLite)"),
    ]


def _active(proposal: Proposal, item: Events) -> bool:
    return bool(proposal.contacts) and item.for_stream == proposal.contacts[0].stream


def render(proposal: Proposal, quote: Quote) -> str:
    lines = header(proposal)
    if proposal.contacts:
        first, *others = proposal.contacts
        lines += ["", "contacts:", *contact_block(first, proposal.dialect, quote)]
        for other in others:
            lines += ["", f"  # {comment(other.table.name)} looks like contacts too; "
                          "uncomment to sync it as well:"]
            lines += [_commented(line) for line in contact_block(other, proposal.dialect, quote)]
    active = [item for item in proposal.events if _active(proposal, item)]
    if active:
        lines += ["", "events:"]
        for item in active:
            lines += event_block(item, proposal.dialect, quote)
    inactive = [item for item in proposal.events if not _active(proposal, item)]
    if inactive:
        lines += ["", "# Event tables of the other contact tables above:"]
        lines += ["# events:" if not active else ""]
        for item in inactive:
            lines += [_commented(line) for line in event_block(item, proposal.dialect, quote)]
    return "\n".join(lines) + "\n"


def _commented(line: str) -> str:
    return "# " + line if line else ""


def _table(item: Contacts | Events, dialect: str) -> str:
    table = item.table
    if dialect != "postgresql" or table.schema is None:
        return scalar(table.name)
    if "." in table.schema or "." in table.name:
        return f"{{schema: {scalar(table.schema, True)}, name: {scalar(table.name, True)}}}"
    return scalar(f"{table.schema}.{table.name}")


def contact_block(item: Contacts, dialect: str, quote: Quote) -> list[str]:
    why = f"{item.table.name}: primary key {item.id}, phone numbers in {item.phone.column}"
    lines = [_line(2, f"{scalar(item.stream)}:", why),
             _line(4, f"table: {_table(item, dialect)}"),
             _line(4, f"id: {scalar(item.id)}", "the contact id Wiraya will know")]
    lines += cursor_lines(item.cursor, item, dialect, quote)
    personal = [_line(6, "phoneNumber: {column: " + scalar(item.phone.column, True)
                      + (f", region: {item.phone.region}" if item.phone.region else "") + "}",
                      item.phone.why)]
    if item.phone.others:
        personal.append(_line(6, f"# also phone-like: {', '.join(item.phone.others)}"))
    general: list[str] = []
    for mapped in item.fields:
        target = personal if mapped.section == "personal" else general
        target.append(_line(6, f"{mapped.field}: {scalar(mapped.column)}", mapped.why))
    lines += [_line(4, "personal:", "personal data (Wiraya deletes it at a project's end)"),
              *personal]
    if general:
        lines += [_line(4, "general:", "data that does not identify a person"), *general]
    lines.append(_line(4, "# campaign: {campaign: YOUR-FLOW-ID}",
                       "link each contact to a Wiraya communication flow"))
    return lines + opt_out_lines(item)


def cursor_lines(cursor: Cursor, item: Contacts | Events, dialect: str,
                 quote: Quote) -> list[str]:
    if cursor.column is None:
        return [_line(4, f"# {cursor.why}:"),
                _line(4, "# each pass compares the whole table (narrow pages of id and digest;"),
                _line(4, "# only the rows that changed are read in full)."),
                _line(4, "cursor: none")]
    served = "" if cursor.index is None else "; the primary key serves it" \
        if cursor.index == "the primary key" else f"; index {cursor.index} starts with it"
    lines = [_line(4, f"cursor: {scalar(cursor.column)}", cursor.why + served)]
    if cursor.index is None:
        name = quote(item.table.name)
        if dialect == "postgresql" and item.table.schema:
            name = f"{quote(item.table.schema)}.{name}"
        lines.append(_line(4, f"# no index starts with {cursor.column}, so each pass reads the "
                              "whole table; add one:"))
        lines.append(_line(4, f"# CREATE INDEX ON {name} ({quote(cursor.column)}, "
                              f"{quote(item.id)});"))
    return lines


def opt_out_lines(item: Contacts) -> list[str]:
    if not item.opt_outs:
        return []
    lines = [_line(4, "events:", "an event when the condition turns true, once per turn")]
    for opt_out in item.opt_outs:
        column = scalar(opt_out.column, True)
        when = {"equals-true": "equals: true", "equals-false": "equals: false",
                "not-null": "not_null: true"}[opt_out.condition]
        lines += [_line(6, "- name: OptOut", opt_out.why),
                  _line(8, f"when: {{column: {column}, {when}}}")]
        if opt_out.at:
            lines.append(_line(8, f"at: {scalar(opt_out.at)}", "when it happened"))
    return lines


def event_block(item: Events, dialect: str, quote: Quote) -> list[str]:
    at_why = "when it happened" + (
        f"; a row with no {item.at} is held until it has one" if item.at_nullable else "")
    lines = [_line(2, f"{scalar(item.stream)}:",
                   f"{item.table.name}: {item.name} events of {item.for_stream}"),
             _line(4, f"table: {_table(item, dialect)}"),
             _line(4, f"id: {scalar(item.id)}", "one event per row, ever"),
             _line(4, f"contact: {scalar(item.contact)}", item.link)]
    lines += cursor_lines(item.cursor, item, dialect, quote)
    lines += [_line(4, f"at: {scalar(item.at)}", at_why),
              _line(4, f"name: {item.name}", "Wiraya's event name (case-sensitive)")]
    return lines
