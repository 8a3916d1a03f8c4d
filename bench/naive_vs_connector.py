"""The naive cron script vs the connector, on a large table where 1% changed.

What it measures, on a PostgreSQL table of 1,000,000 customers (the tests' table, cursor
index on `updated_at`) of which 1% (10,000 rows: every 100th id) changed since the last pass:

- the connector: one live pass (`connector.sync.run_pass` in this process, as
  `connector sync` runs it, with the config's defaults: rate_limit 50/s, concurrency 8,
  bulk_size 100), which reads from its watermark and sends only the changed rows. The
  table was synced once before (not measured). Each repeat changes a fresh 1% (the city,
  and the cursor moved to now), so a later repeat also re-reads the previous repeat's rows
  inside the 10-minute lookback (they are skipped, not sent: counts are printed).
- the naive way (the baseline): read every row each pass (psycopg, a server-side cursor,
  building each contact's body) and send one sequential request per row (a plain
  `httpx.Client` PUT /api/Contact/{id} loop with a Bearer token). The full read is timed
  over the whole table; the sending is timed on a sample (default 20,000 rows) and
  extrapolated linearly to every row, since 1,000,000 sequential requests take long. The
  output says so.

The sandbox runs in its own process (`python -m connector sandbox`), 0 ms latency, no
limit. Printed: the median time of each way, and the ratio naive / connector (target >=
50x).

Run from the repo root:

    python bench/naive_vs_connector.py                        # 1M rows, 1% changed, 3 repeats
    python bench/naive_vs_connector.py --rows 200000 --repeats 2   # a quicker look

The default is the full size; the one-time first sync of 1M rows that precedes the
measurement takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

PRIME_WIRAYA = {"rate_limit": "none", "concurrency": 8, "bulk_size": 500}


def naive_body(row: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
    customer_id, first, last, mobile, city = row
    return str(customer_id), {"schema": 1,
                              "personal": {"phoneNumber": mobile.lstrip("+"),
                                           "givenName": first, "surName": last},
                              "general": {"city": city}}


QUERY = "SELECT customer_id, first_name, last_name, mobile, city FROM customers"


def naive_read(db: common.Database) -> tuple[int, float]:
    """Read every row and build its body, as the naive script does each pass."""
    started = time.monotonic()
    rows = 0
    with psycopg.connect(db.dsn) as conn, conn.cursor(name="everything") as cur:
        cur.itersize = 5000
        cur.execute(QUERY)
        for row in cur:
            naive_body(row)
            rows += 1
    return rows, time.monotonic() - started


def naive_send(db: common.Database, url: str, sample: int) -> float:
    """One sequential PUT per row for `sample` rows; returns the seconds it took."""
    with psycopg.connect(db.dsn) as conn:
        rows = conn.execute(QUERY + " ORDER BY customer_id LIMIT %s", (sample,)).fetchall()
    bodies = [naive_body(row) for row in rows]
    with httpx.Client(base_url=url, timeout=30) as client:
        token = client.post("/auth/token/apikey", json={"key": common.API_KEY}).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        started = time.monotonic()
        for customer_id, body in bodies:
            client.put(f"/api/Contact/{customer_id}", json=body,
                       headers=headers).raise_for_status()
        return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the table")
    parser.add_argument("--every", type=int, default=100,
                        help="change every N-th row per repeat (100 = 1%%)")
    parser.add_argument("--sample", type=int, default=20_000,
                        help="rows the naive loop really sends (then extrapolated)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", metavar="DIR", help="keep configs and state files here")
    args = parser.parse_args()
    started = common.header(
        "naive_vs_connector: read everything + one request per row, vs a live pass", args)

    connector: list[float] = []
    sessions: list[float] = []
    counts: list[str] = []
    reads: list[float] = []
    sends: list[float] = []
    with common.temp_folder("bench-naive-", args.keep) as folder, common.Postgres() as pg, \
            common.SandboxProcess() as api:
        print(f"postgresql {pg.version}; sandbox in its own process at {api.url}")
        db = pg.database("naive")
        built = common.build_customers(db, args.rows)
        prime = common.write_config(folder, db_url=db.url, api_url=api.url, wiraya=PRIME_WIRAYA,
                                    name="prime.yaml")
        path = common.write_config(folder, db_url=db.url, api_url=api.url)  # wiraya defaults
        (first,), phases = common.run_passes(prime)
        wall = phases["total"]
        common.log(f"{args.rows:,} rows built in {built:.1f} s; first sync "
                   f"{first.report.line()} ({wall:.1f} s)")
        api.reset()
        changed = 0
        for repeat in range(args.repeats):
            changed = common.change_customers(db, args.every, repeat % args.every,
                                              f"Moved{repeat}")
            (timed,), phases = common.run_passes(path)
            if timed.report.counts["sent"] != changed:
                raise RuntimeError(f"expected {changed} sent: {timed.report.line()}")
            connector.append(timed.seconds)
            sessions.append(phases["total"])
            counts.append(timed.report.line())
            api.reset()
            rows, read_seconds = naive_read(db)
            reads.append(read_seconds)
            sends.append(naive_send(db, api.url, args.sample))
            api.reset()
            common.log(f"repeat {repeat + 1}: connector {timed.report.line()}; naive read "
                       f"{rows:,} rows in {read_seconds:.1f} s, {args.sample:,} sequential PUTs "
                       f"in {sends[-1]:.1f} s")

    read = common.median(reads)
    per_request = common.median(sends) / args.sample
    naive = read + per_request * args.rows
    ours = common.median(connector)
    print()
    print(f"table: {args.rows:,} rows; changed before each pass: {changed:,} "
          f"({changed / args.rows:.1%}); medians of {args.repeats}")
    print("connector passes: " + " | ".join(counts))
    print()
    print(f"naive way, per pass:  {naive:10.1f} s  = read all {args.rows:,} rows {read:.1f} s "
          f"(measured) + {args.rows:,} sequential PUTs x {per_request * 1000:.3f} ms "
          f"(measured on {args.sample:,} rows, {1 / per_request:,.0f}/s, EXTRAPOLATED linearly)")
    print(f"connector live pass:  {ours:10.2f} s  (range {min(connector):.2f}.."
          f"{max(connector):.2f}; with opening the session, as `connector sync`: "
          f"{common.median(sessions):.2f} s)")
    ratio = naive / ours
    print(f"ratio naive / connector = {ratio:,.0f}x (target >= 50x: {common.verdict(ratio >= 50)})")
    only_sends = per_request * changed
    calls = -(-changed // 100)
    print(f"(for scale: the naive loop sending only the {changed:,} changed rows would take "
          f"{only_sends:.1f} s, had it a way to find them; the connector's default rate limit, "
          f"50/s with a burst of 8, alone spreads its {calls} bulk calls over "
          f">= {max(0, calls - 8) / 50:.1f} s)")
    common.footer(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
