"""The connector against drt (drt-core 1.2.1, a YAML reverse-ETL CLI), side by side, one run.

What it measures: whole processes, `connector sync` against `drt run`, on the same
PostgreSQL table (the tests' `customers`, `--rows` rows) and the same sandbox API (its own
process, no rate limit, a token lifetime of an hour), for three passes each:

1. a first full sync (every row sent),
2. a pass with nothing changed,
3. a pass after `--change` of the rows (default 1%) changed (their city and cursor).

For each: wall time, CPU time (user + system) and peak RSS of the command (`/usr/bin/time`),
and the connector/drt ratios; `--repeats` rounds (default 3, the tool that goes first
alternating, both forgetting their state before each round) and the medians. The sandbox
is reset before each run and what it received is checked (how many contacts were written,
and after the first round's first syncs that both tools left exactly the same contacts).

drt set-up (its own venv, made once from PyPI under the system temp dir and reused): the
`rest_api` destination in batch mode (`body_mode: batch`, a `batch_template` building
Wiraya's bulk body keyed by contact id, `PUT /api/contact/_bulk`, 500 rows a request), a
bearer token asked of the sandbox beforehand, `mode: incremental` on `updated_at`, no rate
limit. drt does not check phone numbers; its query only drops the `+` so that the sandbox
takes them. The connector: the tests' customers stream, `rate_limit: none`, bulk of 500,
installed from this checkout into a venv of its own (see `connector_venv`).

Run from the repo root (the machine is shared: nice it):

    nice python bench/vs_drt.py                  # 100,000 rows
    nice python bench/vs_drt.py --rows 5000      # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

DRT = "drt-core[postgres]==1.2.1"
DRT_VERSION = "1.2.1"
BULK = 500
TOKEN_ENV = "VS_DRT_WIRAYA_TOKEN"
PASSWORD_ENV = "VS_DRT_PG_PASSWORD"

# Wiraya's bulk body, {"<id>": {contact}, ...}, from the same columns the connector maps.
BATCH_TEMPLATE = (
    '{ {%- for r in rows %}{{ (r.customer_id | string) | tojson }}: {"schema": 1, '
    '"personal": {"phoneNumber": {{ r.phone | tojson }}, "givenName": {{ r.first_name '
    '| tojson }}, "surName": {{ r.last_name | tojson }}}, "general": {"city": {{ r.city '
    '| tojson }}}}{% if not loop.last %}, {% endif %}{%- endfor %} }')
MODEL = ("SELECT customer_id, first_name, last_name, ltrim(mobile, '+') AS phone, city, "
         "updated_at FROM public.customers")


def drt_venv(folder: Path) -> Path:
    """The `drt` executable of a venv holding drt-core 1.2.1, made if it is not there yet."""
    drt = folder / "bin" / "drt"
    python = folder / "bin" / "python"
    if drt.exists():
        found = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('drt-core'))"],
            capture_output=True, text=True, check=False).stdout.strip()
        if found == DRT_VERSION:
            return drt
    common.log(f"making a venv for {DRT} in {folder}")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", DRT], check=True)
    return drt


def connector_venv(folder: Path) -> Path:
    """The `connector` executable of a venv holding this checkout, installed as a user
    installs it (a built wheel, byte-compiled), like drt in its own venv: neither tool pays
    for this machine's extra packages or for compiling its sources at every start. The
    dependencies are installed once; the checkout itself again at every run."""
    python = folder / "bin" / "python"
    if not python.exists():
        common.log(f"making a venv for the connector in {folder}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(common.ROOT)],
                       check=True)
    else:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps",
                        "--force-reinstall", str(common.ROOT)], check=True)
    return folder / "bin" / "connector"


def token(api: common.SandboxProcess) -> str:
    request = urllib.request.Request(  # noqa: S310 - our own http:// URL on loopback
        f"{api.url}/auth/token/apikey", data=json.dumps({"key": common.API_KEY}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310
        return str(json.loads(reply.read())["token"])


def drt_project(folder: Path, db: common.Database, api_url: str) -> Path:
    """A drt project (drt_project.yml, syncs/customers.yml) and its profile, in `folder`;
    `folder/home` is the HOME drt runs with (its `~/.drt/profiles.yml`)."""
    server = db.server
    profile = {"bench": {"type": "postgres", "host": "127.0.0.1", "port": server.port,
                         "dbname": db.name, "user": common.DB_USER,
                         "password_env": PASSWORD_ENV}}
    sync = {
        "name": "customers", "model": MODEL,
        "destination": {
            "type": "rest_api", "url": f"{api_url}/api/contact/_bulk", "method": "PUT",
            "headers": {"Content-Type": "application/json"},
            "auth": {"type": "bearer", "token_env": TOKEN_ENV},
            "body_mode": "batch", "batch_template": BATCH_TEMPLATE,
            "max_records_per_request": BULK},
        "sync": {"mode": "incremental", "cursor_field": "updated_at", "batch_size": BULK,
                 "rate_limit": {"requests_per_second": 0}, "on_error": "fail"},
    }
    (folder / "home" / ".drt").mkdir(parents=True, exist_ok=True)
    (folder / "syncs").mkdir(parents=True, exist_ok=True)
    (folder / "home" / ".drt" / "profiles.yml").write_text(yaml.safe_dump(profile))
    (folder / "drt_project.yml").write_text(yaml.safe_dump({"name": "vs_drt",
                                                            "profile": "bench"}))
    (folder / "syncs" / "customers.yml").write_text(yaml.safe_dump(sync, sort_keys=False))
    return folder


class Tools:
    """The two commands, each run as a whole process against the same sandbox."""

    def __init__(self, api: common.SandboxProcess, connector_config: Path, connector: Path,
                 drt: Path, project: Path) -> None:
        self.api = api
        self.folder = connector_config.parent
        self.check_next = True  # keep what the first syncs left, to compare
        self.by_connector: dict[str, Any] | None = None
        self.by_drt: dict[str, Any] | None = None
        self.connector = [str(connector), "-c", str(connector_config),
                          "sync"]
        self.drt = [str(drt), "run", "--quiet"]
        self.project = project
        self.drt_env = {"HOME": str(project / "home"), TOKEN_ENV: token(api),
                        PASSWORD_ENV: common.DB_PASSWORD, "DO_NOT_TRACK": "1"}

    def run(self, tool: str, expect_writes: int) -> Measured:
        self.api.reset()
        if tool == "connector":
            figures, child = measured(self.connector)
        else:
            figures, child = measured(self.drt, cwd=self.project, env=self.drt_env)
        if child.returncode != 0:
            raise RuntimeError(f"{tool} exited with {child.returncode}: {child.stderr[-2000:]}"
                               f"{child.stdout[-2000:]}")
        writes = self.api.summary()["contact_writes"]
        if writes != expect_writes:
            raise RuntimeError(f"{tool} wrote {writes} contacts, expected {expect_writes}: "
                               f"{child.stdout[-1500:]} {child.stderr[-1500:]}")
        common.log(f"{tool}: {figures.seconds:.2f} s wall, {figures.cpu:.2f} s CPU, "
                   f"{figures.peak_rss_mb:.0f} MB, {writes} contacts written")
        if tool == "connector":
            self.by_connector = self.contacts() if expect_writes and self.check_next else None
        elif self.check_next and expect_writes:
            self.by_drt = self.contacts()
        return figures

    def contacts(self) -> dict[str, Any]:
        return dict(self.api.admin("GET", "contacts"))

    def same_contacts_from_both(self) -> None:
        """After a first sync of each: both left exactly the same contacts."""
        if self.by_connector != self.by_drt or not self.by_connector:
            raise RuntimeError("the two tools left different contacts in the sandbox")
        self.check_next = False
        self.by_connector = self.by_drt = None


@dataclass
class Measured:
    seconds: float  # wall
    cpu: float  # user + system seconds of the command (and its children)
    peak_rss_mb: float


def measured(argv: list[str], cwd: Path = common.ROOT, env: dict[str, str] | None = None
             ) -> tuple[Measured, common.ChildRun]:
    """`common.run_child` with the CPU time and peak RSS from `/usr/bin/time`: a child
    forked from this (large) process starts with this process's high-water mark in its
    own `ru_maxrss`, so the figure `os.wait4` gives is at least this process's size."""
    with tempfile.NamedTemporaryFile(prefix="vs-drt-time-", suffix=".txt") as out:
        child = common.run_child(["/usr/bin/time", "-f", "%M %U %S", "-o", out.name, *argv],
                                 cwd=cwd, env=env)
        rss, user, system = Path(out.name).read_text().split()[-3:]
    return Measured(child.seconds, float(user) + float(system), int(rss) / 1024), child


def fresh(connector: Path, project: Path) -> None:
    """Both tools forget what they synced (the connector's folder holds its config and its
    `state/`): the next pass is a first full sync."""
    for path in (connector / "state", project / ".drt", project / "target"):
        shutil.rmtree(path, ignore_errors=True)


Row = dict[str, list[Measured]]


def repeat(db: common.Database, tools: Tools, rows: int, every: int, run: int,
           table: dict[str, Row]) -> None:
    """One round of the three passes; the tool that goes first alternates per round."""
    order = ("connector", "drt") if run % 2 == 0 else ("drt", "connector")
    fresh(tools.folder, tools.project)

    def both(label: str, writes: int) -> None:
        row = table.setdefault(label, {"connector": [], "drt": []})
        for tool in order:
            row[tool].append(tools.run(tool, writes))

    both(f"first full sync of {rows:,} rows", rows)
    if run == 0:
        tools.same_contacts_from_both()
    both("a pass with nothing changed", 0)
    changed = common.change_customers(db, every, run % every, f"Changed{run}")
    both(f"a pass with 1 row in {every} changed ({changed:,} rows)", changed)


def report(table: dict[str, Row]) -> None:
    print()
    print("| whole process (median) | connector: wall, CPU, peak RSS | drt 1.2.1: wall, CPU, "
          "peak RSS | connector / drt: wall | CPU | RSS |")
    print("|---|---|---|---|---|---|")
    for label, row in table.items():
        ours, theirs = (_medians(row[tool]) for tool in ("connector", "drt"))
        print(f"| {label} | {ours[0]:.2f} s, {ours[1]:.2f} s, {ours[2]:.0f} MB "
              f"| {theirs[0]:.2f} s, {theirs[1]:.2f} s, {theirs[2]:.0f} MB "
              f"| {ours[0] / theirs[0]:.2f}x | {ours[1] / theirs[1]:.2f}x "
              f"| {ours[2] / theirs[2]:.2f}x |")
    print()
    print("wall: interpreter start to exit; CPU: user + system seconds of the command "
          "(/usr/bin/time %U + %S); RSS: the command's own peak resident set (%M). Each the "
          "median of the repeats (the tool that goes first alternates). Below 1.00x the "
          "connector is faster / smaller. Targets (issue 14): first sync <= 0.50x wall and "
          "<= 1.5x RSS; the other two <= 1.00x wall.")


def _medians(runs: list[Measured]) -> tuple[float, float, float]:
    return (common.median([r.seconds for r in runs]), common.median([r.cpu for r in runs]),
            common.median([r.peak_rss_mb for r in runs]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the table")
    parser.add_argument("--change", type=float, default=0.01,
                        help="share of the rows changed before the third pass")
    parser.add_argument("--drt-venv", default=str(Path(tempfile.gettempdir())
                                                  / f"vs_drt-drt-core-{DRT_VERSION}"),
                        help="venv for drt-core (made if missing, reused if present)")
    parser.add_argument("--connector-venv", default=str(Path(tempfile.gettempdir())
                                                        / "vs_drt-connector"),
                        help="venv for this checkout (made if missing, the checkout "
                             "reinstalled every run)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of the three passes (medians are printed)")
    parser.add_argument("--keep", metavar="DIR", help="keep configs and state files here")
    args = parser.parse_args()
    started = common.header("vs_drt: connector sync against drt run, whole processes", args)
    drt = drt_venv(Path(args.drt_venv))
    connector = connector_venv(Path(args.connector_venv))

    with common.temp_folder("bench-vs-drt-", args.keep) as folder, \
            common.Postgres() as pg, common.SandboxProcess(workdir=folder) as api:
        db = pg.database("vs_drt")
        built = common.build_customers(db, args.rows)
        common.log(f"{args.rows:,} rows built in {built:.1f} s")
        config = common.write_config(folder / "connector", db_url=db.url, api_url=api.url,
                                     wiraya={"rate_limit": "none", "bulk_size": BULK})
        project = drt_project(folder / "drt", db, api.url)
        print(f"postgresql {pg.version}; sandbox in its own process at {api.url}; "
              f"{DRT} in {args.drt_venv}; the connector in {args.connector_venv}; "
              f"os nice {os.nice(0)}")
        tools = Tools(api, config, connector, drt, project)
        table: dict[str, Row] = {}
        for run in range(args.repeats):
            repeat(db, tools, args.rows, max(1, round(1 / args.change)), run, table)
    report(table)
    common.footer(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
