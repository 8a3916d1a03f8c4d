"""How big the state file grows: bytes per contact, per campaign link and per event.

What it measures: a state file filled through the connector's own write path
(`State.commit`, one transaction per page of 5,000, as passes write it) with N contacts of
one contact stream, N campaign links (one campaign with an iteration) and N events of one
event stream. Ids are the integers 1..N as text (what a `bigint` id becomes); digests are
what a pass on PostgreSQL stores: a 64-bit input digest computed by the server and a 16-byte
payload digest. After each part the file is checkpointed and measured; SQLite's `dbstat`
table gives the bytes of each table and index. Printed: bytes per item (file growth / N) and
per table, then the same after VACUUM (a file that has only grown is close to that already).

Run from the repo root:

    python bench/state_size.py                 # 100,000 and 1,000,000
    python bench/state_size.py --sizes 100000  # a quicker look
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from connector.state import Commit, State  # noqa: E402

PAGE = 5000
CONTACT_STREAM = "customers"
EVENT_STREAM = "conversions"
CAMPAIGN = ("welcome-flow", "2026-11")


def file_bytes(state: State) -> int:
    state._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return os.path.getsize(state.path)


def table_bytes(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    return {name: int(size) for name, size in rows}


def fill(state: State, count: int, part: str, rng: random.Random, shuffled: bool) -> None:
    ids = [str(i) for i in range(1, count + 1)]
    if shuffled:
        rng.shuffle(ids)
    for start in range(0, count, PAGE):
        keys = ids[start:start + PAGE]
        if part == "contacts":
            page = Commit(contacts=[(key, rng.getrandbits(63), rng.randbytes(16))
                                    for key in keys])
            state.commit(CONTACT_STREAM, page)
        elif part == "links":
            state.commit(CONTACT_STREAM, Commit(links=[(key, *CAMPAIGN) for key in keys]))
        else:
            state.commit(EVENT_STREAM, Commit(ledger=keys))


def measure(count: int, folder: Path, shuffled: bool) -> None:
    path = folder / f"state-{count}-{shuffled}.db"
    rng = random.Random(count)
    state = State.open(path)
    before = file_bytes(state)
    order = "in random id order" if shuffled else "in id order"
    print(f"\n{count:,} of each, written {order}; empty state file {before:,} bytes")
    for part in ("contacts", "links", "events"):
        started = time.monotonic()
        fill(state, count, part, rng, shuffled)
        after = file_bytes(state)
        print(f"  {part:9} {(after - before) / count:6.1f} bytes each "
              f"({after - before:,} bytes, written in {time.monotonic() - started:.1f} s)")
        before = after
    state.close()
    total = os.path.getsize(path)
    tables = table_bytes(path)
    print(f"  file: {total:,} bytes; by table and index:")
    for name, size in sorted(tables.items(), key=lambda item: -item[1]):
        if size > 8192:
            print(f"    {name:28} {size / count:6.1f} bytes per row ({size:,})")
    with sqlite3.connect(path) as conn:
        conn.execute("VACUUM")
    print(f"  after VACUUM: {os.path.getsize(path):,} bytes "
          f"({os.path.getsize(path) / count:.1f} per contact + link + event)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--order", choices=["id", "random", "both"], default="both",
                        help="ids written in order (a first sync of a table read by id) or "
                             "shuffled (rows changing in any order later); default both")
    args = parser.parse_args()
    print(f"SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="state-size-") as folder:
        for count in args.sizes:
            for shuffled in {"id": [False], "random": [True], "both": [False, True]}[args.order]:
                measure(count, Path(folder), shuffled)


if __name__ == "__main__":
    main()
