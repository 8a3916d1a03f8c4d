"""The daemon's state file under trouble: deleted, replaced, a full disk, a read-only folder."""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.sandbox import Sandbox
from tests.conftest import Database, cli
from tests.daemons import Daemon, daemons_fixture, wait_for  # noqa: F401 - a fixture
from tests.test_events import CONVERSIONS, ORDERS, add_orders

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def tmpfs(where: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A small file system of its own (root only), to fill up or to mount read-only."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0700" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'}); "
                    "this test needs root or CAP_SYS_ADMIN")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def events_config(write_config, db: Database, api: Sandbox, state: Path | None = None,
                  orders: int = 300) -> Path:
    db.execute(ORDERS)
    add_orders(db, 1, orders, customers=100,
               at="'2026-01-01'::timestamptz + i * interval '1 second'")
    api.faults.strict_order = False  # no contact stream: the contacts live elsewhere
    extra = {"state": str(state)} if state else {}
    # debug: a pass that found nothing to do is logged at debug, and these tests count passes.
    return write_config(events={"conversions": dict(CONVERSIONS, every="1s", page_size=100)},
                        logging={"level": "debug"}, **extra)


def per_order(api: Sandbox) -> Counter[str]:
    return Counter(body["at"] for _cid, body in api.events)


def passes_logged(daemon: Daemon) -> int:
    return daemon.log().count("live pass ok")


@pytest.mark.slow
def test_a_state_file_deleted_under_the_daemon_is_put_back_and_nothing_is_resent(
        db: Database, api: Sandbox, write_config, daemons: list[Daemon]) -> None:
    """Before the fix the daemon wrote on into the deleted file and the restart resent every
    event (300 of 300 here; 206 in the issue's trial)."""
    path = events_config(write_config, db, api)
    state = path.parent / "state" / "connector.db"
    daemon = Daemon(path)
    daemons.append(daemon)
    wait_for(lambda: len(per_order(api)) == 300, 60, "every event")

    shutil.rmtree(state.parent)  # the file, its -wal, its -shm and the lock folder
    add_orders(db, 301, 20, customers=100,
               at="'2026-01-02'::timestamptz + i * interval '1 second'")
    wait_for(lambda: len(per_order(api)) == 320, 30, "the orders added after the deletion")
    wait_for(lambda: "THE STATE FILE" in daemon.log(), 10, "the loud line")
    second = cli("--config", str(path), "run", timeout=30)
    assert second.returncode == 1
    assert "another connector daemon (pid" in second.stderr
    assert daemon.stop() == 0
    assert f"THE STATE FILE {state} WAS DELETED while the daemon ran: the daemon put its " \
           "state back from the file it held open" in daemon.log()
    assert state.exists()

    again = Daemon(path)
    daemons.append(again)
    wait_for(lambda: passes_logged(again) >= 2, 30, "two passes after the restart")
    assert again.stop() == 0
    assert len(per_order(api)) == 320
    assert max(per_order(api).values()) == 1  # nothing resent
    status = json.loads(cli("--config", str(path), "status", "--json").stdout)
    assert status[0]["last_run"]["outcome"] == "ok"


def test_a_state_file_replaced_under_the_daemon_is_put_back_and_the_other_kept(
        db: Database, api: Sandbox, write_config, daemons: list[Daemon]) -> None:
    path = events_config(write_config, db, api, orders=50)
    state = path.parent / "state" / "connector.db"
    old = path.parent / "old-backup.db"
    daemon = Daemon(path)
    daemons.append(daemon)
    wait_for(lambda: passes_logged(daemon) >= 1, 30, "a first pass")
    # A copy taken now (before the events are on record) is moved over the live file later.
    shutil.copy(state, old)
    wait_for(lambda: len(per_order(api)) == 50, 60, "every event")
    wait_for(lambda: passes_logged(daemon) >= 3, 30, "passes after the events")
    old.replace(state)
    wait_for(lambda: "THE STATE FILE" in daemon.log(), 10, "the loud line")
    assert daemon.stop() == 0
    kept = list(state.parent.glob("connector.db.replaced-*"))
    assert len(kept) == 1
    assert f"WAS REPLACED BY ANOTHER FILE while the daemon ran: the daemon put its state back " \
           f"from the file it held open (the file that replaced it is kept as {kept[0]})" \
           in daemon.log()

    again = Daemon(path)
    daemons.append(again)
    wait_for(lambda: passes_logged(again) >= 2, 30, "two passes after the restart")
    assert again.stop() == 0
    assert len(per_order(api)) == 50
    assert max(per_order(api).values()) == 1


def test_a_full_disk_skips_passes_with_one_line_each_and_loses_nothing(
        db: Database, api: Sandbox, write_config, daemons: list[Daemon], tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "2m") as small:
        path = events_config(write_config, db, api, state=small / "connector.db", orders=200)
        daemon = Daemon(path)
        daemons.append(daemon)
        wait_for(lambda: len(per_order(api)) == 200, 60, "every event")
        wait_for(lambda: passes_logged(daemon) >= 2, 30, "a quiet pass")

        filler = small / "filler"
        with filler.open("wb", buffering=0) as out:  # unbuffered: close has nothing to write
            try:
                while True:
                    out.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        add_orders(db, 201, 200, customers=100,
                   at="'2026-01-02'::timestamptz + i * interval '1 second'")
        wait_for(lambda: daemon.log().count("pass skipped: ") >= 3, 30, "skipped passes")
        filler.unlink()
        wait_for(lambda: len(per_order(api)) == 400, 60, "the events once space returned")
        wait_for(lambda: passes_logged(daemon) >= 4, 30, "more passes")
        assert daemon.stop() == 0

    log = daemon.log()
    skipped = [line for line in log.splitlines() if "pass skipped: " in line]
    assert skipped[0].endswith(f"[conversions] pass skipped: cannot write state file "
                               f"{small / 'connector.db'}: database or disk is full")
    assert "Traceback" not in log and "Job " not in log
    assert max(per_order(api).values()) == 1  # nothing sent twice


@pytest.mark.slow
def test_a_read_only_state_folder_is_one_line_naming_the_file(
        db: Database, api: Sandbox, write_config, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "readonly", "1m", read_only=True) as folder:
        path = events_config(write_config, db, api, state=folder / "connector.db", orders=1)
        result = cli("--config", str(path), "run", timeout=30)
    assert result.returncode == 2
    assert result.stderr == (
        f"error: cannot use the state file {folder / 'connector.db'}: Read-only file system "
        f"({folder} must be writable by this user: the state file, its -wal journal and a "
        "lock folder live there); fix its owner or mode, or set state: to a writable path\n")
