"""Deliberate faults: proof that the tests can fail.

Each fault below breaks one promise of the connector by changing one piece of its code. The
script applies the faults one at a time to a throwaway copy of the project, runs the tests
that guard that promise, and reports every fault that no test caught. A fault whose code is
no longer found (the code moved) is reported too, so the list keeps up with the code.

    python tests/faults.py              # every fault
    python tests/faults.py ledger dst   # the faults whose names contain these words
    python tests/faults.py --list

Exit code: 0 when every fault was caught, 1 otherwise. It takes several minutes (the guarding
tests run once per fault, on real servers), so it is not part of the default test run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Fault:
    name: str
    path: str  # relative to the project root
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest node ids or files that must go red
    why: str  # the promise it breaks


def _f(name: str, path: str, old: str, new: str, *tests: str, why: str) -> Fault:
    return Fault(name, path, old, new, tests, why)


C = "tests/test_contacts.py"
E = "tests/test_events.py"

FAULTS: list[Fault] = [
    # -- where a pass reads and how far its watermark moves (window.py, sync.py)
    _f("time-cap", "connector/window.py",
       "        cap = time_cap(kind, now, oldest, zone)\n", "        cap = None\n",
       f"{C}::test_open_transaction_guard_holds_the_start_back", "tests/test_window.py",
       why="the watermark of a time cursor passes rows still to commit"),
    _f("integer-cap", "connector/window.py",
       "    if oldest is None:\n        return visible", "    if True:\n        return visible",
       "tests/test_window.py",
       f"{C}::test_an_integer_cursor_waits_for_a_transaction_that_took_a_value_and_commits_late",
       why="the open-transaction guard is off for integer cursors"),
    _f("lookback", "connector/window.py",
       "floor = None if high is None else step_back(high.cursor, lookback)",
       "floor = None if high is None else high.cursor",
       f"{C}::test_a_row_committed_late_within_the_lookback_arrives",
       why="no lookback: a row committed late is lost"),
    _f("dst-floor", "connector/window.py",
       "        floor = read_floor(high.cursor, lookback, zone, now)",
       "        floor = step_back(high.cursor, lookback)",
       "tests/test_dst.py::test_rows_written_in_the_repeated_hour_are_read",
       why="rows written in the repeated autumn hour are never read"),
    _f("dst-reading", "connector/localtime.py",
       "return (naive - min(first, second))", "return (naive - max(first, second))",
       "tests/test_localtime.py",
       why="an ambiguous local time is read otherwise than PostgreSQL reads it"),
    _f("table-restart", "connector/restart.py",
       "    if identity is None or identity == saved or ctx.dry_run:",
       "    if True:", "tests/test_reuse.py",
       why="a truncated table is read from the old watermark: new low ids are never read"),
    # -- what a page sends (plan.py, diff.py, deliver.py)
    _f("digest-comparison", "connector/diff.py",
       "    if memory.delivered == digest:", "    if False:",
       f"{C}::test_ten_thousand_rows_then_only_what_changed", "tests/test_diff.py",
       why="an unchanged contact is sent again"),
    _f("ledger-check", "connector/plan.py",
       "            if identity is None or identity == event.identity:",
       "            if False:", E,
       why="an event already sent is sent again"),
    _f("ledger-identity", "connector/plan.py",
       "            if identity is None or identity == event.identity:",
       "            if True:", "tests/test_reuse.py",
       why="a new event that reuses an old row id is skipped (a lost opt-out)"),
    _f("wait-for-contact", "connector/plan.py",
       "        if event.contact_id in absent:", "        if False:",
       f"{E}::test_an_event_waits_for_its_contact",
       why="an event is sent before its contact exists"),
    _f("unanswered-budget", "connector/deliver.py",
       "budget = {item.key: limit - plan.unanswered.get(item.key, 0) for item in plan.send}",
       "budget = {item.key: limit for item in plan.send}", "tests/test_unanswered.py",
       why="an event without a reply is resent on every pass"),
    _f("page-commit", "connector/page.py",
       "        self.ctx.state.commit(self.name, commit)\n        if commit.held:",
       "        if commit.held:",
       f"{C}::test_an_unchanged_pass_reads_only_the_lookback_window",
       why="a page's outcome and watermark are never written"),
    _f("dead-letter-recheck", "connector/held.py",
       "    if not held:\n        return 0\n    waiting",
       "    if True:\n        return 0\n    waiting",
       f"{C}::test_bad_rows_are_dead_lettered_and_flow_once_fixed",
       why="a fixed row never flows again by itself"),
    # -- mapping
    _f("phone-validation", "connector/mapping.py",
       "    if not phonenumbers.is_valid_number(number):", "    if False:",
       "tests/test_mapping.py",
       why="a number that is not a phone number is sent"),
    _f("phone-shortcut", "connector/phone.py",
       "    return digits if country.valid(nsn) else None", "    return digits",
       "tests/test_phone.py",
       why="the fast path for +CC numbers sends a number phonenumbers would refuse"),
    # -- the client (wiraya.py, replies.py, retry.py, bulk.py)
    _f("judge-2xx", "connector/replies.py",
       "    if kind == \"text/html\" or raw.lstrip()[:1] == b\"<\":", "    if False:",
       "tests/test_wiraya.py", "tests/test_unanswered.py",
       why="a proxy's HTML page is counted as Wiraya's acceptance"),
    _f("retry-after-hold", "connector/retry.py",
       "        if until > self.hold_until:", "        if False:",
       "tests/test_wiraya.py",
       why="calls go on during a Retry-After hold"),
    _f("retry-after-bound", "connector/retry.py",
       "        if self.remaining() > self.policy.max_hold:", "        if False:",
       "tests/test_wiraya.py",
       why="a long Retry-After blocks a pass for up to an hour"),
    _f("bulk-item-retry", "connector/bulk.py",
       "            elif isinstance(failure, dict) and failure.get(\"retry\") is True:",
       "            elif False:", "tests/test_wiraya.py",
       why="a bulk item Wiraya asked to retry becomes a dead letter"),
    _f("bulk-halving", "connector/bulk.py",
       "        if reply.status == 413 or (reply.status == 400 and "
       "data.get(\"bulkItemLimitExceeded\")):",
       "        if False:", "tests/test_wiraya.py",
       why="a bulk over Wiraya's item limit is never made smaller"),
    _f("token-refresh", "connector/wiraya.py",
       "            if token is not None and reply.status == 401 and not reply.foreign:",
       "            if False:", "tests/test_wiraya.py",
       why="an expired token fails every call"),
    # -- secrets and the customer's database
    _f("secret-filter", "connector/logs.py",
       "        if secret in text:", "        if False:",
       "tests/test_logs.py", "tests/test_hostile.py::test_no_failure_shows_a_secret",
       why="the API key or the database password appears in output"),
    _f("read-only-session", "connector/source.py",
       "-c default_transaction_read_only=on -c statement_timeout",
       "-c statement_timeout",
       f"{C}::test_reads_run_in_read_only_transactions",
       why="the connector's sessions may write to the customer's database"),
    # -- the daemon
    _f("deploy-cancels-page", "connector/daemon.py",
       "        while pending and not self.hurry.is_set() and loop.time() < deadline:",
       "        while False:",
       "tests/test_daemon.py::"
       "test_a_deploy_finishes_the_page_in_flight_and_sends_no_event_twice",
       why="a deploy (SIGTERM) cancels the page in flight and its events are resent"),
    _f("readiness", "connector/health.py",
       "        if failures >= self.unready_after:", "        if False:",
       "tests/test_health.py::"
       "test_a_database_outage_makes_the_daemon_unready_and_recovery_ready_again",
       why="readiness says ready while every pass fails"),
    _f("state-file-put-back", "connector/statefile.py",
       "        if now == self.identity:", "        if True:",
       "tests/test_statefile.py::"
       "test_a_state_file_deleted_under_the_daemon_is_put_back_and_nothing_is_resent",
       why="a state file deleted under the daemon is not noticed: a restart resends all"),
    _f("two-passes-at-once", "connector/daemon.py",
       "        if self.stop.is_set() or key in self.running:",
       "        if self.stop.is_set():",
       "tests/test_fresh.py::test_a_stream_never_runs_two_passes_at_once",
       why="a stream runs a second pass while its first still sends"),
    _f("whole-second-schedule", "connector/daemon.py",
       "seconds=streams[name].every.total_seconds(),",
       "seconds=max(1.0, streams[name].every.total_seconds()),",
       "tests/test_fresh.py::test_every_250ms_polls_four_times_a_second",
       why="every: 250ms polls once a second"),
    # -- a contact written whole as its reply came (deliver.py, page.py)
    _f("recorded-not-released", "connector/page.py",
       "[item.key for item in commit.contacts] + commit.recorded",
       "[item.key for item in commit.contacts]",
       f"{E}::test_an_event_waits_for_its_contact",
       why="an event waiting for a contact that was written as its reply came never goes"),
    _f("recorded-without-input", "connector/deliver.py",
       "Delivered(key, whole.get(key), digests[key])",
       "Delivered(key, None, digests[key])",
       f"{C}::test_a_first_sync_reads_whole_pages_and_keeps_the_servers_digests",
       why="a contact written as its reply came is never on record with its input digest: "
           "every later read maps it again"),
    _f("flag-state-recorded-early", "connector/deliver.py",
       "flagged = {flag.contact_id for flag in plan.record}", "flagged: set[str] = set()",
       "tests/test_deliver.py::test_an_upsert_is_recorded_whole_only_when_it_is_the_contacts_"
       "last_step",
       why="a contact is on record whole before its flag state is written: a crash between "
           "the two loses the flag, and a later opt-out with it"),
    # -- a first sync reads whole pages (sync.py, source.py)
    _f("first-sync-narrow", "connector/sync.py",
       "whole = pages.contacts is not None and not ctx.state.holds_contacts(pages.name)",
       "whole = False",
       f"{C}::test_a_first_sync_reads_whole_pages_and_keeps_the_servers_digests",
       why="a first sync reads each page twice (narrow, then every row by id)"),
    _f("whole-page-own-digests", "connector/source.py",
       "full = self._rows(bound, self._all(bound, query.limit(limit)))",
       "full = (Rows([row[:-1] for row in self._all(bound, query.limit(limit))]) "
       "if bound.digest_salt is not None else self._rows(bound, self._all(bound, "
       "query.limit(limit))))",
       f"{C}::test_a_first_sync_reads_whole_pages_and_keeps_the_servers_digests",
       "tests/test_mariadb.py::test_unchanged_pages_are_read_narrow_with_the_servers_digest",
       why="a first sync keeps digests the server never gives: the next pass re-reads "
           "every row"),
    # -- the probe that lets an idle pass read nothing (probe.py)
    _f("probe-no-sum", "connector/source.py", "sa.func.sum(number)", "sa.func.sum(0)",
       "tests/test_fresh.py::test_an_idle_pass_reads_nothing_and_every_change_still_arrives",
       "tests/test_fresh.py::test_the_probe_on_mariadb",
       "tests/test_fresh.py::test_the_probe_on_sqlite_text_times",
       why="a late commit that moves a row inside the window is hidden from the probe"),
    _f("probe-blind", "connector/probe.py", " and seen.look == look", "",
       "tests/test_fresh.py::test_an_idle_pass_reads_nothing_and_every_change_still_arrives",
       why="an idle pass skips its read whatever changed"),
    _f("probe-no-reread", "connector/probe.py", "now - seen.read_at < reread", "True",
       "tests/test_fresh.py::test_the_blind_spot_is_read_within_reread",
       why="a change the probe cannot see is never read (no full read every `reread`)"),
    _f("probe-kept-after-read", "connector/sync.py",
       "    probe.remember(ctx, pages, seen, started)",
       "    probe.remember(ctx, pages, await probe.look(ctx, pages, high, window.floor, "
       "lookback), started)",
       "tests/test_fresh.py::test_a_change_committed_while_a_pass_reads_is_read_by_the_next",
       why="the probe is taken after the read: a change committed meanwhile is never read"),
    _f("one-shot-probes", "connector/commands/sync.py",
       "stop=session.stop_on_signals(), one_shot=True) as ctx:",
       "stop=session.stop_on_signals(), one_shot=False) as ctx:",
       "tests/test_fresh.py::test_a_one_shot_sync_reads_its_window_and_takes_no_probe",
       why="a one-shot `connector sync` pays for a probe whose figures die with it"),
    _f("eager-http-client", "connector/wiraya.py", "    return OnFirstUse(lanes)",
       "    return lanes()",
       "tests/test_cli_commands.py::test_a_sync_with_nothing_to_send_imports_no_http_client_"
       "and_no_phone_library",
       why="a pass with nothing to send pays for importing httpcore"),
    _f("eager-phone-library", "connector/mapping.py",
       "from connector.phone import canonical_digits, library_version",
       "import phonenumbers  # noqa: F401\n"
       "from connector.phone import canonical_digits, library_version",
       "tests/test_cli_commands.py::test_a_sync_with_nothing_to_send_imports_no_http_client_"
       "and_no_phone_library",
       why="a pass that maps no row pays for importing phonenumbers"),
    _f("gc-held", "connector/session.py", "                heap.release()", "",
       "tests/test_cli_commands.py::test_the_console_script_collects_garbage_again_once_a_"
       "pass_begins",
       why="the console script never collects garbage again: a long sync keeps every cycle"),
    _f("gc-held-sandbox", "connector/commands/misc.py", "    heap.release()  # a server",
       "    # heap.release()  # a server",
       "tests/test_cli_commands.py::test_the_sandbox_command_collects_garbage_while_it_serves",
       why="the sandbox, a server that runs until stopped, never collects garbage"),
    _f("view-as-table", "connector/source.py", "        return bound.table.name in views",
       "        return False",
       "tests/test_check.py::test_a_stream_over_a_view_is_checked_as_one_and_synced",
       why="`check` calls a view a table and does not warn about its index"),
    _f("probe-date-blind", "connector/source.py",
       "        number = cursor - sa.literal(low, cursor.type)  # days",
       "        number = sa.literal(0)  # days",
       "tests/test_fresh.py::test_the_probe_on_a_postgresql_date_cursor",
       why="on a date cursor, a row moved to another day inside the window is never read"),
    _f("reread-not-cut", "connector/probe.py", "for window in (stream.lookback, lookback):",
       "for window in (stream.lookback,):",
       "tests/test_fresh.py::test_a_reread_is_cut_to_the_lookback_the_pass_uses_when_none_is_"
       "written",
       why="with the lookback left at its default, a change only a full read sees can leave "
           "the window before the next full read"),
    # -- the state file
    _f("migration-race", "connector/state.py",
       "                if self.schema_version >= number:\n                    continue",
       "                if False:\n                    continue",
       "tests/test_state.py::test_two_processes_opening_a_new_state_file_at_once_both_get_it",
       why="a backfill started beside the daemon on a new state file fails: table exists"),
    # -- check
    _f("standby-check", "connector/checks.py",
       "    if facts is None or not facts.standby:", "    if True:",
       "tests/test_check.py",
       why="check says the guard is active on a standby"),
    _f("time-zone-check", "connector/checks.py",
       "    if same_zone(server, ours):", "    if True:", "tests/test_check.py",
       why="check misses a database whose sessions write in another zone"),
    # -- whole-table comparisons: cursor: none, reconcile, deleted rows (compare.py)
    _f("delete-after-stop", "connector/compare.py",
       "    if ctx.stop.is_set():\n        pages.log.info", "    if False:\n        pages.log.info",
       "tests/test_compare.py::test_a_stopped_pass_counts_no_delete",
       why="a pass stopped midway counts the rows it did not reach as deleted"),
    _f("delete-empty-read", "connector/compare.py", "        if read == 0:", "        if False:",
       "tests/test_compare.py::test_an_emptied_table_counts_no_delete",
       why="an emptied table (a reload, a lost grant) sends an opt-out for every contact"),
    _f("seen-marks", "connector/state.py",
       "UPDATE contacts SET seen = ?3 WHERE stream",
       "UPDATE contacts SET seen = ?3 WHERE 0 AND stream",
       "tests/test_compare.py::test_no_change_column_sends_all_then_nothing_then_the_edit",
       why="a complete read does not mark what it saw: every contact counted deleted"),
    _f("seen-marks-rows", "connector/state.py",
       "db.execute(\"UPDATE contacts SET seen = ? WHERE stream = ? AND contact_id IN \"",
       "db.execute(\"UPDATE contacts SET seen = ? WHERE 0 AND stream = ? AND contact_id IN \"",
       "tests/test_mariadb.py::test_killed_at_any_moment_nothing_is_lost",
       why="a whole-table read of full rows (MariaDB, SQLite) counts every contact deleted"),
    _f("born-seen", "connector/state.py",
       "\"delivered_at, seen) VALUES (?, ?, ?, ?, ?, (SELECT compare_pass FROM \"\n"
       "                    \"streams WHERE name = ?))",
       "\"delivered_at, seen) VALUES (?, ?, ?, ?, ?, NULLIF(?, ?))",
       "tests/test_compare.py::test_no_change_column_sends_all_then_nothing_then_the_edit",
       why="a contact first delivered during a comparison counts as deleted by it"),
    _f("forget-deleted", "connector/state.py", "for table in (\"contacts\", \"flags\")",
       "for table in (\"flags\",)",
       "tests/test_compare.py::test_a_deleted_row_gives_one_event_and_comes_back_as_an_upsert",
       why="a deleted row's digest is kept: its event repeats, a re-inserted id is not sent"),
    _f("reconcile-is-live", "connector/sync.py", "isinstance(how, Reconcile) or (", "(",
       "tests/test_compare.py::test_reconcile_finds_what_the_cursor_missed",
       why="a reconcile pass is a live pass: edits without a cursor move, deletes missed"),
    _f("sqlite-text-times", "connector/source.py",
       "text_time = self.dialect == \"sqlite\" and _text_time_type(cursor.type)",
       "text_time = False", "tests/test_text_times.py",
       why="ISO text with Z on SQLite: every pass fails comparing naive and aware times"),
]


def _copy(target: Path) -> None:
    for name in ("connector", "tests", "pyproject.toml", "README.md", "config"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name,
                            ignore=shutil.ignore_patterns("__pycache__", ".mypy_cache"))
        elif source.exists():
            shutil.copy2(source, target / name)


def _apply(copy: Path, item: Fault) -> str | None:
    path = copy / item.path
    if not path.exists():
        return f"{item.path} does not exist"
    text = path.read_text()
    found = text.count(item.old)
    if found != 1:
        return f"the code to break occurs {found} times in {item.path} (expected once)"
    path.write_text(text.replace(item.old, item.new))
    return None


def run(item: Fault) -> tuple[str, float, str]:
    """Apply one fault to a fresh copy and run its tests: ('caught'|'MISSED'|'STALE', s, text)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="connector-fault-") as folder:
        copy = Path(folder)
        _copy(copy)
        problem = _apply(copy, item)
        if problem:
            return "STALE", time.monotonic() - started, problem
        env = {**os.environ, "PYTHONPATH": str(copy), "CONNECTOR_FAULT": item.name}
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                   "-o", "addopts=", *item.tests]
        result = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True,
                                timeout=900, check=False)
        tail = (result.stdout.strip().splitlines() or [""])[-1]
        if result.returncode == 1:
            return "caught", time.monotonic() - started, tail
        if result.returncode == 0:
            return "MISSED", time.monotonic() - started, tail
        return "ERROR", time.monotonic() - started, (result.stdout + result.stderr)[-600:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("words", nargs="*", help="only faults whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    parser.add_argument("--check", action="store_true",
                        help="only check that each fault still applies to the code")
    args = parser.parse_args(argv)
    chosen = [f for f in FAULTS if not args.words or any(w in f.name for w in args.words)]
    if args.list:
        for item in chosen:
            print(f"{item.name:28} {item.path:24} {item.why}")
        return 0
    if args.check:
        stale = 0
        for item in chosen:
            text = (ROOT / item.path).read_text() if (ROOT / item.path).exists() else ""
            if text.count(item.old) != 1:
                stale += 1
                print(f"STALE   {item.name:28} {item.path}: found {text.count(item.old)} times")
        print(f"{len(chosen) - stale} of {len(chosen)} faults apply")
        return 1 if stale else 0
    bad = 0
    for item in chosen:
        outcome, seconds, detail = run(item)
        bad += outcome != "caught"
        print(f"{outcome:7} {item.name:28} {seconds:6.1f}s  {detail}", flush=True)
    print(f"{len(chosen) - bad} of {len(chosen)} faults caught; {bad} not caught")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
