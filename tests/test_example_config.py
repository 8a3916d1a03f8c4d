"""The example config in config/ is loaded as users would load it, so it never rots."""

from __future__ import annotations

from pathlib import Path

from connector import config

EXAMPLE = Path(__file__).parent.parent / "config" / "connector.example.yaml"


def test_the_example_config_is_valid() -> None:
    settings = config.load(EXAMPLE, env={})
    assert list(settings.contacts) == ["customers"]
    assert list(settings.events) == ["conversions", "opt_outs"]
    customers = settings.contacts["customers"]
    assert customers.personal["phoneNumber"].region == "SE"
    assert customers.links[0].iteration is not None
    assert customers.links[0].iteration.format == "%Y-%m"
    assert settings.events["opt_outs"].lookback == 1000
    assert settings.state == EXAMPLE.parent / "state" / "connector.db"
    assert settings.wiraya.rate_limit == 50.0
    assert settings.wiraya.api_key.get_secret_value() == "sandbox-key"


def test_the_example_config_takes_secrets_from_the_environment() -> None:
    settings = config.load(EXAMPLE, env={"WIRAYA_API_KEY": "from-env",
                                         "DATABASE_URL": "sqlite:///x.db"})
    assert settings.wiraya.api_key.get_secret_value() == "from-env"
    assert settings.source.display_url == "sqlite:///x.db"


def test_the_example_shipped_in_the_package_is_the_one_in_config() -> None:
    # `connector init --example` prints the packaged copy (the wheel has no config/ folder);
    # edit config/connector.example.yaml and copy it to connector/examples/.
    packaged = Path(__file__).parent.parent / "connector" / "examples" / EXAMPLE.name
    assert packaged.read_bytes() == EXAMPLE.read_bytes()
