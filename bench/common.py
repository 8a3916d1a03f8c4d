"""Shared helpers for the benchmark scripts: the machine, PostgreSQL, the sandbox, configs.

Nothing here measures anything by itself; each script in `bench/` does one measurement and
uses these pieces to set it up the way a user would (a YAML config loaded with
`connector.config.load`, a real PostgreSQL server, the sandbox API over HTTP on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from connector import config, session  # noqa: E402
from connector.sync import Backfill, Live, Report, Retry  # noqa: E402
from connector.sync import run_pass as _run_pass  # noqa: E402
from tests.conftest import (  # noqa: E402 - the tests' schema, role and stream
    API_KEY,
    CUSTOMERS,
    DB_PASSWORD,
    DB_USER,
    add_customers,
    customers_stream,
)
from tests.conftest import Database as _TestDatabase  # noqa: E402
from tests.pgserver import PgServer  # noqa: E402
from tests.ports import free_port  # noqa: E402

__all__ = ["API_KEY", "CUSTOMERS", "customers_stream", "free_port"]  # shared with the tests
RESULTS = ROOT / "bench" / "results"


# ---------------------------------------------------------------------------
# The machine and the figures


def machine() -> list[str]:
    """CPU model, cores, memory, Python: printed at the top of every script's output."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    logical = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
    return [f"machine: {model}, {logical} logical core(s) ({usable} usable){memory}",
            f"python:  {platform.python_implementation()} {platform.python_version()} on "
            f"{platform.system()} {platform.release()}"]


def header(title: str, args: Any) -> float:
    """Print the title, the machine and the options; returns the start time for `footer`."""
    started = time.monotonic()
    print(f"== {title}")
    for line in machine():
        print(line)
    options = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                       if not isinstance(v, bool) or v)
    print(f"code:    {code_version()}")
    print(f"options: {options}")
    print(f"load average at start: {load()} (other processes compete for the same cores)")
    print(flush=True)
    return started


def code_version() -> str:
    """The commit measured, and whether connector/ differs from it (edits not committed)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "connector")
    return f"commit {head}" + (" + uncommitted changes in connector/" if dirty else "")


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def footer(started: float) -> None:
    print()
    print(f"load average at end: {load()}; took {time.monotonic() - started:.0f} s; "
          f"code at end: {code_version()}")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float], unit: str = "s", digits: int = 3) -> str:
    """`median (min..max of n)` for a list of runs."""
    return (f"{median(values):.{digits}f} {unit} (min {min(values):.{digits}f}, "
            f"max {max(values):.{digits}f}, n={len(values)})")


def verdict(ok: bool) -> str:
    return "MEETS target" if ok else "MISSES target"


def log(message: str) -> None:
    """Progress lines, to stderr so that stdout holds the figures only."""
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# PostgreSQL


class Postgres:
    """A throwaway PostgreSQL server with the connector's read-only role, as the tests use."""

    def __init__(self) -> None:
        self.server = PgServer().start()
        with psycopg.connect(self.server.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{DB_PASSWORD}'")
            conn.execute(f"GRANT pg_read_all_stats TO {DB_USER}")
            self.version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]

    def __enter__(self) -> Postgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.cleanup()

    def database(self, name: str) -> Database:
        self.server.create_database(name)
        db = Database(self.server, name)
        db.execute(f"GRANT CONNECT ON DATABASE {name} TO {DB_USER}")
        db.execute(f"GRANT USAGE ON SCHEMA public TO {DB_USER}")
        db.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {DB_USER}")
        return db


@dataclass
class Database(_TestDatabase):
    """The tests' database handle, plus what the benchmarks need: a plain DSN and row counts."""

    @property
    def dsn(self) -> str:
        return self.server.dsn(self.name)

    def rowcount(self, sql: str, params: Any = None) -> int:
        """Run one statement; how many rows it changed."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(sql, params).rowcount


def build_customers(db: Database, rows: int, spacing: float = 60.0) -> float:
    """`rows` customers (the tests' table and rows, `tests/conftest.py`), all updated more
    than a day ago, the cursor values `spacing` seconds apart (so with a 10-minute lookback,
    only the newest 600/spacing rows lie within the lookback of the newest row, whatever the
    table's size).

    Loaded with one INSERT ... SELECT generate_series; the cursor index is made after the
    load, then VACUUM ANALYZE, as a table at rest would be. Returns the seconds it took.
    """
    started = time.monotonic()
    db.execute(CUSTOMERS)
    db.execute("DROP INDEX customers_updated_at")  # made again after the load: faster
    add_customers(db, 1, rows, at=f"now() - interval '1 day' - ({rows} - i) * "
                                  f"interval '{spacing} seconds'")
    db.execute("CREATE INDEX customers_updated_at ON customers (updated_at)")
    db.execute("VACUUM ANALYZE customers")
    return time.monotonic() - started


def change_customers(db: Database, every: int, residue: int, label: str) -> int:
    """Change the city of every `every`-th customer (ids with `id % every == residue`) and
    move its cursor to now(); returns how many rows changed."""
    return db.rowcount(
        "UPDATE customers SET city = %s, updated_at = clock_timestamp() "
        "WHERE customer_id %% %s = %s", (label, every, residue))


# ---------------------------------------------------------------------------
# The sandbox, in its own process


class SandboxProcess:
    """`python -m connector sandbox` in a child process (its own interpreter and core)."""

    def __init__(self, latency: float = 0.0, workdir: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
        self._out = open(self.workdir / "sandbox.out", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "connector", "sandbox", "--port", str(self.port),
             "--api-key", API_KEY, "--latency", str(latency), "--token-lifetime", "3600"],
            cwd=ROOT, stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.admin("GET", "summary")
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the sandbox did not start: "
                                       + (self.workdir / "sandbox.out").read_text()) from None
                time.sleep(0.1)

    def admin(self, method: str, name: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST"
                                                                  else None)
        request = urllib.request.Request(  # noqa: S310 - our own http:// URL on loopback
            f"{self.url}/_sandbox/{name}", data=data, method=method)
        with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310
            return json.loads(reply.read())

    def state(self) -> str:
        """Whether the sandbox still runs, and the end of what it printed (for errors)."""
        code = self.proc.poll()
        tail = (self.workdir / "sandbox.out").read_text(errors="replace")[-1500:]
        return (f"sandbox {'running' if code is None else f'exited with {code}'}; "
                f"its output ends: {tail!r}")

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the sandbox process has used so far."""
        return cpu_seconds(self.proc.pid)

    def faults(self, **changes: Any) -> Any:
        return self.admin("POST", "faults", changes)

    def reset(self) -> None:
        """Forget what was received (its request log grows with every call)."""
        self.admin("POST", "reset")

    def summary(self) -> dict[str, Any]:
        return dict(self.admin("GET", "summary"))

    def stop(self) -> None:
        stop_child(self.proc, 10)
        self._out.close()

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# Configs and passes


def write_config(folder: Path, *, db_url: str, api_url: str, wiraya: dict[str, Any] | None = None,
                 source: dict[str, Any] | None = None, stream: dict[str, Any] | None = None,
                 name: str = "connector.yaml", state: str = "state/connector.db") -> Path:
    """A config file as a user writes it; the state file sits in `folder/state/`."""
    folder.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "source": {"url": db_url, "timezone": "UTC", **(source or {})},
        "wiraya": {"base_url": api_url, "api_key": API_KEY, **(wiraya or {})},
        "state": state,
        "contacts": {"customers": stream or customers_stream()},
        "logging": {"level": "warning"},
    }
    path = folder / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    config.load(path)  # refuse a bad config here, with the connector's own message
    return path


@dataclass
class Timed:
    report: Report
    seconds: float  # wall time of run_pass alone


def run_passes(path: Path, count: int = 1, stream: str = "customers", kind: str = "live",
               **options: Any) -> tuple[list[Timed], dict[str, float]]:
    """`count` passes of one stream in this process, in one session, as `connector sync`
    (count 1) or the daemon (later passes) runs them, like tests/conftest.py `run_passes`.

    Returns each pass with its own wall time, and the wall times of the session: `open`
    (loading the config, opening the database pool, the state file and the client),
    `close`, and `total` (everything, as one `connector sync` minus the interpreter start).
    """
    phases: dict[str, float] = {}

    async def go() -> list[Timed]:
        timed = []
        started = time.monotonic()
        settings = config.load(path)
        async with session.opened(settings) as ctx:
            phases["open"] = time.monotonic() - started
            for _ in range(count):
                at = time.monotonic()
                how = Live() if kind == "live" else Backfill(**options) if kind == "backfill" \
                    else Retry()
                report = await _run_pass(ctx, stream, how)
                timed.append(Timed(report, time.monotonic() - at))
                if report.outcome != "ok":
                    raise RuntimeError(f"pass failed: {report.line()}")
            closing = time.monotonic()
        phases["close"] = time.monotonic() - closing
        return timed

    started = time.monotonic()
    timed = asyncio.run(go())
    phases["total"] = time.monotonic() - started
    return timed, phases


@dataclass
class ChildRun:
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def run_child(argv: Sequence[str], cwd: Path = ROOT, env: dict[str, str] | None = None
              ) -> ChildRun:
    """Run a command; its wall time and its own peak RSS (from wait4, not the process group)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-child-"))
    out_path, err_path = folder / "stdout", folder / "stderr"
    full_env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(list(argv), cwd=cwd, stdout=out, stderr=err, env=full_env)
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    try:
        return ChildRun(seconds, usage.ru_maxrss / 1024, proc.returncode,
                        out_path.read_text(errors="replace"),
                        err_path.read_text(errors="replace"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_child(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM, then SIGKILL after `timeout` seconds; the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def self_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------
# Profiles


def flat_profile(session_obj: Any, top: int = 15) -> list[str]:
    """A pyinstrument session as two flat lists: functions by own (self) time, and the
    connector's functions by total time, each with its share of the whole run.

    C functions show as `<built-in>` entries (json `loads`, `epoll.poll`, ...); own time
    is a function's time less its callees' (pyinstrument's "[self]" frames)."""
    root = session_obj.root_frame()
    if root is None:
        return ["(no samples)"]
    total = root.time or 1e-9
    own: dict[str, float] = {}
    inclusive: dict[str, float] = {}

    def name(frame: Any) -> str:
        path = frame.file_path_short or frame.file_path or "?"
        return f"{frame.function} ({path}:{frame.line_no})"

    def walk(frame: Any, stack: frozenset[str]) -> None:
        if frame.is_synthetic_leaf:  # pyinstrument's "[self]": counted in its parent
            return
        label = name(frame)
        children_time = sum(child.time for child in frame.children
                            if not child.is_synthetic_leaf)
        own[label] = own.get(label, 0.0) + max(0.0, frame.time - children_time)
        if label not in stack:  # recursion counted once
            inclusive[label] = inclusive.get(label, 0.0) + frame.time
        for child in frame.children:
            walk(child, stack | {label})

    walk(root, frozenset())
    lines = [f"total sampled time {total:.2f} s (main thread)",
             "own time by package (a C function counted in the package that called it):"]
    for package, seconds in sorted(_by_package(root).items(), key=lambda kv: -kv[1])[:8]:
        lines.append(f"  {100 * seconds / total:5.1f}%  {seconds:7.2f} s  {package}")
    lines.append("top functions by own time:")
    for label, seconds in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * seconds / total:5.1f}%  {seconds:7.2f} s  {label}")
    lines.append("connector functions by total time (incl. callees):")
    ours = [(label, seconds) for label, seconds in inclusive.items()
            if "connector/" in label and "bench/" not in label]
    for label, seconds in sorted(ours, key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * seconds / total:5.1f}%  {seconds:7.2f} s  {label}")
    return lines


def _package(path: str) -> str:
    """`connector`, `httpcore`, `asyncio`, ... from a frame's file path."""
    parts = Path(path).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return parts[parts.index(marker) + 1].removesuffix(".py")
    if "connector" in parts:
        return "connector"
    if "bench" in parts:
        return "bench"
    if path == "<string>":
        return "<string> (generated code: dataclass __init__)"
    if "<" in path:
        return path  # <frozen ...>
    lib = [i for i, part in enumerate(parts) if part.startswith("python3")]
    if lib and lib[-1] + 1 < len(parts):
        return "stdlib " + parts[lib[-1] + 1].removesuffix(".py")
    return parts[-1] if parts else "?"


def _by_package(root: Any) -> dict[str, float]:
    totals: dict[str, float] = {}

    def walk(frame: Any, owner: str) -> None:
        if frame.is_synthetic_leaf:
            return
        path = frame.file_path or ""
        package = owner if (not path or path == "<built-in>") else _package(path)
        own = frame.time - sum(c.time for c in frame.children if not c.is_synthetic_leaf)
        totals[package] = totals.get(package, 0.0) + max(0.0, own)
        for child in frame.children:
            walk(child, package)

    walk(root, "?")
    return totals


@contextlib.contextmanager
def temp_folder(prefix: str, keep: str | None = None) -> Iterator[Path]:
    """A work folder: `keep` (kept afterwards) or a temporary one (removed)."""
    if keep:
        folder = Path(keep).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        yield Path(name)


if __name__ == "__main__":
    # `python bench/common.py FILE.pyisession ...`: the flat summary of saved profiles.
    from pyinstrument.session import Session

    for name in sys.argv[1:]:
        print(f"== {name}")
        for text in flat_profile(Session.load(name), top=20):
            print(text)
