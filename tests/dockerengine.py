"""A Docker engine and a base image for the image test, without any image registry.

`Engine.ensure()` uses the engine that answers on the default socket; when none does, it
starts Debian's `dockerd` with `--bridge=none --iptables=false` (containers and builds then
use `--network host`, so traffic stays on loopback and the host's firewall is untouched), and
`stop()` ends only that process. `base_image()` makes a Debian base with python3 by
`debootstrap --variant=minbase` + `docker import`, tagged by its recipe, so a second run finds
it and skips the minute debootstrap takes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# This machine's CA bundle, copied into the base so that pip in the build trusts the same
# egress as pip here (a machine setting, never part of the repository or of the release).
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class EngineUnavailable(Exception):
    """No engine answers and none can be started here; the message says why."""


def docker(*args: str, timeout: float = 120, check: bool = True,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          check=False, env={**os.environ, **(env or {})})
    _transcribe(args, done, env)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}:\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


_last: list[tuple[tuple[str, ...], str]] = []


def _transcribe(args: tuple[str, ...], done: subprocess.CompletedProcess[str],
                env: dict[str, str] | None) -> None:
    """With $CONNECTOR_DOCKER_TRANSCRIPT set, append each command and its output to that file
    (docs/docker.md is written from it)."""
    path = os.environ.get("CONNECTOR_DOCKER_TRANSCRIPT")
    if not path or args[0] == "info" or _last == [(args, done.stdout)]:  # a poll: once
        return
    _last[:] = [(args, done.stdout)]
    prefix = "".join(f"{key}={value} " for key, value in (env or {}).items())
    output = (done.stdout + done.stderr).rstrip()
    lines = output.splitlines()
    if len(lines) > 60:
        lines = [*lines[:25], f"... ({len(lines) - 50} lines)", *lines[-25:]]
    with open(path, "a", encoding="utf-8") as out:
        out.write(f"$ {prefix}docker {' '.join(args)}\n" + "".join(f"{line}\n" for line in lines)
                  + (f"[exit {done.returncode}]\n" if done.returncode else ""))


def _answers() -> bool:
    try:
        return docker("info", "--format", "{{.ServerVersion}}", timeout=20,
                      check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class Engine:
    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkdtemp(prefix="connector-dockerd-")) / "dockerd.log"

    def ensure(self) -> Engine:
        if shutil.which("docker") is None:
            raise EngineUnavailable("no docker client on PATH; .ci/run installs docker.io")
        if _answers():
            return self
        dockerd = shutil.which("dockerd") or ("/usr/sbin/dockerd"
                                              if Path("/usr/sbin/dockerd").exists() else None)
        if dockerd is None:
            raise EngineUnavailable("no engine runs and dockerd is not installed; "
                                    "apt-get install docker.io (.ci/run does)")
        if os.geteuid() != 0:
            raise EngineUnavailable("no engine runs, and starting dockerd needs root")
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [dockerd, "--bridge=none", "--iptables=false", "--ip6tables=false"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if _answers():
                return self
            time.sleep(0.5)
        tail = self.log.read_text(errors="replace")[-1500:]
        self.stop()
        raise EngineUnavailable(f"dockerd did not start here:\n{tail}")

    def stop(self) -> None:
        """End the dockerd this object started (not any other), waiting for it to exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _mirror() -> str:
    """The Debian mirror this machine's apt uses (its package-index setting), or the default."""
    for source in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        text = source.read_text(errors="replace")
        for stanza in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1)
    return DEFAULT_MIRROR


def base_image() -> str:
    """The tag of a Debian base with python3 and venv, made now if the engine lacks it."""
    ca = HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.exists() else b""
    recipe = "|".join([SUITE, *BASE_PACKAGES, hashlib.sha256(ca).hexdigest()])
    tag = f"connector-test-base:{SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    if docker("image", "inspect", tag, check=False).returncode == 0:
        return tag
    if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
        raise EngineUnavailable("debootstrap is not installed; apt-get install debootstrap "
                                "(.ci/run does)")
    root = Path(tempfile.mkdtemp(prefix="connector-base-"))
    try:
        made = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             SUITE, str(root / "fs"), _mirror()],
            capture_output=True, text=True, timeout=900, check=False)
        if made.returncode != 0:
            raise AssertionError(f"debootstrap failed:\n{made.stdout[-2000:]}{made.stderr}")
        fs = root / "fs"
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (fs / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        changes = []
        if ca:
            (fs / "etc/ssl/certs/ca-certificates.crt").write_bytes(ca)
            changes = ["--change", "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt"]
        tar = subprocess.Popen(["tar", "-C", str(fs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", *changes, "-", tag], stdin=tar.stdout,
                                  capture_output=True, text=True, timeout=600, check=False)
        tar.wait()
        if imported.returncode != 0:
            raise AssertionError(f"docker import failed: {imported.stderr}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return tag
