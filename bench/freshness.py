"""Freshness of the daemon: how long after a commit a change reaches Wiraya, and what an
idle daemon costs.

What it measures: the real daemon (`connector run`, a process of its own) against a
PostgreSQL server and the sandbox API (its own process), with a contacts stream (the tests'
`customers`, `--customers` rows synced once before anything is measured) and an event stream
(`orders` -> `Conversion` events, as in the README's example config), both at `every: 1s`,
then both at `every: 250ms` (`--intervals`). Wiraya settings are the defaults (rate limit
50/s, bulk calls of 100).

A writer commits, every 0.1-0.5 s (uniformly random, `--seed`), one transaction that
updates one customer (its city and `updated_at = now()`) and inserts one order for that
customer, for `--seconds` (default 60). Each commit updates a customer not touched before,
so that its contact's arrival is its own. The commit time is `time.time()` right after
the commit returns; the arrival time is when the sandbox applied the contact or the event
(wall clock, `/_sandbox/arrivals`). Printed per interval: commit-to-arrival p50, p99 and
max for contacts and for events, and whether every change arrived exactly once (each
contact with the city written, one contact write per commit, one event per order).

Then, once everything arrived and after 2 s of settling, an idle period (`--idle`, 20 s)
with no writes: the CPU time (user + system, from /proc/PID/stat) of the daemon process
and of every PostgreSQL process (postmaster and its children), as % of one core, and the
passes the daemon ran in that period (its metrics endpoint). Then the baseline, in the same
run: the same idle daemon with the probe off (`reread: 0s`, every pass reads its window;
`--no-baseline` skips it). Before anything starts, `--backlog` customers (default 1,000)
were changed in the last 5 minutes, so that each pass's window holds rows, as on a table
written all day. The same PostgreSQL figure is measured once with no daemon running, as the
server's own floor.

Targets (issue 14): at `every: 1s` p99 <= 1.2 s for contacts and events; at `every: 250ms`
p99 <= 0.5 s and the daemon's idle CPU under 5% of one core.

Run from the repo root (the machine is shared: nice it):

    nice python bench/freshness.py                      # 60 s of writes per interval
    nice python bench/freshness.py --seconds 15 --idle 10   # a quick look
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from connector import config

ORDERS = """
CREATE TABLE orders (
    order_id    bigint PRIMARY KEY,
    customer_id bigint NOT NULL,
    amount      numeric(10, 2),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_created_at ON orders (created_at);
"""

TARGETS = {"1s": 1.2, "250ms": 0.5}  # p99 seconds, contacts and events
IDLE_CPU_TARGET = {"250ms": 5.0}  # % of one core, the daemon


@dataclass
class Commit:
    customer: int
    city: str
    at: float  # time.time() right after the commit returned


@dataclass
class Result:
    interval: str
    commits: list[Commit]
    base: int  # contact writes the sandbox had before the first commit (the first sync)
    contacts: list[float] = field(default_factory=list)  # seconds, commit -> arrival
    events: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    busy_cpu: dict[str, float] = field(default_factory=dict)  # % of one core while writing
    idle_cpu: dict[str, float] = field(default_factory=dict)  # % of one core, idle
    idle_passes: float = 0.0  # passes per stream per second while idle
    idle_rows_read: float = 0.0  # rows read per idle pass
    baseline: Idle | None = None  # the same idle daemon with the probe off (`reread: 0s`)


@dataclass
class Idle:
    cpu: dict[str, float]  # % of one core: connector, postgresql
    passes: float  # per stream per second
    rows_read: float  # per pass


# ---------------------------------------------------------------------------
# CPU time from /proc


def postgres_pids(server: Any) -> list[int]:
    """The postmaster (first line of postmaster.pid) and its children."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
            pids.append(int(entry.name))
    return pids


def postgres_cpu(server: Any) -> dict[int, float]:
    times = {}
    for pid in postgres_pids(server):
        try:
            times[pid] = common.cpu_seconds(pid)
        except OSError:  # exited meanwhile
            continue
    return times


class CpuMeter:
    """CPU used by the daemon and by PostgreSQL between `start` and `stop`, % of one core.
    A PostgreSQL process that exits meanwhile is not counted (autovacuum workers)."""

    def __init__(self, server: Any, daemon_pid: int | None) -> None:
        self.server, self.daemon_pid = server, daemon_pid

    def start(self) -> None:
        self.at = time.monotonic()
        self.pg = postgres_cpu(self.server)
        self.daemon = common.cpu_seconds(self.daemon_pid) if self.daemon_pid else 0.0

    def stop(self) -> dict[str, float]:
        seconds = time.monotonic() - self.at
        pg = postgres_cpu(self.server)
        used = sum(now - self.pg.get(pid, 0.0) for pid, now in pg.items())
        out = {"postgresql": 100 * used / seconds}
        if self.daemon_pid:
            out["connector"] = 100 * (common.cpu_seconds(self.daemon_pid) - self.daemon) / seconds
        return out


# ---------------------------------------------------------------------------
# The set-up


def write_config(folder: Path, db: common.Database, api: common.SandboxProcess, every: str,
                 metrics_port: int, reread: str = "1m") -> Path:
    """The tests' customers stream and an orders event stream, both at `every`."""
    folder.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "source": {"url": db.url, "timezone": "UTC"},
        "wiraya": {"base_url": api.url, "api_key": common.API_KEY},
        "state": "state/connector.db",
        "contacts": {"customers": common.customers_stream(every=every, reread=reread)},
        "events": {"conversions": {
            "table": "public.orders", "id": "order_id", "contact": "customer_id",
            "cursor": "created_at", "at": "created_at", "name": "Conversion",
            "every": every, "reread": reread}},
        "logging": {"level": "warning"},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
    }
    path = folder / f"connector-reread-{reread}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    config.load(path)  # refuse a bad config here, with the connector's own message
    return path


class Daemon:
    """`python -m connector run` in a child process."""

    def __init__(self, path: Path, metrics_port: int) -> None:
        self.port = metrics_port
        self.out_path = path.with_suffix(".out")
        self._out = open(self.out_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "connector", "--config", str(path), "run"],
            cwd=common.ROOT, stdout=self._out, stderr=subprocess.STDOUT)

    def metrics(self) -> dict[str, float]:
        """`name{labels}` -> value, from its /metrics."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def passes(self, stream: str) -> float:
        return self.metrics().get(
            f'connector_passes_total{{outcome="ok",stream="{stream}"}}', 0.0)

    def rows_read(self, stream: str) -> float:
        return self.metrics().get(
            f'connector_rows_total{{outcome="read",stream="{stream}"}}', 0.0)

    def stop(self) -> int:
        code = common.stop_child(self.proc, 30)
        self._out.close()
        return code

    def tail(self) -> str:
        return self.out_path.read_text(errors="replace")[-2000:]


def wait_until(check: Any, timeout: float, what: str, daemon: Daemon) -> None:
    deadline = time.monotonic() + timeout
    while not _holds(check):
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"the daemon exited while waiting for {what}: {daemon.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}; the "
                               f"daemon's output ends: {daemon.tail()}")
        time.sleep(0.1)


def _holds(check: Any) -> bool:
    try:
        return bool(check())
    except OSError:  # the daemon's metrics endpoint is not listening yet
        return False


# ---------------------------------------------------------------------------
# The writer and the arrivals


def write(db: common.Database, customers: int, seconds: float, seed: int) -> list[Commit]:
    """One customer update and one order per transaction, every 0.1-0.5 s."""
    rng = random.Random(seed)
    order = rng.sample(range(1, customers + 1), customers)  # each customer once
    commits: list[Commit] = []
    with psycopg.connect(db.dsn) as conn:
        end = time.monotonic() + seconds
        while time.monotonic() < end and len(commits) < customers:
            time.sleep(rng.uniform(0.1, 0.5))
            customer = order[len(commits)]
            city = f"fresh-{seed}-{len(commits)}"
            conn.execute("UPDATE customers SET city = %s, updated_at = now() "
                         "WHERE customer_id = %s", (city, customer))
            conn.execute("INSERT INTO orders (order_id, customer_id, amount) "
                         "VALUES (%s, %s, %s)", (len(commits) + 1, customer,
                                                 rng.randint(100, 99_999) / 100))
            conn.commit()
            commits.append(Commit(customer, city, time.time()))
    return commits


def arrived(api: common.SandboxProcess, commits: list[Commit], base: int) -> bool:
    summary = api.summary()
    return bool(summary["contact_writes"] - base >= len(commits)
                and summary["events"] >= len(commits))


def collect(api: common.SandboxProcess, result: Result) -> None:
    """Commit-to-arrival of each change, and every change there exactly once."""
    contacts = api.admin("GET", "contacts")
    events = api.admin("GET", "events")
    times = api.admin("GET", "arrivals")
    summary = api.summary()
    commits = result.commits
    writes = summary["contact_writes"] - result.base
    if writes != len(commits):
        result.problems.append(f"{writes} contact writes for {len(commits)} commits")
    event_at: dict[str, list[float]] = {}
    for item, at in zip(events, times["events"], strict=True):
        event_at.setdefault(item["contactId"], []).append(at)
    for commit in commits:
        key = str(commit.customer)
        contact = contacts.get(key)
        if contact is None or contact["general"].get("city") != commit.city:
            result.problems.append(f"customer {key}: the contact has not the city committed")
        else:
            result.contacts.append(times["contacts"][key] - commit.at)
        got = event_at.get(key, [])
        if len(got) != 1:
            result.problems.append(f"customer {key}: {len(got)} events for one order")
        else:
            result.events.append(got[0] - commit.at)
    if len(events) != len(commits):
        result.problems.append(f"{len(events)} events for {len(commits)} orders")


# ---------------------------------------------------------------------------
# One interval


def measure(pg: common.Postgres, api: common.SandboxProcess, interval: str, args: Any,
            folder: Path) -> Result:
    db = pg.database(f"fresh_{interval}")
    common.build_customers(db, args.customers)
    if args.backlog:  # rows changed in the last 5 minutes: inside every pass's window
        db.execute("UPDATE customers SET updated_at = now() - interval '300 seconds' * "
                   "customer_id / %s WHERE customer_id <= %s", (args.backlog, args.backlog))
    db.execute(ORDERS)
    port = common.free_port()
    path = write_config(folder / interval, db, api, interval, port)
    api.reset()
    result = Result(interval, [], 0)
    daemon = Daemon(path, port)
    try:
        wait_until(lambda: api.summary()["contacts"] == args.customers, 300,
                   f"the first sync of {args.customers} customers", daemon)
        common.log(f"every {interval}: first sync done; {args.seconds:g} s of writes")
        time.sleep(2)
        # No reset here: the sandbox refuses an event whose contact it does not have.
        result.base = base = api.summary()["contact_writes"]
        meter = CpuMeter(pg.server, daemon.proc.pid)
        meter.start()
        result.commits = commits = write(db, args.customers, args.seconds, args.seed)
        result.busy_cpu = meter.stop()
        wait_until(lambda: arrived(api, commits, base), 60, "every change to arrive", daemon)
        time.sleep(2)  # the passes that saw the last change finish
        collect(api, result)
        common.log(f"every {interval}: {len(commits)} commits arrived; idle {args.idle:g} s")
        idle = measure_idle(pg, api, daemon, args.idle, result)
        result.idle_cpu, result.idle_passes, result.idle_rows_read = \
            idle.cpu, idle.passes, idle.rows_read
    finally:
        stopped(daemon, result)
    if args.baseline:
        common.log(f"every {interval}: the same idle daemon with the probe off (reread: 0s)")
        daemon = Daemon(write_config(folder / interval, db, api, interval, port, "0s"), port)
        try:
            wait_until(lambda: daemon.passes("conversions") >= 2, 60, "its first passes",
                       daemon)
            result.baseline = measure_idle(pg, api, daemon, args.idle, result)
        finally:
            stopped(daemon, result)
    return result


def measure_idle(pg: common.Postgres, api: common.SandboxProcess, daemon: Daemon,
                 seconds: float, result: Result) -> Idle:
    """The daemon's and PostgreSQL's CPU while nothing changes, and the passes it ran."""
    names = ("customers", "conversions")
    passes = {name: daemon.passes(name) for name in names}
    read = {name: daemon.rows_read(name) for name in names}
    requests = api.summary()["requests"]
    meter = CpuMeter(pg.server, daemon.proc.pid)
    meter.start()
    time.sleep(seconds)
    cpu = meter.stop()
    done = sum(daemon.passes(name) - passes[name] for name in names)
    rows = sum(daemon.rows_read(name) - read[name] for name in names)
    if api.summary()["requests"] != requests:
        result.problems.append("the daemon called the API while nothing changed")
    return Idle(cpu, done / len(names) / seconds, rows / done if done else 0.0)


def stopped(daemon: Daemon, result: Result) -> None:
    code = daemon.stop()
    if code != 0:
        result.problems.append(f"the daemon exited with {code}: {daemon.tail()}")


def quantile(values: list[float], q: float) -> float:
    """The q-quantile, nearest rank (p99 of 200 values is the 198th)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.5) - 1))]


def report(results: list[Result], pg_floor: float, idle: float) -> None:
    print()
    print(f"{'every':>6}  {'stream':<9} {'changes':>7}  {'p50':>7}  {'p99':>7}  {'max':>7}  "
          f"{'p99 target':>10}  all arrived once")
    for res in results:
        for stream, values in (("contacts", res.contacts), ("events", res.events)):
            target = TARGETS.get(res.interval)
            p99 = quantile(values, 0.99) if values else float("nan")
            mark = f"<= {target:.1f} s" if target else ""
            if target:
                mark += " ok" if p99 <= target else " MISS"
            print(f"{res.interval:>6}  {stream:<9} {len(values):>7}  "
                  f"{quantile(values, 0.5) if values else float('nan'):>6.3f}s  "
                  f"{p99:>6.3f}s  {max(values, default=float('nan')):>6.3f}s  {mark:>10}  "
                  f"{'yes' if not res.problems else 'NO'}")
    print()
    print(f"CPU, % of one core (idle: {idle:g} s with no writes, after every change arrived;"
          " busy: while the writer ran)")
    print(f"{'every':>6}  {'probe':<24}  {'connector idle':>14}  {'postgresql idle':>15}  "
          f"{'idle passes/s':>13}  {'rows read/idle pass':>19}  {'connector busy':>14}  "
          f"{'postgresql busy':>15}")
    for res in results:
        rows = [("on (reread: 1m)", Idle(res.idle_cpu, res.idle_passes, res.idle_rows_read),
                 res.busy_cpu)]
        if res.baseline is not None:
            rows.append(("off (reread: 0s)", res.baseline, {}))
        for probe, idle_row, busy in rows:
            target = IDLE_CPU_TARGET.get(res.interval) if busy else None
            mark = ("  ok" if idle_row.cpu["connector"] < target else "  MISS") if target \
                else ""
            busy_text = (f"{busy['connector']:>13.1f}%  {busy['postgresql']:>14.1f}%"
                         if busy else "")
            print(f"{res.interval:>6}  {probe:<24}  {idle_row.cpu['connector']:>8.1f}%{mark:<6}"
                  f"{idle_row.cpu['postgresql']:>14.1f}%  {idle_row.passes:>13.2f}  "
                  f"{idle_row.rows_read:>19.1f}  {busy_text}")
    print(f"PostgreSQL alone, no daemon running: {pg_floor:.1f}% of one core "
          f"(its background processes)")
    print("probe off: the baseline, the same idle daemon reading its windows every pass")
    print("idle passes/s: passes per stream per second while idle (each stream's `every`); "
          "rows read/idle pass: rows each idle pass read from the database")
    for res in results:
        for problem in res.problems[:10]:
            print(f"PROBLEM at every {res.interval}: {problem}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="seconds of writes per interval")
    parser.add_argument("--idle", type=float, default=20.0,
                        help="seconds of the idle period measured per interval")
    parser.add_argument("--intervals", nargs="+", default=["1s", "250ms"],
                        help="the streams' `every`")
    parser.add_argument("--customers", type=int, default=10_000,
                        help="rows of the customers table (each commit updates another one)")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--backlog", type=int, default=1000,
                        help="customers changed in the 5 minutes before the start (rows "
                             "inside the lookback window of every pass)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the idle daemon with the probe off (reread: 0s)")
    parser.add_argument("--keep", metavar="DIR", help="keep configs, state files and logs here")
    args = parser.parse_args()
    started = common.header("freshness: commit-to-arrival through the daemon, and its idle "
                            "CPU", args)

    with common.temp_folder("bench-fresh-", args.keep) as folder, \
            common.Postgres() as pg, common.SandboxProcess() as api:
        print(f"postgresql {pg.version}; sandbox in its own process at {api.url}; "
              f"os nice {os.nice(0)}")
        print(f"config: the tests' customers stream ({args.customers:,} rows, lookback 10m) "
              "and an orders event stream, wiraya defaults (50/s, bulk 100)")
        floor = CpuMeter(pg.server, None)
        floor.start()
        time.sleep(min(args.idle, 10.0))
        pg_floor = floor.stop()["postgresql"]
        results = [measure(pg, api, interval, args, folder) for interval in args.intervals]

    report(results, pg_floor, args.idle)
    common.footer(started)
    return 1 if any(res.problems for res in results) else 0


if __name__ == "__main__":
    sys.exit(main())
