"""The daemon as a child process, for the tests that run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Daemon:
    def __init__(self, path: Path, *extra: str) -> None:
        self.config = path
        self.log_path = path.parent / f"daemon-{time.monotonic_ns()}.log"
        self.log_file = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "connector", "--config", str(path), *extra, "run"],
            stdout=self.log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self.log_file.close()
        return code


@pytest.fixture(name="daemons")
def daemons_fixture() -> Iterator[list[Daemon]]:
    """Daemons a test started; any still running at the end is killed."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


