"""The garbage collector of a `connector` process: held off while the process starts.

Starting a pass imports SQLAlchemy, pydantic and psycopg: a few hundred thousand objects
that live as long as the process. The collector walks them again at each of its older-
generation collections while they are made (40-60 ms of a short `connector sync`, about a
tenth of it), and once more when the interpreter exits. So the console script holds the
collector off (`hold`) until the first pass context is open (`release`); then what exists
is frozen (never walked again) and collection resumes for what the passes make. Objects
made at start-up are freed by their reference counts as ever; only cycles among them wait.

`release` is called where a pass context opens (`session.opened`: sync, run, backfill,
the demo) and where a command serves until stopped (the sandbox). A short command that
calls neither (status, check, init) runs to its end without collections.

Only the console script holds: a process that imports the connector as a library (the
tests) keeps its collector as it was, and `release` does nothing there.
"""

from __future__ import annotations

import gc

_held = False


def hold() -> None:
    global _held
    if gc.isenabled():
        gc.disable()
        _held = True


def release() -> None:
    global _held
    if _held:
        gc.freeze()
        gc.enable()
        _held = False


def before_exit() -> None:
    """The interpreter's last act is a full collection over every object left (about
    0.1 s once SQLAlchemy and pydantic are loaded); frozen objects are left out of it.
    Nothing is lost: whatever a command opened it has closed, and streams still flush."""
    gc.freeze()
