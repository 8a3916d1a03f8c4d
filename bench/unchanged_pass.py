"""A live pass over an UNCHANGED contacts table: does its cost follow change, not size?

What it measures: the wall time of one live pass (`connector.sync.run_pass`, in this
process, as `connector sync` and the daemon run it) of the `customers` stream over a
PostgreSQL table that has not changed since the last pass, at two sizes (default 10,000 and
1,000,000 rows). The table has an index on the cursor column (`updated_at`); every row was
updated more than a day ago and the cursor values are `--spacing` seconds apart (default
60 s), so a pass that starts at `watermark - lookback` (10 minutes) finds only the ~11 newest
rows in its window, at both sizes: the rows are older than the lookback window. Every row
was synced once (a first live pass delivered all of them to the sandbox) before anything
is measured.
The sandbox runs in its own process (`python -m connector sandbox`).

Each repeat opens a session (database, state file, client) and runs two passes in it:
"cold" is the first pass of a session (what `connector sync` pays: it includes reflecting
the table), "warm" the second (what the daemon pays on each later poll). Printed: the median
of each over the repeats, and the ratio large/small. Target (design: "a pass over an
unchanged table costs an index lookup, whatever the table's size"): the large pass costs no
more than 2x the small one.

Run from the repo root:

    python bench/unchanged_pass.py                      # 10k vs 1M rows, 15 repeats
    python bench/unchanged_pass.py --large 200000 --repeats 3   # a quicker look

The full-size run is the default (building 1M rows takes ~10 s; the one-time sync of
1M rows that precedes the measurement takes a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

# One-time sync before measuring: sent as fast as the sandbox takes it (not measured).
PRIME_WIRAYA = {"rate_limit": "none", "concurrency": 8, "bulk_size": 500}


def measure(pg: common.Postgres, api: common.SandboxProcess, rows: int, repeats: int,
            folder: Path, spacing: float) -> dict[str, list[float]]:
    db = pg.database(f"unchanged_{rows}")
    built = common.build_customers(db, rows, spacing)
    common.log(f"{rows:,} rows built in {built:.1f} s")
    prime = common.write_config(folder, db_url=db.url, api_url=api.url, wiraya=PRIME_WIRAYA,
                                name="prime.yaml")
    path = common.write_config(folder, db_url=db.url, api_url=api.url)  # defaults otherwise
    (first,), phases = common.run_passes(prime)
    wall = phases["total"]
    if first.report.counts["sent"] != rows:
        raise RuntimeError(f"the first pass should send {rows} rows: {first.report.line()}")
    common.log(f"first sync of {rows:,} rows: {first.report.line()} ({wall:.1f} s with setup)")
    api.reset()

    figures: dict[str, list[float]] = {"cold": [], "warm": [], "session": [], "open": [],
                                       "close": [], "read": []}
    for run in range(repeats):
        timed, phases = common.run_passes(path, count=2)
        for t in timed:
            if t.report.counts["sent"]:
                raise RuntimeError(f"an unchanged table sent rows: {t.report.line()}")
        figures["cold"].append(timed[0].seconds)
        figures["warm"].append(timed[1].seconds)
        figures["session"].append(phases["total"])
        figures["open"].append(phases["open"])
        figures["close"].append(phases["close"])
        figures["read"].append(timed[1].report.counts["read"])
        common.log(f"{rows:,} rows, repeat {run + 1}: cold {timed[0].seconds * 1000:.1f} ms "
                   f"({timed[0].report.counts['read']} read), warm "
                   f"{timed[1].seconds * 1000:.1f} ms ({timed[1].report.counts['read']} read)")
    if api.summary()["requests"]:
        raise RuntimeError("passes over an unchanged table made API requests")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=10_000, help="rows of the small table")
    parser.add_argument("--large", type=int, default=1_000_000, help="rows of the large table")
    parser.add_argument("--repeats", type=int, default=15,
                        help="sessions per size (2 passes each)")
    parser.add_argument("--spacing", type=float, default=60.0,
                        help="seconds between consecutive cursor values")
    parser.add_argument("--keep", metavar="DIR", help="keep configs and state files here")
    args = parser.parse_args()
    started = common.header("unchanged_pass: live pass over an unchanged table, small vs large",
                            args)

    with common.temp_folder("bench-unchanged-", args.keep) as folder, \
            common.Postgres() as pg, common.SandboxProcess() as api:
        print(f"postgresql {pg.version}; sandbox in its own process at {api.url}")
        print("config: the tests' customers stream (lookback 10m, page_size 5000, "
              "index on updated_at), wiraya defaults")
        results = {rows: measure(pg, api, rows, args.repeats, folder / f"rows_{rows}",
                                 args.spacing)
                   for rows in (args.small, args.large)}

    small, large = results[args.small], results[args.large]
    print()
    print(f"{'rows':>10}  {'cold pass (median)':>20}  {'warm pass (median)':>20}  "
          f"{'session (median)':>17}  {'open':>8}  {'close':>8}  {'rows read/pass':>14}")
    for rows, fig in results.items():
        print(f"{rows:>10,}  {common.median(fig['cold']) * 1000:>17.1f} ms  "
              f"{common.median(fig['warm']) * 1000:>17.1f} ms  "
              f"{common.median(fig['session']) * 1000:>14.1f} ms  "
              f"{common.median(fig['open']) * 1000:>5.1f} ms  "
              f"{common.median(fig['close']) * 1000:>5.1f} ms  "
              f"{common.median(fig['read']):>14.0f}")
    print()
    for what in ("cold", "warm", "session", "open"):
        ratio = common.median(large[what]) / common.median(small[what])
        print(f"ratio {what:<8} {args.large:,} / {args.small:,} rows = {ratio:5.2f}x   "
              f"(target <= 2x: {common.verdict(ratio <= 2.0)})")
    print("cold: first pass of a session (as `connector sync` runs it; includes reflecting the "
          "table); warm: the next pass in the same session (as the daemon's next poll); session: "
          "loading the config, opening, 2 passes, closing; open: loading the config and opening "
          "the database pool, the state file and the client")
    common.footer(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
