"""The daemon's watch over its state file: deleted, replaced, full or not writable.

A daemon holds its state file open for days. If the file is deleted (or another file is moved
to its path) the open connection goes on writing to a file nobody can see, and the next start
would find no state and send every event again. So before each pass the daemon compares the
path's device and inode with the file it opened; when they differ it copies the state it still
holds (SQLite's backup API reads the open, deleted file) back to the path, says so loudly, and
goes on. A file that replaced it is kept beside it as `<name>.replaced-<time>`. Only when the
state cannot be put back does the daemon stop, with one line saying why.

A probe write before each pass turns a full disk or a read-only file into one clear line and
a skipped pass, before anything is sent that could not be recorded.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from connector.errors import StateError
from connector.state import State

log = logging.getLogger("connector.daemon")


class StateFolderError(StateError):
    """The state file's folder cannot be used (read-only, missing rights): fix the setup."""

    exit_code = 2


def folder_error(path: Path, exc: OSError) -> StateFolderError:
    folder = path.parent
    return StateFolderError(
        f"cannot use the state file {path}: {exc.strerror or exc} ({folder} must be writable "
        "by this user: the state file, its -wal journal and a lock folder live there); "
        "fix its owner or mode, or set state: to a writable path")


def identity(path: Path) -> tuple[int, int] | None:
    """`(device, inode)` of the file at `path`, or None when there is none."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


class StateWatch:
    """Checks, before each pass, that the state file on disk is the one the daemon writes."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.identity = identity(state.path)

    def check(self) -> str | None:
        """Put the state back if its file was deleted or replaced. Returns None when the state
        is in place, else a one-line problem: the state could not be put back."""
        path = self.state.path
        now = identity(path)
        if now == self.identity:
            return None
        what = "deleted" if now is None else "replaced by another file"
        try:
            kept = self._put_back(replaced=now is not None)
        except (OSError, sqlite3.Error, StateError) as exc:
            problem = (f"the state file {path} was {what} while the daemon ran, and the state "
                       f"cannot be put back ({getattr(exc, 'strerror', None) or exc}); stopping "
                       "so that a restart does not resend what was sent")
            log.error(problem)
            return problem
        log.error("THE STATE FILE %s WAS %s while the daemon ran: the daemon put its state "
                  "back from the file it held open%s; stop the daemon before moving or "
                  "restoring the state file", path, what.upper(),
                  f" (the file that replaced it is kept as {kept})" if kept else "")
        return None

    def _put_back(self, replaced: bool) -> Path | None:
        path = self.state.path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fresh = path.with_name(f".{path.name}.restoring")
        for leftover in (fresh, Path(f"{fresh}-wal"), Path(f"{fresh}-shm")):
            leftover.unlink(missing_ok=True)
        self.state.backup_to(fresh)
        os.chmod(fresh, 0o600)
        kept = None
        if replaced:
            kept = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(path, kept)
        # The old connection's -wal and -shm sit beside the path, named after it: they must
        # be gone before the copy takes the name, or SQLite would pair them with the copy.
        for journal in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            journal.unlink(missing_ok=True)
        os.replace(fresh, path)
        _sync_folder(path.parent)
        self.state.reopen()
        self.identity = identity(path)
        return kept

    def probe(self) -> str | None:
        """None when the state file takes a write now, else why not (one line)."""
        try:
            self.state.probe_write()
        except StateError as exc:
            return str(exc)
        except sqlite3.Error as exc:
            return f"cannot write state file {self.state.path}: {exc}"
        return None


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
