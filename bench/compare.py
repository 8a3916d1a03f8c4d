"""`cursor: none`: a full comparison of an UNCHANGED table, and the cost of a reconcile pass.

What it measures: one `connector sync` (a child process, as a user runs it) of a contact
stream with `cursor: none` over a table that has not changed since the last pass, at two
sizes (default 100,000 and 1,000,000 rows): its wall time, the pass's own time (as the
command prints it) and the child's peak RSS. On PostgreSQL the pass reads narrow pages
(id, `hashtextextended` digest) and compares them inside the state file; on SQLite it reads
full rows and digests them in Python. Target (issue 12): 1,000,000 unchanged rows compared
in <= 10 s on PostgreSQL, memory bounded by the page size (the peak RSS does not grow with
the table).

Then the cost of reconcile: the same PostgreSQL table synced by a cursor stream
(`cursor: updated_at`, `reconcile: 1h`, same state file): a live pass (an index lookup)
beside `connector sync --reconcile` (the full comparison).

Every row is synced once before anything is measured (a first pass to the sandbox, not
measured; at 1,000,000 rows this takes minutes on 2 cores). MariaDB (a throwaway server from
tests/mariadbserver.py, the tests' MariaDB table, a `mysql://` URL with a read-only user) is
measured for `cursor: none` like PostgreSQL: narrow pages of (id, MD5-based digest).

Run from the repo root (niced: the machine is shared):

    nice python bench/compare.py                         # 100k and 1M rows
    nice python bench/compare.py --sizes 20000 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from tests import mariadb_fixtures
from tests.mariadbserver import MariaDbServer

PRIME_WIRAYA = {"rate_limit": "none", "concurrency": 8, "bulk_size": 500}


def none_stream(**extra: Any) -> dict[str, Any]:
    stream = common.customers_stream(cursor="none", **extra)
    del stream["lookback"]
    return stream


def sync(path: Path, *extra: str) -> tuple[float, float, float, str]:
    """`connector sync` in a child: wall s, the pass's own s (as printed), peak RSS MB, line."""
    run = common.run_child([sys.executable, "-m", "connector", "--config", str(path), "sync",
                            *extra])
    if run.returncode != 0:
        raise RuntimeError(f"sync failed ({run.returncode}): {run.stdout} {run.stderr}")
    line = run.stdout.strip().splitlines()[-1]
    own = re.search(r" in ([0-9.]+)s", line)
    return run.seconds, float(own.group(1)) if own else float("nan"), run.peak_rss_mb, line


def prime(path: Path, rows: int, label: str) -> None:
    (first,), phases = common.run_passes(path)
    if first.report.counts["sent"] != rows:
        raise RuntimeError(f"the first pass should send {rows} rows: {first.report.line()}")
    common.log(f"{label}: first sync of {rows:,} rows in {phases['total']:.1f} s (not measured)")


def unchanged(path: Path, rows: int, repeats: int, label: str, *extra: str
              ) -> dict[str, float]:
    walls, owns, rss = [], [], []
    for run in range(repeats):
        wall, own, peak, line = sync(path, *extra)
        if f"{rows} read" not in line or " 0 sent" not in line:
            raise RuntimeError(f"{label}: an unchanged table should read {rows} rows and send "
                               f"none: {line}")
        walls.append(wall)
        owns.append(own)
        rss.append(peak)
        common.log(f"{label} {rows:,} rows, repeat {run + 1}: {line} (child {wall:.2f} s, "
                   f"peak RSS {peak:.0f} MB)")
    return {"wall": common.median(walls), "pass": common.median(owns), "rss": max(rss)}


def postgres(pg: common.Postgres, api: common.SandboxProcess, rows: int, repeats: int,
             folder: Path) -> dict[str, dict[str, float]]:
    db = pg.database(f"compare_{rows}")
    built = common.build_customers(db, rows)
    common.log(f"postgresql: {rows:,} rows built in {built:.1f} s")
    settings: dict[str, Any] = {"db_url": db.url, "api_url": api.url}
    prime(common.write_config(folder, **settings, wiraya=PRIME_WIRAYA, stream=none_stream(),
                              name="prime.yaml"), rows, "postgresql")
    api.reset()
    figures = {"cursor: none": unchanged(
        common.write_config(folder, **settings, stream=none_stream()), rows, repeats,
        "postgresql cursor: none")}
    cursor = common.write_config(folder, **settings, name="cursor.yaml",
                                 stream=common.customers_stream(reconcile="1h"))
    figures["live (cursor)"] = _live(cursor, repeats)
    figures["reconcile"] = unchanged(cursor, rows, repeats, "postgresql reconcile",
                                     "--reconcile")
    if api.summary()["requests"]:
        raise RuntimeError("passes over an unchanged table made API requests")
    return figures


def _live(path: Path, repeats: int) -> dict[str, float]:
    """Live passes of the cursor stream, once its watermark is set (the first pass, which
    reads the whole table to set it, is not measured)."""
    sync(path)
    runs = [sync(path) for _ in range(repeats)]
    return {"wall": common.median([r[0] for r in runs]),
            "pass": common.median([r[1] for r in runs]), "rss": max(r[2] for r in runs)}


def sqlite(api: common.SandboxProcess, rows: int, repeats: int, folder: Path
           ) -> dict[str, float]:
    folder.mkdir(parents=True, exist_ok=True)
    database = folder / "app.db"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE customers (customer_id integer PRIMARY KEY, first_name "
                     "text, last_name text, mobile text, city text)")
        conn.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?)",
                         ((i, f"Given{i}", f"Family{i}", f"+4670{1000000 + i:07d}",
                           f"City{i % 50}") for i in range(1, rows + 1)))
    settings: dict[str, Any] = {"db_url": f"sqlite:///{database}", "api_url": api.url}
    stream = none_stream(table="customers")
    prime(common.write_config(folder, **settings, wiraya=PRIME_WIRAYA, stream=stream,
                              name="prime.yaml"), rows, "sqlite")
    api.reset()
    return unchanged(common.write_config(folder, **settings, stream=stream), rows,
                     repeats, "sqlite cursor: none")


def start_mariadb() -> MariaDbServer:
    """A throwaway MariaDB server with the connector's user (reads, sees open transactions)."""
    server = MariaDbServer().start()
    with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE USER '{common.DB_USER}'@'127.0.0.1' IDENTIFIED BY "
                    f"'{common.DB_PASSWORD}'")
        cur.execute(f"GRANT PROCESS ON *.* TO '{common.DB_USER}'@'127.0.0.1'")
    return server


def mariadb(server: MariaDbServer, api: common.SandboxProcess, rows: int, repeats: int,
            folder: Path) -> dict[str, float]:
    name = server.create_database(f"compare_{rows}")
    with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
        cur.execute(f"GRANT SELECT ON `{name}`.* TO '{common.DB_USER}'@'127.0.0.1'")
    db = mariadb_fixtures.MariaDatabase(server, name)
    db.execute(mariadb_fixtures.CUSTOMERS)
    mariadb_fixtures.add_customers(db, 1, rows)
    db.execute("ANALYZE TABLE customers")
    settings: dict[str, Any] = {"db_url": db.url, "api_url": api.url}
    stream = none_stream(table="customers")
    prime(common.write_config(folder, **settings, wiraya=PRIME_WIRAYA, stream=stream,
                              name="prime.yaml"), rows, "mariadb")
    api.reset()
    return unchanged(common.write_config(folder, **settings, stream=stream), rows,
                     repeats, "mariadb cursor: none")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3, help="passes measured per case")
    parser.add_argument("--no-sqlite", action="store_true", help="no SQLite figures")
    parser.add_argument("--no-mariadb", action="store_true", help="no MariaDB figures")
    parser.add_argument("--no-postgresql", action="store_true",
                        help="no PostgreSQL figures (its server still serves nothing else)")
    parser.add_argument("--keep", metavar="DIR", help="keep configs and state files here")
    args = parser.parse_args()
    started = common.header("compare: cursor: none over an unchanged table; reconcile", args)
    table: list[tuple[str, int, dict[str, float]]] = []
    with common.temp_folder("bench-compare-", args.keep) as folder, \
            common.Postgres() as pg, common.SandboxProcess() as api, \
            contextlib.ExitStack() as servers:
        maria = None
        if not args.no_mariadb:
            maria = start_mariadb()
            servers.callback(maria.cleanup)
        print(f"postgresql {pg.version}; sqlite {sqlite3.sqlite_version}; mariadb "
              f"{maria.version() if maria else '(not measured)'}; sandbox at {api.url}")
        print("config: the tests' customers stream, page_size 5000, wiraya defaults")
        for rows in args.sizes:
            cases = {} if args.no_postgresql else postgres(pg, api, rows, args.repeats,
                                                           folder / f"pg_{rows}")
            for case, fig in cases.items():
                table.append((f"postgresql {case}", rows, fig))
            if not args.no_sqlite:
                table.append(("sqlite cursor: none", rows,
                              sqlite(api, rows, args.repeats, folder / f"sqlite_{rows}")))
            if maria is not None:
                table.append(("mariadb cursor: none", rows,
                              mariadb(maria, api, rows, args.repeats,
                                      folder / f"mariadb_{rows}")))
    print()
    print(f"{'case':<28} {'rows':>10}  {'pass (median)':>13}  {'sync (median)':>13}  "
          f"{'peak RSS':>9}")
    for case, rows, fig in table:
        print(f"{case:<28} {rows:>10,}  {fig['pass']:>11.2f} s  {fig['wall']:>11.2f} s  "
              f"{fig['rss']:>6.0f} MB")
    print("pass: the pass's own time as `connector sync` prints it; sync: the whole command "
          "(interpreter start, imports, config, connections); peak RSS: the child's")
    largest = max(args.sizes)
    for case, rows, fig in table:
        if case == "postgresql cursor: none" and rows == largest == 1_000_000:
            print(f"target: 1,000,000 unchanged rows compared in <= 10 s on PostgreSQL: "
                  f"{fig['pass']:.2f} s ({common.verdict(fig['pass'] <= 10.0)})")
    common.footer(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
