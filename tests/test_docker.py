"""The Docker files: no engine runs on the test machines, so what can be checked without one
is checked here: the compose file and the config it mounts load, the image runs as non-root
with its state on a volume, and the SQL the database starts with is the one the config reads."""

from __future__ import annotations

from pathlib import Path

import yaml

from connector import config

DOCKER = Path(__file__).parent.parent / "docker"


def test_the_compose_config_loads_with_the_compose_environment() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "connector", "sandbox"}
    environment = {key: value for key, value in services["connector"]["environment"].items()}
    env = {key: value.replace("${WIRAYA_BASE_URL:-", "").replace("${WIRAYA_API_KEY:-", "")
           .rstrip("}") for key, value in environment.items()}
    settings = config.load(DOCKER / "connector.yaml", env=env)
    assert settings.wiraya.base_url == "http://127.0.0.1:8900"  # the sandbox, on loopback
    assert services["sandbox"]["network_mode"] == "service:connector"
    assert settings.metrics is not None
    assert settings.metrics.address == ("0.0.0.0", 9464)  # noqa: S104 - inside the container
    assert "127.0.0.1:9464:9464" in services["connector"]["ports"]
    assert str(settings.state).startswith("/var/lib/connector")
    assert "state:/var/lib/connector" in services["connector"]["volumes"]


def test_the_image_runs_as_a_user_with_state_on_a_volume() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "\nUSER connector\n" in dockerfile
    assert 'VOLUME ["/var/lib/connector"]' in dockerfile
    assert 'ENTRYPOINT ["connector"]' in dockerfile


def test_the_sample_schema_has_what_the_config_reads() -> None:
    sql = (DOCKER / "init.sql").read_text()
    settings = config.load(DOCKER / "connector.yaml",
                           env={"DATABASE_URL": "sqlite:///x.db", "WIRAYA_API_KEY": "k"})
    for name, stream in settings.streams.items():
        table = sql.split(f"CREATE TABLE {stream.table.name} (", 1)[1].split(");", 1)[0]
        for column in stream.columns():
            assert f"\n    {column} " in table, (name, column)
