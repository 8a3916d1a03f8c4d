"""The `connector` command run in the process (fast): exact output and exit codes of the
parser, sync --json and --dry-run --show, check --json, status --json, runs, state reset."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from connector import cli
from connector.sandbox import Sandbox
from connector.state import MIGRATIONS, DaemonLock, State
from tests.conftest import (
    CUSTOMERS,
    DB_PASSWORD,
    Database,
    add_customers,
    customers_stream,
)
from tests.ports import free_port


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def seconds_blanked(text: str) -> str:
    return re.sub(r" in \d+\.\d\ds", " in Ns", text)


# -- the parser -----------------------------------------------------------------------------


def test_global_options_work_before_and_after_the_command(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    missing = tmp_path / "nowhere.yaml"
    for args in (["sync", "--config", str(missing)], ["--config", str(missing), "sync"],
                 ["dead-letters", "list", "-c", str(missing)], ["state", "reset", "x", "-c",
                                                                 str(missing)]):
        code, out, err = run(capsys, *args)
        assert (code, out) == (2, ""), args
        assert err.startswith(f"{missing}: 1 problem(s)\n  no config file at {missing};"), args
    parse = cli.build_parser().parse_args
    after = parse(["status", "-v", "--log-format", "json", "-c", "a.yaml", "--json"])
    assert (after.config, after.verbose, after.log_format, after.json) == \
        ("a.yaml", True, "json", True)
    before = parse(["-v", "--log-format", "json", "-c", "a.yaml", "status"])
    assert (before.config, before.verbose, before.log_format) == ("a.yaml", True, "json")
    plain = parse(["status"])
    assert (plain.config, plain.verbose, plain.log_format) == (None, False, None)


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
          ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"{' '.join((*path, name))} has no help"
                found += _walk(sub, (*path, name))
    return found


def test_every_command_action_and_option_has_help_and_a_handler() -> None:
    commands = _walk(cli.build_parser())
    names = {" ".join(path) for path, _ in commands}
    assert {"sync", "run", "backfill", "status", "runs", "check", "dead-letters list",
            "dead-letters retry", "state reset", "sandbox", "demo", "init"} <= names
    for path, parser in commands:
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                assert action.help, f"{' '.join(path)} {action.dest} has no help"
        handler = parser.get_default("handler")
        if path and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            assert callable(cli._resolve(handler)), path


def test_help_tells_the_defaults(capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["sandbox", "--help"])
    assert exit_.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  --port PORT               port to listen on (default: 8900)" in lines
    assert "  --latency SECONDS         seconds added to each reply (default: 0.0)" in lines
    assert "  --rate-limit PER_SECOND   requests per second before 429 (default: no limit)" \
        in lines
    with pytest.raises(SystemExit):
        cli.main(["runs", "--help"])
    assert "  --limit N                 show the N newest runs (default: 20)" in \
        capsys.readouterr().out.splitlines()


def test_a_command_without_its_action_shows_its_help_and_exits_2(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "dead-letters")
    assert (code, out) == (2, "")
    assert err.startswith("usage: connector dead-letters ")
    assert "    retry " in err


@pytest.mark.slow
def test_help_and_status_import_only_what_they_need(tmp_path: Path) -> None:
    """--help loads no dependency at all; status reads the state file without rich, the
    metrics, the scheduler, the HTTP client or the sandbox."""
    config = tmp_path / "connector.yaml"
    config.write_text(f"source: {{url: 'sqlite:///{tmp_path}/x.db'}}\n"
                      "wiraya: {base_url: 'http://127.0.0.1:9', api_key: k}\n"
                      f"state: {tmp_path}/state.db\n")
    heavy = ["rich", "prometheus_client", "apscheduler", "httpx", "httpcore",
             "connector.sandbox", "connector.metrics", "connector.wiraya", "phonenumbers"]
    probe = ("import sys, contextlib\nfrom connector.cli import main\n"
             "with contextlib.suppress(SystemExit):\n    main(sys.argv[1:])\n"
             f"print('LOADED', sorted(m for m in {heavy!r} if m in sys.modules))")

    def loaded(*args: str) -> str:
        result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                                text=True, check=False, timeout=60)
        return result.stdout.splitlines()[-1]

    assert loaded("--help") == "LOADED []"
    assert loaded("-c", str(config), "status") == "LOADED []"
    help_only = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom connector.cli import main\ntry:\n"
                               "    main(['--help'])\nexcept SystemExit:\n    pass\n"
                               "print(sorted(m.split('.')[0] for m in sys.modules if m.split"
                               "('.')[0] in {'sqlalchemy', 'pydantic', 'yaml', 'asyncio'}))"],
        capture_output=True, text=True, check=False, timeout=60)
    assert help_only.stdout.splitlines()[-1] == "[]"


@pytest.mark.slow
def test_a_sync_with_nothing_to_send_imports_no_http_client_and_no_phone_library(
        db: Database, api: Sandbox, write_config: Any) -> None:
    """A short pass that finds nothing changed maps no row and sends nothing: it loads
    neither httpcore (and its asyncio backend) nor phonenumbers. One that sends loads both."""
    db.execute(CUSTOMERS)
    add_customers(db, 1, 20, at="now() - interval '1 minute'")
    path = write_config(contacts={"customers": customers_stream()})
    late = ["httpcore", "anyio", "h11", "phonenumbers"]
    probe = ("import sys, contextlib\nfrom connector.cli import main\n"
             "code = main(sys.argv[1:])\n"
             f"print('LOADED', code, sorted(m for m in {late!r} if m in sys.modules))")

    def loaded() -> str:
        result = subprocess.run([sys.executable, "-c", probe, "-c", str(path), "sync"],
                                capture_output=True, text=True, check=False, timeout=60)
        return result.stdout.splitlines()[-1]

    assert loaded() == f"LOADED 0 {sorted(late)}"  # the first sync sends 20
    assert len(api.contacts) == 20
    assert loaded() == "LOADED 0 []"  # 20 rows read in the lookback, none changed
    db.execute("UPDATE customers SET city = 'Moved', updated_at = now() "
               "WHERE customer_id = 7")
    assert loaded() == f"LOADED 0 {sorted(late)}"
    assert api.contacts["7"]["general"]["city"] == "Moved"


@pytest.mark.slow
def test_the_console_script_collects_garbage_again_once_a_pass_begins(
        db: Database, api: Sandbox, write_config: Any) -> None:
    """The console script holds the garbage collector off while it starts (heap.py); a
    first sync that stayed that way would keep every reference cycle it makes."""
    db.execute(CUSTOMERS)
    add_customers(db, 1, 20)
    path = write_config(contacts={"customers": customers_stream()})
    probe = ("import gc, sys\nfrom connector import cli, heap\nheap.hold()\n"
             "held = gc.isenabled()\ncode = cli.main(sys.argv[1:])\n"
             "print('GC', held, gc.isenabled(), gc.get_freeze_count() > 10_000, code)")
    result = subprocess.run([sys.executable, "-c", probe, "-c", str(path), "sync"],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.stdout.splitlines()[-1] == "GC False True True 0", result.stderr
    assert len(api.contacts) == 20


@pytest.mark.slow
def test_the_sandbox_command_collects_garbage_while_it_serves() -> None:
    """The sandbox serves until stopped: it must not keep the collector held (heap.py)."""
    probe = ("import gc, os, sys, threading\nfrom connector import cli, heap\nheap.hold()\n"
             "def report():\n    print('GC', gc.isenabled(), flush=True)\n    os._exit(0)\n"
             "threading.Timer(2.0, report).start()\ncli.main(sys.argv[1:])\n")
    result = subprocess.run([sys.executable, "-c", probe, "sandbox", "--port",
                             str(free_port())], capture_output=True, text=True, check=False,
                            timeout=60)
    assert result.stdout.splitlines()[-1] == "GC True", result.stdout + result.stderr


# -- sync --json and the dry run ------------------------------------------------------------

ORDERS = """
CREATE TABLE orders (order_id int PRIMARY KEY, customer_id int NOT NULL,
                     created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX orders_created_at ON orders (created_at, order_id);
"""


def conversions() -> dict[str, Any]:
    return {"table": "orders", "id": "order_id", "contact": "customer_id",
            "cursor": "created_at", "lookback": "10m"}


@pytest.fixture
def shop(db: Database, write_config: Any) -> Path:
    """30 customers and 5 orders; the config's path."""
    db.execute(CUSTOMERS)
    db.execute(ORDERS)
    add_customers(db, 1, 30)
    db.execute("INSERT INTO orders (order_id, customer_id) SELECT i, i FROM "
               "generate_series(1, 5) AS i")
    path: Path = write_config(contacts={"customers": customers_stream()},
                              events={"conversions": conversions()})
    return path


def _seconds(document: dict[str, Any]) -> dict[str, Any]:
    for stream in document["streams"].values():
        assert isinstance(stream["seconds"], float)
        stream["seconds"] = 0.0
    return document


def test_sync_json_is_one_object_with_numbers(shop: Path, api: Sandbox,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "sync", "--json", "--config", str(shop))
    assert (code, err) == (0, "")
    assert len(out.splitlines()) == 1
    zero = {"linked": 0, "events": 0, "released": 0, "waiting": 0, "dead": 0, "repeated": 0,
            "resolved": 0, "deleted": 0}
    assert _seconds(json.loads(out)) == {
        "dry_run": False, "outcome": "ok", "exit_code": 0,
        "streams": {
            "customers": {"outcome": "ok", "error": None, "seconds": 0.0,
                          "counts": {"read": 30, "sent": 30, "skipped": 0, **zero}},
            "conversions": {"outcome": "ok", "error": None, "seconds": 0.0,
                            "counts": {"read": 5, "sent": 5, "skipped": 0, **zero}}}}


def test_a_failed_pass_in_json_keeps_its_error_and_exit_code(
        shop: Path, db: Database, api: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    db.execute("DROP TABLE orders")
    code, out, _ = run(capsys, "sync", "conversions", "--json", "--config", str(shop))
    assert code == 1
    document = _seconds(json.loads(out))
    error = document["streams"]["conversions"].pop("error")
    assert error.startswith("events.conversions.table: no table or view named orders in ")
    assert document == {"dry_run": False, "outcome": "failed", "exit_code": 1, "streams": {
        "conversions": {"outcome": "failed", "seconds": 0.0, "counts": {
            "read": 0, "sent": 0, "skipped": 0, "linked": 0, "events": 0, "released": 0,
            "waiting": 0, "dead": 0, "repeated": 0, "resolved": 0, "deleted": 0}}}}


def test_a_dry_run_says_what_it_would_send_and_sends_nothing(
        shop: Path, api: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "sync", "--dry-run", "--config", str(shop))
    assert (code, err) == (0, "")
    assert seconds_blanked(out).splitlines() == [
        "customers: 30 read, 30 to send, 0 skipped in Ns",
        # the orders' contacts are not delivered yet: in a real pass they would be
        "conversions: 5 read, 0 to send, 0 skipped, 5 would wait in Ns",
        "dry run: nothing was sent, no state was changed"]
    assert api.requests == []


def test_show_prints_the_payloads_masking_secrets_and_with_redact_personal_fields(
        shop: Path, db: Database, api: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    # A value that happens to be the database password is still never shown.
    db.execute("UPDATE customers SET city = %s WHERE customer_id = 2", (DB_PASSWORD,))
    code, out, _ = run(capsys, "sync", "customers", "--dry-run", "--show", "2",
                       "--config", str(shop))
    assert code == 0
    assert seconds_blanked(out).splitlines() == [
        'contact 1: {"schema": 1, "personal": {"phoneNumber": "46701000001", '
        '"givenName": "Given1", "surName": "Family1"}, "general": {"city": "City1"}}',
        'contact 2: {"schema": 1, "personal": {"phoneNumber": "46701000002", '
        '"givenName": "Given2", "surName": "Family2"}, "general": {"city": "***"}}',
        "(2 of 30 payload(s) shown)",
        "customers: 30 read, 30 to send, 0 skipped in Ns",
        "dry run: nothing was sent, no state was changed"]

    code, out, _ = run(capsys, "sync", "customers", "--dry-run", "--show", "2", "--redact",
                       "--json", "--config", str(shop))
    document = json.loads(out)
    assert document["dry_run"] is True
    assert document["streams"]["customers"]["counts"] == {
        "read": 30, "to_send": 30, "skipped": 0, "to_link": 0, "events_to_send": 0,
        "to_release": 0, "would_wait": 0, "would_be_dead": 0, "repeated": 0, "resolved": 0,
        "deleted": 0}
    redacted = {"phoneNumber": "***", "givenName": "***", "surName": "***"}
    assert document["payloads"] == {"total": 30, "shown": [
        {"kind": "contact", "key": "1",
         "body": {"schema": 1, "personal": redacted, "general": {"city": "City1"}}},
        {"kind": "contact", "key": "2",
         "body": {"schema": 1, "personal": redacted, "general": {"city": "***"}}}]}
    assert DB_PASSWORD not in out
    assert api.requests == []


def test_show_lists_links_and_events_too(db: Database, api: Sandbox, write_config: Any,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    db.execute(CUSTOMERS)
    db.execute(ORDERS)
    add_customers(db, 1, 1)
    db.execute("INSERT INTO orders (order_id, customer_id, created_at) "
               "VALUES (7, 1, '2026-01-02T03:04:05Z')")
    path = write_config(contacts={"customers": customers_stream(
        campaign={"campaign": "welcome", "iteration": "2026-11"})})
    code, out, _ = run(capsys, "sync", "--dry-run", "--show", "5", "--config", str(path))
    assert code == 0
    assert out.splitlines()[:3] == [
        'contact 1: {"schema": 1, "personal": {"phoneNumber": "46701000001", '
        '"givenName": "Given1", "surName": "Family1"}, "general": {"city": "City1"}}',
        'link 1: {"campaign": "welcome", "iteration": "2026-11"}',
        "(2 of 2 payload(s) shown)"]
    # An event needs its contact delivered: send the contact, then dry-run the orders.
    path = write_config(contacts={"customers": customers_stream()},
                        events={"conversions": conversions()})
    assert run(capsys, "sync", "customers", "--config", str(path))[0] == 0
    code, out, _ = run(capsys, "sync", "conversions", "--dry-run", "--show", "5",
                       "--config", str(path))
    assert code == 0
    assert out.splitlines()[0] == \
        'event 7: {"at": "2026-01-02T03:04:05Z", "name": "Conversion", "schema": 1}'


def test_a_dry_run_writes_no_state_file(shop: Path, api: Sandbox,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    state = shop.parent / "state" / "connector.db"
    assert run(capsys, "sync", "--dry-run", "--config", str(shop))[0] == 0
    assert not state.exists()


def test_show_and_redact_need_what_they_go_with(shop: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "sync", "--show", "3", "--config", str(shop)) == (2, "", (
        "arguments: 1 problem(s)\n  --show: goes with --dry-run (a real pass sends, it does "
        "not show); add --dry-run\n"))
    assert run(capsys, "sync", "--dry-run", "--redact", "--config", str(shop)) == (2, "", (
        "arguments: 1 problem(s)\n  --redact: goes with --show N; add --show 10\n"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["sync", "--dry-run", "--show", "0"])
    assert exit_.value.code == 2
    assert "argument --show: 0 is less than 1" in capsys.readouterr().err


# -- check --json ---------------------------------------------------------------------------


def test_check_json_lists_each_finding_with_its_level(shop: Path, api: Sandbox,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    code, out, err = run(capsys, "check", "--json", "--config", str(shop))
    assert (code, err) == (0, "")
    document = json.loads(out)
    database = document["findings"].pop(1)
    assert database["level"] == "ok" and database["message"].startswith("database: 1")
    assert document == {"ok": True, "problems": 0, "warnings": 0, "findings": [
        {"level": "ok", "message": "config: 1 contact stream(s), 1 event stream(s)"},
        {"level": "ok", "message": "contacts.customers: public.customers (table), id "
                                   "customer_id, cursor updated_at (timestamptz)"},
        {"level": "ok", "message": "events.conversions: orders (table), id order_id, "
                                   "cursor created_at (timestamptz)"},
        {"level": "ok", "message": "open-transaction guard: active (the role sees every "
                                   "session)"},
        {"level": "ok", "message": f"state: {shop.parent / 'state' / 'connector.db'} "
                                   f"(schema {len(MIGRATIONS)})"},
        {"level": "ok", "message": f"Wiraya: logged in at {api.url}"},
        {"level": "ok", "message": "Wiraya: the key may call the API (PUT /api/contact/_bulk "
                                   "with no items: 400)"}]}


def test_check_json_fails_with_exit_1_and_the_reason(shop: Path, api: Sandbox,
                                                     write_config: Any,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    path = write_config(contacts={"customers": customers_stream()},
                        wiraya={"api_key": "not-the-key-123"})
    code, out, _ = run(capsys, "check", "--json", "--config", str(path))
    assert code == 1
    document = json.loads(out)
    assert (document["ok"], document["problems"], document["warnings"]) == (False, 1, 0)
    assert document["findings"][-1]["level"] == "fail"
    assert document["findings"][-1]["message"].startswith(
        "Wiraya: Wiraya refused the API key (401")
    assert "not-the-key-123" not in out


# -- status, runs -------------------------------------------------------------------------


def test_status_json_gives_lag_in_seconds_and_the_watermark_as_values(
        db: Database, api: Sandbox, write_config: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 3, at="now() - interval '2 days'")
    path = write_config(contacts={"customers": customers_stream()})
    assert run(capsys, "sync", "--config", str(path))[0] == 0
    code, out, _ = run(capsys, "status", "--json", "--config", str(path))
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 1
    row = rows[0]
    lag = row.pop("lag_seconds")
    assert isinstance(lag, int) and 2 * 86400 <= lag < 2 * 86400 + 120
    watermark = row.pop("watermark")
    assert watermark["id"] == 3 and watermark["cursor"].endswith("+00:00")
    last = row.pop("last_run")
    assert {key: last[key] for key in ("stream", "kind", "outcome", "read", "sent")} == \
        {"stream": "customers", "kind": "live", "outcome": "ok", "read": 3, "sent": 3}
    assert row == {"stream": "customers", "kind": "contacts", "delivered": 3, "waiting": 0,
                   "dead": 0, "deleted": 0}
    code, out, _ = run(capsys, "status", "--config", str(path))
    lines = out.splitlines()
    assert lines[0] == f"state: {path.parent / 'state' / 'connector.db'}"
    assert lines[1].split() == ["stream", "kind", "watermark", "lag", "last", "run", "outcome",
                                "read", "sent", "skipped", "waiting", "dead"]
    assert lines[2].split()[:2] == ["customers", "contacts"]
    assert " 2 days, " in lines[2] and lines[2].split()[-6:] == ["ok", "3", "3", "0", "0", "0"]


def test_status_before_any_pass(shop: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "status", "--config", str(shop))
    assert code == 0
    state = shop.parent / "state" / "connector.db"
    assert out.splitlines() == [
        f"state: {state} (not yet written: no pass has run)",
        "stream       kind      watermark  lag  last run  outcome  read  sent  skipped  "
        "waiting  dead",
        "customers    contacts  -            -  never     -           -     -        -  "
        "      0     0",
        "conversions  events    -            -  never     -           -     -        -  "
        "      0     0"]


def test_runs_lists_the_history_newest_first(shop: Path, api: Sandbox,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "runs", "--config", str(shop)) == (0, "no runs yet\n", "")
    for _ in range(2):
        assert run(capsys, "sync", "--config", str(shop))[0] == 0
    code, out, _ = run(capsys, "runs", "customers", "--limit", "1", "--json",
                       "--config", str(shop))
    assert code == 0
    runs = json.loads(out)
    assert [(r["id"], r["stream"], r["outcome"], r["read"], r["sent"], r["skipped"])
            for r in runs] == [(3, "customers", "ok", 30, 0, 30)]
    code, out, _ = run(capsys, "runs", "--config", str(shop))
    lines = out.splitlines()
    assert lines[0].split() == ["id", "stream", "kind", "started", "finished", "outcome",
                                "read", "sent", "skipped", "dead", "waiting", "error"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["4", "conversions"], ["3", "customers"], ["2", "conversions"], ["1", "customers"]]
    assert lines[4].split()[5:] == ["ok", "30", "30", "0", "0", "0", "-"]
    assert run(capsys, "runs", "custmers", "--config", str(shop)) == (2, "", (
        "streams: 1 problem(s)\n  custmers: no such stream (known: customers, "
        "conversions)\n"))


# -- state reset ------------------------------------------------------------------------------


def test_reset_asks_first_and_keeps_the_event_ledger(
        shop: Path, api: Sandbox, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(capsys, "sync", "--config", str(shop))[0] == 0
    assert len(api.events) == 5
    state = shop.parent / "state" / "connector.db"
    with State.open(state) as opened:
        watermark = opened.watermark("conversions")
    assert watermark is not None

    answers = iter(["n"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    code, out, _ = run(capsys, "state", "reset", "conversions", "--config", str(shop))
    assert code == 1
    assert out.splitlines()[-1] == "nothing was reset"
    with State.open(state) as opened:
        assert opened.watermark("conversions") == watermark

    code, out, _ = run(capsys, "state", "reset", "conversions", "--yes", "--config", str(shop))
    assert code == 0
    assert out.splitlines() == [
        f"forgets: the watermark {watermark.cursor.isoformat()} (id 5), 0 waiting event(s), "
        "0 dead letter(s), 0 backfill range(s)",
        "keeps:   5 sent event(s) in the ledger (--resend-events forgets them), campaign "
        "links, 1 run(s) of history",
        "then:    the next pass of conversions reads the table from the start and sends none "
        "of the events already sent",
        "conversions: reset; its next pass reads the table from the start"]
    with State.open(state) as opened:
        assert opened.watermark("conversions") is None
        assert opened.watermark("customers") is not None  # other streams untouched
        assert opened.count("contacts", "customers") == 30
    code, out, _ = run(capsys, "sync", "--config", str(shop))
    assert seconds_blanked(out).splitlines() == [
        "customers: 30 read, 0 sent, 30 skipped in Ns",
        "conversions: 5 read, 0 sent, 5 skipped in Ns"]
    assert len(api.events) == 5  # none sent twice


def test_reset_with_resend_events_sends_them_again_and_contacts_are_resent(
        shop: Path, api: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "sync", "--config", str(shop))[0] == 0
    code, out, _ = run(capsys, "state", "reset", "conversions", "--resend-events", "--yes",
                       "--config", str(shop))
    assert code == 0
    assert out.splitlines()[0].endswith(", 0 backfill range(s), 5 sent event(s) in the ledger")
    assert out.splitlines()[1] == "keeps:   campaign links, 1 run(s) of history"
    code, out, _ = run(capsys, "state", "reset", "customers", "-y", "--config", str(shop))
    assert code == 0
    assert out.splitlines()[0].startswith("forgets: the watermark ")
    assert out.splitlines()[0].endswith(" 30 contact digest(s), 0 dead letter(s), "
                                        "0 backfill range(s)")
    assert run(capsys, "sync", "--config", str(shop))[0] == 0
    assert len(api.events) == 10
    assert sum(api.contact_writes.values()) == 60


def test_reset_is_refused_while_a_daemon_uses_the_state_file(
        shop: Path, api: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    assert run(capsys, "sync", "--config", str(shop))[0] == 0
    lock = DaemonLock(shop.parent / "state" / "connector.db").acquire()
    try:
        code, out, err = run(capsys, "state", "reset", "customers", "--yes",
                             "--config", str(shop))
    finally:
        lock.release()
    assert (code, out) == (1, "")
    assert err == (f"error: a connector daemon (pid {os.getpid()}) uses "
                   f"{shop.parent / 'state' / 'connector.db'}; stop it, then reset the stream\n")


def test_reset_of_an_unknown_stream_is_a_usage_error(shop: Path, api: Sandbox,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    assert run(capsys, "state", "reset", "customers", "--yes", "--config", str(shop)) == (
        0, f"nothing to reset: no state file at {shop.parent / 'state' / 'connector.db'}\n",
        "")
    assert run(capsys, "sync", "--config", str(shop))[0] == 0
    assert run(capsys, "state", "reset", "custmers", "--yes", "--config", str(shop)) == (
        2, "", "streams: 1 problem(s)\n  custmers: no such stream in the config or the state "
               "file (known: customers, conversions)\n")


@pytest.mark.slow
def test_shell_completion_when_argcomplete_is_installed(tmp_path: Path) -> None:
    """`eval "$(register-python-argcomplete connector)"` completes commands and options."""
    pytest.importorskip("argcomplete", reason="shell completion needs the optional "
                                              "argcomplete package (pip install "
                                              "'wiraya-connector[completion]')")
    answer = tmp_path / "completions"

    def complete(line: str) -> list[str]:
        env = {**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": line,
               "COMP_POINT": str(len(line)), "_ARGCOMPLETE_IFS": "\n",
               "_ARGCOMPLETE_STDOUT_FILENAME": str(answer)}
        result = subprocess.run([sys.executable, "-m", "connector"], env=env,
                                capture_output=True, text=True, check=False, timeout=60)
        assert result.returncode == 0, result.stderr
        return sorted(answer.read_text().split("\n"))

    assert complete("connector s") == ["sandbox", "state", "status", "sync"]
    assert complete("connector dead-letters l") == ["list "]
    assert complete("connector sync --dry") == ["--dry-run "]


def test_a_shown_key_with_control_characters_is_quoted() -> None:
    from connector.commands.payloads import Payload, Shown

    assert Payload("event", "7\x1fOptOut", {"name": "OptOut"}).line() == \
        'event "7\\u001fOptOut": {"name": "OptOut"}'
    assert Payload("contact", "c-7", {}).line() == "contact c-7: {}"
    shown = Shown(limit=1)
    shown("contact", "1", {"personal": {"a": "b"}})
    shown("contact", "2", {})
    assert (len(shown.items), shown.total) == (1, 2)
