"""A throwaway MariaDB server for tests and benchmarks.

Started from the installed server binaries (Debian's `mariadb-server`) in a temporary folder,
listening on 127.0.0.1 only on a free port, with durability turned off (it is thrown away).
As root, the server runs as an unprivileged user (`mysql` if it exists, else `nobody`).
The superuser logs in with a password over TCP; no grant table is skipped.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql

from tests.ports import free_port

SUPERUSER = "root"
SUPERUSER_PASSWORD = "maria-super-secret"


def find_binary(*names: str) -> Path:
    """A server binary: $MARIADB_BINDIR, PATH, then /usr/sbin and /usr/bin."""
    folders = [os.environ["MARIADB_BINDIR"]] if os.environ.get("MARIADB_BINDIR") else []
    folders += [*os.environ.get("PATH", "").split(os.pathsep), "/usr/sbin", "/usr/bin"]
    for name in names:
        for folder in folders:
            candidate = Path(folder) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    raise RuntimeError(f"MariaDB server binaries ({' or '.join(names)}) not found; install "
                       "them (Debian: apt-get install mariadb-server) or set MARIADB_BINDIR")


def available() -> bool:
    try:
        find_binary("mariadbd", "mysqld")
        find_binary("mariadb-install-db", "mysql_install_db")
    except RuntimeError:
        return False
    return True


class MariaDbServer:
    def __init__(self, zone: str | None = None) -> None:
        # `zone`: the server process's own time zone (TZ), which `information_schema`
        # reports some times in; None keeps this machine's.
        self.zone = zone
        self.server = find_binary("mariadbd", "mysqld")
        self.install_db = find_binary("mariadb-install-db", "mysql_install_db")
        self.root = Path(tempfile.mkdtemp(prefix="connector-maria-"))
        self.data = self.root / "data"
        self.socket = self.root / "mariadb.sock"
        self.port = free_port()
        self.user: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.root_password = ""  # a fresh install's root has none until `start` sets it
        if os.geteuid() == 0:
            for name in ("mysql", "nobody"):
                try:
                    pwd.getpwnam(name)
                except KeyError:
                    continue
                self.user = name
                break
            entry = pwd.getpwnam(self.user or "nobody")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        os.chmod(self.root, 0o755)  # noqa: S103 - the server user must reach its folder

    def _options(self) -> list[str]:
        return ["--no-defaults", f"--datadir={self.data}", f"--socket={self.socket}",
                f"--port={self.port}", "--bind-address=127.0.0.1",
                f"--pid-file={self.root / 'mariadb.pid'}",
                f"--log-error={self.root / 'server.log'}",
                "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
                "--sync-binlog=0", "--skip-name-resolve", "--max-connections=200",
                "--innodb-buffer-pool-size=128M", "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_bin"]

    def start(self) -> MariaDbServer:
        user = [f"--user={self.user}"] if self.user else []
        result = subprocess.run(
            [str(self.install_db), "--no-defaults", f"--datadir={self.data}", *user,
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True, text=True, cwd=self.root, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {result.stderr or result.stdout}")
        try:
            self._launch()
            self._set_root_password()
        except BaseException:
            self.cleanup()
            raise
        return self

    def _set_root_password(self) -> None:
        # A fresh install lets root in through the socket without a password: set one, so
        # every test connection (TCP) authenticates for real.
        with contextlib.closing(pymysql.connect(unix_socket=str(self.socket), user=SUPERUSER,
                                                password="", autocommit=True)) as conn, \
                conn.cursor() as cur:
            for host in ("localhost", "127.0.0.1"):
                cur.execute(f"CREATE USER IF NOT EXISTS 'root'@'{host}'")
                cur.execute(f"ALTER USER 'root'@'{host}' IDENTIFIED BY %s",
                            (SUPERUSER_PASSWORD,))
                cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO 'root'@'{host}' "
                            "WITH GRANT OPTION")
            cur.execute("DROP USER IF EXISTS ''@'localhost'")
        self.root_password = SUPERUSER_PASSWORD

    def _launch(self) -> None:
        user = [f"--user={self.user}"] if self.user else []
        env = {**os.environ, **({"TZ": self.zone} if self.zone else {})}
        self.process = subprocess.Popen([str(self.server), *self._options(), *user],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        cwd=self.root, env=env)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                log = (self.root / "server.log")
                raise RuntimeError("mariadbd stopped at start: "
                                   + (log.read_text()[-2000:] if log.exists() else ""))
            try:
                with contextlib.closing(pymysql.connect(unix_socket=str(self.socket),
                                                        user=SUPERUSER,
                                                        password=self.root_password,
                                                        connect_timeout=2)):
                    return
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def connect(self, database: str | None = None, user: str = SUPERUSER,
                password: str | None = None, autocommit: bool = True) -> pymysql.Connection:
        """A connection as an application's: its session writes and reads times in UTC."""
        return pymysql.connect(host="127.0.0.1", port=self.port, user=user,
                               password=SUPERUSER_PASSWORD if password is None else password,
                               database=database, autocommit=autocommit, charset="utf8mb4",
                               init_command="SET time_zone = '+00:00'")

    def url(self, database: str, user: str = SUPERUSER, password: str | None = None,
            scheme: str = "mysql") -> str:
        """A URL as users write it (`mysql://`); the connector picks the driver."""
        password = SUPERUSER_PASSWORD if password is None else password
        return f"{scheme}://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(f"CREATE DATABASE `{name}`")
        return name

    def drop_database(self, name: str) -> None:
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")

    def version(self) -> str:
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            return str(cur.fetchone()[0])
