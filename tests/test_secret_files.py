"""`${VAR}` read from the file `$VAR_FILE` names (Docker and systemd secrets), when VAR is
unset: the key reaches the settings without a trailing newline, VAR wins when both are set,
and a missing or empty file is a clear error that names the variable, never the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector import config
from connector.errors import ConfigError

TEXT = """
source: {url: "${DATABASE_URL}"}
wiraya: {api_key: "${WIRAYA_API_KEY}"}
contacts:
  c: {table: t, id: id, cursor: id, personal: {phoneNumber: mobile}}
"""
DB = "postgresql+psycopg://u:pw-9d1e@127.0.0.1:5432/shop"


def test_the_key_and_the_database_url_come_from_files(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("k-from-file-41c2\n")
    (tmp_path / "db").write_text(DB)  # no newline at all: taken as written
    settings = config.parse(TEXT, env={"WIRAYA_API_KEY_FILE": str(tmp_path / "key"),
                                       "DATABASE_URL_FILE": str(tmp_path / "db")})
    assert settings.wiraya.api_key.get_secret_value() == "k-from-file-41c2"
    assert settings.source.url.get_secret_value() == DB


def test_only_one_trailing_newline_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("k-crlf\r\n")
    (tmp_path / "db").write_text(DB + "\n")
    settings = config.parse(TEXT, env={"WIRAYA_API_KEY_FILE": str(tmp_path / "key"),
                                       "DATABASE_URL_FILE": str(tmp_path / "db")})
    assert settings.wiraya.api_key.get_secret_value() == "k-crlf"
    (tmp_path / "key").write_text("k-two\n\n")
    settings = config.parse(TEXT, env={"WIRAYA_API_KEY_FILE": str(tmp_path / "key"),
                                       "DATABASE_URL_FILE": str(tmp_path / "db")})
    assert settings.wiraya.api_key.get_secret_value() == "k-two\n"

def test_the_variable_itself_wins_over_its_file(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("from-file\n")
    settings = config.parse(TEXT, env={"WIRAYA_API_KEY": "from-env",
                                       "WIRAYA_API_KEY_FILE": str(tmp_path / "key"),
                                       "DATABASE_URL": DB})
    assert settings.wiraya.api_key.get_secret_value() == "from-env"


def test_a_missing_file_names_the_variable_and_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError) as caught:
        config.parse(TEXT, env={"WIRAYA_API_KEY_FILE": str(missing), "DATABASE_URL": DB})
    text = str(caught.value)
    assert "wiraya.api_key" in text
    assert f"cannot read WIRAYA_API_KEY_FILE={missing}" in text
    assert "No such file" in text


def test_an_empty_file_is_an_error_not_an_empty_secret(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("\n")
    with pytest.raises(ConfigError) as caught:
        config.parse(TEXT, env={"WIRAYA_API_KEY_FILE": str(tmp_path / "key"),
                                "DATABASE_URL": DB})
    assert "names an empty file" in str(caught.value)


def test_a_file_variant_does_not_leak_its_value_into_errors(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("secret-7e2b\n")
    with pytest.raises(ConfigError) as caught:  # another problem: the stream has no table
        config.parse(TEXT.replace("table: t, ", ""),
                     env={"WIRAYA_API_KEY_FILE": str(tmp_path / "key"), "DATABASE_URL": DB})
    assert "secret-7e2b" not in str(caught.value)
    assert "contacts.c.table" in str(caught.value)
