"""Read-and-diff speed and memory: a backfill whose rows Wiraya already has.

What it measures: `connector backfill customers --restart` run as a child process (the
command users run) over a PostgreSQL table of 100,000 and of 1,000,000 rows whose digests
the state file already holds: a first backfill delivered every row to the sandbox (own
process), so the measured backfill reads, digests and compares every row and sends
nothing. Printed per size (median of the repeats): rows/second over the pass itself (the
time in the command's own report line) and over the whole command (interpreter start,
config, the row count for the progress bar), and the child's peak RSS (from wait4's
rusage of that child alone).

Baselines, measured in the same run on the same table, each in a child process of its own:
- "bare read": psycopg alone, the same keyset pages (same columns, same page size), no
  diff: the floor set by PostgreSQL and the driver;
- "connector read": the connector's own `Source.page` loop (SQLAlchemy) without mapping,
  diffing or state, to tell reading cost from diffing cost.

Targets: >= 100,000 rows/s; peak RSS < 200 MB and not growing from the small to the large
table (design: "memory is bounded by the page size, never by the table").

With `--profile`, one more no-send backfill of the largest size runs under pyinstrument
(main thread, sampled) and the top functions are printed; the session is saved in
bench/results/.

Run from the repo root:

    python bench/read_diff.py                                  # 100k and 1M rows, 3 repeats
    python bench/read_diff.py --profile                        # the same, plus the profile
    python bench/read_diff.py --sizes 20000 200000 --repeats 2 # a quicker look

The default is the full size; the first (delivering) backfill of 1M rows takes a few
minutes on 2 cores and is not part of the figures.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

# The delivering backfill sends as fast as the sandbox takes it; the measured one sends nothing.
WIRAYA = {"rate_limit": "none", "concurrency": 8, "bulk_size": 100}
LINE = re.compile(r"customers: (\d+) read, (\d+) sent, (\d+) skipped.* in ([\d.]+)s")


def backfill(path: Path, restart: bool = True, profile: Path | None = None) -> dict[str, Any]:
    """The backfill command in a child; its report line parsed, with wall time and peak RSS."""
    argv = [sys.executable]
    if profile is not None:
        argv += ["-m", "pyinstrument", "-r", "pyisession", "-o", str(profile)]
    argv += ["-m", "connector", "--config", str(path), "backfill", "customers"]
    if restart:
        argv.append("--restart")
    run = common.run_child(argv)
    match = LINE.search(run.stderr + run.stdout)
    if run.returncode != 0 or match is None:
        raise RuntimeError(f"backfill failed ({run.returncode}): {run.stderr[-2000:]}")
    read, sent, skipped, seconds = match.groups()
    return {"read": int(read), "sent": int(sent), "skipped": int(skipped),
            "pass": float(seconds), "wall": run.seconds, "rss": run.peak_rss_mb}


def baseline(path: Path, how: str) -> dict[str, Any]:
    """A read-only loop in a child process (see `child_read`)."""
    run = common.run_child([sys.executable, __file__, "--child", how, "--config", str(path)])
    if run.returncode != 0:
        raise RuntimeError(f"{how} failed: {run.stderr[-2000:]}")
    rows, seconds = run.stdout.split()
    return {"read": int(rows), "pass": float(seconds), "wall": run.seconds, "rss": run.peak_rss_mb}


def child_read(how: str, path: Path) -> None:
    """Keyset pages over the stream's table, nothing else; prints `rows seconds`."""
    from connector import config
    from connector.source import Source
    from connector.values import Position

    settings = config.load(path)
    stream = settings.contacts["customers"]
    size = settings.page_size(stream)
    source = Source(settings.source)
    bound = source.bind("customers", stream, "contacts")
    rows = 0
    started = time.monotonic()
    if how == "source":
        after = None
        while True:
            page = source.page(bound, size, after=after)
            rows += len(page)
            if len(page) < size:
                break
            after = Position(page[-1][bound.names.index(stream.cursor)],
                             page[-1][bound.names.index(stream.id)])
    else:
        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(settings.source.url.get_secret_value())
        columns = ", ".join(f'"{name}"' for name in bound.names)
        cur_i, id_i = bound.names.index(stream.cursor), bound.names.index(stream.id)
        first = (f'SELECT {columns} FROM customers ORDER BY "{stream.cursor}", "{stream.id}" '
                 "LIMIT %s")
        later = (f'SELECT {columns} FROM customers WHERE ("{stream.cursor}", "{stream.id}") > '
                 f'(%s, %s) ORDER BY "{stream.cursor}", "{stream.id}" LIMIT %s')
        with psycopg.connect(host=url.host, port=url.port, dbname=url.database,
                             user=url.username, password=url.password) as conn:
            page = conn.execute(first, (size,)).fetchall()
            while True:
                rows += len(page)
                if len(page) < size:
                    break
                page = conn.execute(later, (page[-1][cur_i], page[-1][id_i], size)).fetchall()
    seconds = time.monotonic() - started
    source.close()
    print(rows, f"{seconds:.4f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="table sizes (rows); the first is the baseline for memory growth")
    parser.add_argument("--repeats", type=int, default=3, help="measured backfills per size")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one no-send backfill of the largest size")
    parser.add_argument("--keep", metavar="DIR", help="keep configs and state files here")
    parser.add_argument("--child", choices=["psycopg", "source"], help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_read(args.child, args.config)
        return 0
    started = common.header(
        "read_diff: no-send backfill (read + digest + compare), rows/s and memory", args)

    results: dict[int, dict[str, list[dict[str, Any]]]] = {}
    profile_path: Path | None = None
    with common.temp_folder("bench-readdiff-", args.keep) as folder, \
            common.Postgres() as pg, common.SandboxProcess() as api:
        print(f"postgresql {pg.version}; sandbox in its own process at {api.url}")
        print("config: the tests' customers stream, page_size 5000 (default); measured: "
              "`python -m connector --config X backfill customers --restart`")
        for rows in args.sizes:
            db = pg.database(f"readdiff_{rows}")
            built = common.build_customers(db, rows)
            path = common.write_config(folder / f"rows_{rows}", db_url=db.url, api_url=api.url,
                                       wiraya=WIRAYA)
            first = backfill(path, restart=False)
            if first["sent"] != rows:
                raise RuntimeError(f"the delivering backfill sent {first['sent']} of {rows}")
            common.log(f"{rows:,} rows built in {built:.1f} s; delivering backfill: "
                       f"{first['pass']:.1f} s, peak RSS {first['rss']:.0f} MB")
            api.reset()
            runs: dict[str, list[dict[str, Any]]] = {"backfill": [], "psycopg": [], "source": []}
            for repeat in range(args.repeats):
                measured = backfill(path)
                if measured["sent"] or measured["skipped"] != rows:
                    raise RuntimeError(f"expected {rows} skipped, nothing sent: {measured}")
                runs["backfill"].append(measured)
                runs["psycopg"].append(baseline(path, "psycopg"))
                runs["source"].append(baseline(path, "source"))
                common.log(f"{rows:,} rows, repeat {repeat + 1}: backfill {measured['pass']:.2f} s"
                           f" (wall {measured['wall']:.2f} s, {measured['rss']:.0f} MB); bare read "
                           f"{runs['psycopg'][-1]['pass']:.2f} s; connector read "
                           f"{runs['source'][-1]['pass']:.2f} s")
            results[rows] = {**runs, "first": [first]}
            if args.profile and rows == max(args.sizes):
                common.RESULTS.mkdir(parents=True, exist_ok=True)
                profile_path = common.RESULTS / f"read_diff_{rows}.pyisession"
                profiled = backfill(path, profile=profile_path)
                common.log(f"profiled backfill: {profiled['pass']:.2f} s under pyinstrument")
            if api.summary()["requests"]:
                raise RuntimeError("a no-send backfill made API requests")

    print()
    print(f"{'rows':>10}  {'what':<32} {'rows/s (pass)':>14} {'rows/s (wall)':>14} "
          f"{'pass s':>8} {'peak RSS':>9}")
    for rows, runs in results.items():
        for key, label in (("backfill", "backfill, nothing to send"),
                           ("source", "baseline: connector read only"),
                           ("psycopg", "baseline: bare psycopg read"),
                           ("first", "(setup) delivering backfill")):
            items = runs[key]
            seconds = common.median([r["pass"] for r in items])
            wall = common.median([r["wall"] for r in items])
            rss = common.median([r["rss"] for r in items])
            print(f"{rows:>10,}  {label:<32} {rows / seconds:>14,.0f} {rows / wall:>14,.0f} "
                  f"{seconds:>8.2f} {rss:>6.0f} MB")
    print()
    smallest, largest = min(results), max(results)
    for rows, runs in results.items():
        rate = rows / common.median([r["pass"] for r in runs["backfill"]])
        bare = rows / common.median([r["pass"] for r in runs["psycopg"]])
        source = rows / common.median([r["pass"] for r in runs["source"]])
        rss = common.median([r["rss"] for r in runs["backfill"]])
        print(f"{rows:,} rows: {rate:,.0f} rows/s = {rate / bare:.2f}x the bare read, "
              f"{rate / source:.2f}x the connector's read alone; target >= 100,000 rows/s: "
              f"{common.verdict(rate >= 100_000)}; peak RSS {rss:.0f} MB, target < 200 MB: "
              f"{common.verdict(rss < 200)}")
    if largest != smallest:
        small_rss = common.median([r["rss"] for r in results[smallest]["backfill"]])
        large_rss = common.median([r["rss"] for r in results[largest]["backfill"]])
        growth = large_rss / small_rss
        print(f"peak RSS {largest:,} / {smallest:,} rows = {growth:.2f}x "
              f"({large_rss - small_rss:+.0f} MB); target: not growing (<= 1.10x): "
              f"{common.verdict(growth <= 1.10)}")
    if profile_path is not None:
        from pyinstrument.session import Session

        print()
        print(f"profile of one no-send backfill of {largest:,} rows (pyinstrument, main thread; "
              f"the page reads run in a worker thread and show here as the wait for them); "
              f"saved: {profile_path.relative_to(common.ROOT)}")
        for line in common.flat_profile(Session.load(str(profile_path)), top=20):
            print(line)
    common.footer(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
