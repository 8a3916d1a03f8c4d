"""The Docker image, built and run for real (marked `docker` and `slow`), and the Docker files.

The image test uses the engine that runs, or starts Debian's dockerd (tests/dockerengine.py),
makes a Debian base without a registry, builds docker/Dockerfile on it and runs the container
with `--network host` against the test PostgreSQL and the sandbox: `check` passes, a sync
delivers, the daemon turns `healthy` with the image's default config, `docker stop` exits 0
with the state intact, the user is uid 10001, and a rebuild after a code change reuses the
dependency layer. Without an engine that can start, it is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from connector import config
from connector.sandbox import Sandbox
from tests.conftest import API_KEY, Database
from tests.dockerengine import Engine, EngineUnavailable, base_image, docker
from tests.ports import free_port

ROOT = Path(__file__).parent.parent
DOCKER = ROOT / "docker"
LABEL = "wiraya-connector-test"
DEPS_STEP = "pip install -r /tmp/runtime.txt"   # the dependency layer's RUN line
CODE_STEP = "pip wheel --no-deps"               # the package's RUN line
DEPS_COPY = "COPY --from=deps /opt/connector"    # the image's dependency layer


# --- the files, checked without an engine ---------------------------------------------------

def _compose() -> dict[str, dict[str, dict[str, object]]]:
    loaded = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_compose_config_loads_with_the_compose_environment() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "connector", "sandbox"}
    environment = services["connector"]["environment"]
    assert isinstance(environment, dict)
    env = {key: value.replace("${WIRAYA_BASE_URL:-", "").replace("${WIRAYA_API_KEY:-", "")
           .rstrip("}") for key, value in environment.items()}
    settings = config.load(DOCKER / "connector.yaml", env=env)
    assert settings.wiraya.base_url == "http://127.0.0.1:8900"  # the sandbox, on loopback
    assert settings.metrics is not None
    assert settings.metrics.address == ("0.0.0.0", 9464)  # noqa: S104 - inside the container
    assert str(settings.state).startswith("/var/lib/connector")
    assert "state:/var/lib/connector" in services["connector"]["volumes"]  # type: ignore[operator]


def test_compose_uses_one_image_and_starts_the_connector_after_its_peers() -> None:
    services = _compose()["services"]
    connector, sandbox = services["connector"], services["sandbox"]
    assert connector["image"] == sandbox["image"]
    assert "build" in sandbox and "build" not in connector  # built once
    assert connector["network_mode"] == "service:sandbox"  # the sandbox on 127.0.0.1
    assert connector["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                       "sandbox": {"condition": "service_healthy"}}
    assert "healthcheck" in sandbox and "healthcheck" in services["postgres"]
    assert "127.0.0.1:9464:9464" in sandbox["ports"]  # type: ignore[operator]
    assert "name" not in _compose()  # docker-compose 1.29 refuses a top-level name:


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose (Debian's 1.29) is not installed; .ci/run installs it")
def test_debian_docker_compose_accepts_the_compose_file() -> None:
    done = subprocess.run(["docker-compose", "-f", str(DOCKER / "compose.yaml"), "config", "-q"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_the_image_runs_as_a_fixed_user_with_state_on_a_volume() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "\nUSER 10001:10001\n" in dockerfile
    assert 'VOLUME ["/var/lib/connector"]' in dockerfile
    assert 'ENTRYPOINT ["connector"]' in dockerfile
    assert "\nARG BASE=python:3.12-slim\n" in dockerfile


def test_the_image_default_config_serves_health_on_loopback() -> None:
    settings = config.load(DOCKER / "connector.yaml",
                           env={"DATABASE_URL": "sqlite:///x.db", "WIRAYA_API_KEY": "k"})
    assert settings.metrics is not None
    assert settings.metrics.address == ("127.0.0.1", 9464)  # where the HEALTHCHECK asks


def test_the_sample_schema_has_what_the_config_reads() -> None:
    sql = (DOCKER / "init.sql").read_text()
    settings = config.load(DOCKER / "connector.yaml",
                           env={"DATABASE_URL": "sqlite:///x.db", "WIRAYA_API_KEY": "k"})
    for name, stream in settings.streams.items():
        table = sql.split(f"CREATE TABLE {stream.table.name} (", 1)[1].split(");", 1)[0]
        for column in stream.columns():
            assert f"\n    {column} " in table, (name, column)


# --- the image, built and run -------------------------------------------------------------

@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    started = Engine()
    try:
        started.ensure()
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc}")
    try:
        yield started
    finally:
        for kind, listing in (("container", ["ps", "-aq"]), ("volume", ["volume", "ls", "-q"])):
            ids = docker(*listing, "--filter", f"label={LABEL}", check=False).stdout.split()
            if ids:
                docker(kind, "rm", "-f", *ids, check=False)
        started.stop()


def _build(context: Path, tag: str, base: str) -> str:
    """BuildKit when the client has buildx; else the classic builder (Debian's docker.io)."""
    buildkit = docker("buildx", "version", check=False).returncode == 0
    done = docker("build", *(["--progress", "plain"] if buildkit else []), "--network", "host",
                  "--build-arg", f"BASE={base}", "-f", str(context / "docker" / "Dockerfile"),
                  "-t", tag, str(context), timeout=1800, check=False,
                  env={"DOCKER_BUILDKIT": "1" if buildkit else "0"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout + done.stderr


def _cached(output: str, step: str) -> bool:
    """Whether the build step whose command holds `step` came from the cache: the classic
    builder prints ` ---> Using cache` under `Step n/m : RUN ...`, BuildKit `#n CACHED`."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if step not in line:
            continue
        if line.startswith("Step "):
            return any("Using cache" in later for later in lines[i + 1:i + 3])
        if line.startswith("#"):
            number = line.split()[0]
            return any(later.startswith(f"{number} CACHED") for later in lines[i + 1:])
    raise AssertionError(f"no build step with {step!r} in the output:\n{output[-3000:]}")


@pytest.fixture(scope="module")
def image(engine: Engine) -> str:
    tag = "wiraya-connector:test"
    _build(ROOT, tag, base_image())
    return tag


def _sample_shop(db: Database) -> None:
    """docker/init.sql's shop (1000 customers), without its role: the fixture made one."""
    sql = (DOCKER / "init.sql").read_text().split("CREATE ROLE connector", 1)[0]
    db.execute(sql)


@pytest.mark.docker
@pytest.mark.slow
def test_the_image_checks_syncs_turns_healthy_and_stops_cleanly(
        image: str, db: Database, api: Sandbox, tmp_path: Path) -> None:
    _sample_shop(db)
    (tmp_path / "api_key").write_text(API_KEY + "\n")
    (tmp_path / "database_url").write_text(db.url + "\n")
    volume = docker("volume", "create", "--label", LABEL, f"connector-test-{uuid.uuid4().hex[:8]}"
                    ).stdout.strip()
    # The image's default config, its secrets from files, and a free port for /healthz, since
    # with --network host the container shares this machine's ports.
    run = ["--network", "host", "--label", LABEL, "-v", f"{volume}:/var/lib/connector",
           "-v", f"{tmp_path / 'api_key'}:/run/secrets/wiraya_api_key:ro",
           "-v", f"{tmp_path / 'database_url'}:/run/secrets/database_url:ro",
           "-e", "WIRAYA_API_KEY_FILE=/run/secrets/wiraya_api_key",
           "-e", "DATABASE_URL_FILE=/run/secrets/database_url",
           "-e", f"WIRAYA_BASE_URL={api.url}",
           "-e", f"CONNECTOR_METRICS_LISTEN=127.0.0.1:{free_port()}"]

    checked = docker("run", "--rm", *run, image, "check", check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    synced = docker("run", "--rm", *run, image, "sync", check=False, timeout=300)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert len(api.contacts) == 1000
    assert API_KEY not in synced.stdout + synced.stderr

    # The daemon, as the image starts it (CMD run). The check's timing is shortened so the
    # test need not wait 30 s; its command and the config are the image's.
    db.execute("INSERT INTO customers (customer_id, first_name, mobile) "
               "VALUES (1001, 'New', '+46701234567')")
    name = f"connector-test-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "--health-interval", "1s", *run, image)
    status = _wait_for_health(name, timeout=90)
    assert status == "healthy", _health_log(name) + docker("logs", name, check=False).stderr
    deadline = time.monotonic() + 60
    while len(api.contacts) < 1001 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "1001" in api.contacts

    stopped = docker("stop", name, timeout=60)
    assert stopped.returncode == 0
    state = json.loads(docker("inspect", name).stdout)[0]["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0)
    assert "daemon stopped" in docker("logs", name).stderr

    # The state survived on the volume: another sync sends nothing again.
    writes = sum(api.contact_writes.values())
    again = docker("run", "--rm", *run, image, "sync", check=False, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert sum(api.contact_writes.values()) == writes
    owner = docker("run", "--rm", *run, "--entrypoint", "stat", image, "-c", "%u:%g %a",
                   "/var/lib/connector/connector.db").stdout.split()
    assert owner[0] == "10001:10001"


def _wait_for_health(name: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()
        if status in ("healthy", "unhealthy"):
            return status
        time.sleep(0.5)
    return status


def _started_at(name: str) -> float:
    text = docker("inspect", "-f", "{{.State.StartedAt}}", name).stdout.strip()
    whole, _, fraction = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole + "+00:00").timestamp() + float(f"0.{fraction or 0}")


def _health_log(name: str) -> str:
    return docker("inspect", "-f", "{{json .State.Health}}", name, check=False).stdout


@pytest.mark.docker
@pytest.mark.slow
def test_the_image_runs_as_uid_10001_without_the_sources(image: str) -> None:
    assert docker("inspect", "-f", "{{.Config.User}}", image).stdout.strip() == "10001:10001"
    shown = docker("run", "--rm", "--network", "host", "--label", LABEL, "--entrypoint", "sh",
                   image, "-c", "id -u; id -g; test -e /src && echo has-src; "
                   "test -e /opt/build && echo has-build-tools; true").stdout.split()
    assert shown == ["10001", "10001"]


@pytest.mark.docker
@pytest.mark.slow
def test_the_health_check_says_why_when_the_config_has_no_metrics(
        image: str, tmp_path: Path) -> None:
    text = (DOCKER / "connector.yaml").read_text()
    no_metrics = text.split("\nmetrics:", 1)[0] + "\ncontacts:" + text.split("\ncontacts:", 1)[1]
    (tmp_path / "connector.yaml").write_text(no_metrics)
    done = docker("run", "--rm", "--network", "host", "--label", LABEL,
                  "-v", f"{tmp_path / 'connector.yaml'}:/etc/connector/connector.yaml:ro",
                  "-e", "DATABASE_URL=postgresql+psycopg://u:p@127.0.0.1:1/x",
                  "-e", "WIRAYA_API_KEY=k", "--entrypoint", "connector-healthcheck", image,
                  check=False)
    assert done.returncode == 1
    assert "no metrics: section" in done.stdout


@pytest.mark.docker
@pytest.mark.slow
def test_a_code_change_rebuilds_without_reinstalling_the_dependencies(
        image: str, tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    for item in ("pyproject.toml", "README.md", ".dockerignore"):
        shutil.copy2(ROOT / item, context / item)
    for folder in ("connector", "docker"):
        shutil.copytree(ROOT / folder, context / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    with (context / "connector" / "__init__.py").open("a") as init:
        init.write(f"# a one-line change, new on every run: {uuid.uuid4().hex}\n")
    output = _build(context, "wiraya-connector:test-change", base_image())
    assert _cached(output, DEPS_STEP), output[-3000:]
    assert _cached(output, DEPS_COPY), output[-3000:]
    assert not _cached(output, CODE_STEP), output[-3000:]  # the change itself was built
    docker("rmi", "wiraya-connector:test-change", check=False)


# --- compose, run for real with the compose that is here ------------------------------------

class _Forwarder:
    """TCP from one address to another, in threads: lets the compose network reach the test
    PostgreSQL, which listens on 127.0.0.1 only, through the bridge's gateway address."""

    def __init__(self, listen_host: str, target: tuple[str, int]) -> None:
        self.server = socket.create_server((listen_host, 0))
        self.port = int(self.server.getsockname()[1])
        self.target = target
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()


COMPOSE_OVERRIDE = """
# The test's changes: the base made here, and a stand-in for postgres:16 (no registry here)
# whose name the connector resolves; the real database is the test's, reached through the
# bridge gateway.
services:
  postgres:
    image: wiraya-connector:local
    pull_policy: never
    entrypoint: ["sleep", "infinity"]
    healthcheck: {{test: ["CMD", "true"], interval: 1s}}
  sandbox:
    build:
      args: {{BASE: "{base}"}}
      network: host
    healthcheck: {{interval: 3s}}
  connector:
    environment:
      DATABASE_URL: "{database_url}"
    healthcheck: {{interval: 1s}}
"""


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose (Debian's 1.29) is not installed; .ci/run installs it")
def test_compose_builds_once_starts_in_order_and_delivers(
        engine: Engine, db: Database, tmp_path: Path) -> None:
    _sample_shop(db)
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 9464)) == 0:
            pytest.skip("port 9464 is taken on this machine; compose.yaml publishes it")
    project = f"cx{uuid.uuid4().hex[:8]}"
    override = tmp_path / "override.yaml"

    def compose(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker-compose", "-p", project, "-f",
                               str(DOCKER / "compose.yaml"), "-f", str(override), *args],
                              capture_output=True, text=True, timeout=timeout, check=False)

    override.write_text(COMPOSE_OVERRIDE.format(base=base_image(), database_url="x"))
    created = compose("up", "--no-start", "--build")
    forwarder = None
    try:
        assert created.returncode == 0, created.stdout[-3000:] + created.stderr[-3000:]
        assert created.stdout.count("Successfully built") == 1  # one image for both
        network = json.loads(docker("network", "inspect", f"{project}_default").stdout)[0]
        gateway = network["IPAM"]["Config"][0]["Gateway"]
        forwarder = _Forwarder(gateway, ("127.0.0.1", db.server.port))
        url = db.url.replace(f"127.0.0.1:{db.server.port}", f"{gateway}:{forwarder.port}")
        override.write_text(COMPOSE_OVERRIDE.format(base=base_image(), database_url=url))
        started = compose("up", "-d")
        assert started.returncode == 0, started.stdout + started.stderr
        # depends_on service_healthy: the connector starts only once the sandbox answered
        # its first health check (3 s after its start; the stand-in postgres's takes 1 s).
        gap = _started_at(compose("ps", "-q", "connector").stdout.strip()) \
            - _started_at(compose("ps", "-q", "sandbox").stdout.strip())
        assert gap >= 2.5, (gap, started.stderr)

        deadline = time.monotonic() + 120
        contacts = 0
        while time.monotonic() < deadline and contacts < 1000:
            shown = compose("exec", "-T", "sandbox", "python3", "-c",
                            "import json, urllib.request; print(len(json.load(urllib.request"
                            ".urlopen('http://127.0.0.1:8900/_sandbox/contacts'))))")
            contacts = int(shown.stdout.strip() or 0) if shown.returncode == 0 else 0
            time.sleep(1)
        assert contacts == 1000, compose("logs", "--tail", "20", "connector").stdout
        name = compose("ps", "-q", "connector").stdout.strip()
        assert _wait_for_health(name, timeout=60) == "healthy", _health_log(name)
        with urllib.request.urlopen("http://127.0.0.1:9464/healthz", timeout=5) as reply:
            assert json.load(reply)["status"] == "ok"  # published on the host's loopback
    finally:
        compose("down", "-v", "--rmi", "local", timeout=300)
        if forwarder is not None:
            forwarder.close()
