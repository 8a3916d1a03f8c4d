"""A throwaway PostgreSQL server for tests and benchmarks.

Started from the installed server binaries in a temporary folder, listening on 127.0.0.1
only, with durability turned off (it is thrown away). As root, the server runs as an
unprivileged user (`postgres` if it exists, else `nobody`), since PostgreSQL refuses root.
`standby()` makes a hot standby of a running server with `pg_basebackup -R`; `timezone`
sets the server's default `TimeZone`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.ports import free_port

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "pg-super-secret"


def find_bindir() -> Path:
    """Where initdb and pg_ctl live: $PG_BINDIR, pg_config, the Debian layout, then PATH."""
    candidates = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             check=False).stdout.strip()
        if out:
            candidates.append(Path(out))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb") or "").resolve().parent)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found; install them "
                       "(Debian: apt-get install postgresql) or set PG_BINDIR")


class PgServer:
    def __init__(self, timezone: str | None = None) -> None:
        self.timezone = timezone
        self.bindir = find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="connector-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    pwd.getpwnam(name)
                except KeyError:
                    continue
                self.user = name
                break
            entry = pwd.getpwnam(self.user or "nobody")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        os.chmod(self.root, 0o755)  # noqa: S103 - the server user must reach its folder

    def _run(self, *args: str) -> None:
        result = subprocess.run([str(self.bindir / args[0]), *args[1:]], capture_output=True,
                                text=True, user=self.user, cwd=self.root, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stderr or result.stdout}")

    def start(self) -> PgServer:
        pwfile = self.root / "pwfile"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth-local=trust",
                  "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
                  "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        self._launch()
        return self

    def standby(self) -> PgServer:
        """A hot standby of this (running) server: `pg_basebackup -R`, then started.

        `-R` writes `primary_conninfo` and `standby.signal`, so the copy starts in recovery
        and streams from this server. Stop it with `cleanup()` before this one.
        """
        replica = PgServer(timezone=self.timezone)
        conninfo = (f"host=127.0.0.1 port={self.port} user={SUPERUSER} "
                    f"password={SUPERUSER_PASSWORD}")
        replica._run("pg_basebackup", "-d", conninfo, "-D", str(replica.data), "-R",
                     "-X", "stream", "-c", "fast", "--no-sync")
        replica._launch()
        return replica

    def wait_for_replay(self, primary: PgServer, timeout: float = 30) -> None:
        """Until this standby has replayed everything the primary has written so far."""
        with psycopg.connect(primary.dsn("postgres"), autocommit=True) as conn:
            target = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            while True:
                done = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                    (target[0] if target else "0/0",)).fetchone()
                if done and done[0]:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the standby on port {self.port} did not replay "
                                       f"up to {target} in {timeout}s")
                time.sleep(0.05)

    def _options(self) -> str:
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   f"-c unix_socket_directories={self.root} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=200 -c shared_buffers=128MB")
        if self.timezone:
            options += f" -c TimeZone={self.timezone}"
        return options

    def _launch(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-o", self._options(), "-l",
                  str(self.root / "server.log"), "-w", "-t", "60", "start")
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def pause(self) -> None:
        """Stop the server but keep its data (to test a database that goes away)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-o", self._options(), "-l",
                  str(self.root / "server.log"), "-w", "-t", "60", "start")

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, database: str, user: str = SUPERUSER, password: str | None = None) -> str:
        if user == SUPERUSER and password is None:
            password = SUPERUSER_PASSWORD
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def url(self, database: str, user: str = SUPERUSER, password: str | None = None) -> str:
        """A SQLAlchemy URL, as the connector's config takes it."""
        return self.dsn(database, user, password).replace("postgresql://",
                                                          "postgresql+psycopg://", 1)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return name
