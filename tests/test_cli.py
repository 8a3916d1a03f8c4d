"""The `connector` command, run as a child process: exact messages and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from connector import config
from connector.sandbox import Sandbox
from tests.conftest import (
    API_KEY,
    CUSTOMERS,
    DB_PASSWORD,
    Database,
    add_customers,
    cli,
    customers_stream,
    dedent,
)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert API_KEY not in text
        assert DB_PASSWORD not in text


@pytest.mark.slow
def test_a_bad_config_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "connector.yaml"
    path.write_text(dedent("""
        source:
          url: ${NOT_SET_ANYWHERE}
        wiraya:
          base_url: http://api.wiraya.ai
          api_key: k
          concurency: 8
        contacts:
          customers:
            table: customers
            id: customer_id
            personal: {phoneNumber: mobile}
    """))
    result = cli("--config", str(path), "sync")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}: 4 problem(s)",
        "  source.url: environment variable NOT_SET_ANYWHERE is not set; export it, or write "
        "${NOT_SET_ANYWHERE:-default} to give a default",
        "  wiraya.base_url: the API must be reached over https:// (plain http:// is allowed "
        "only for a local sandbox on 127.0.0.1)",
        "  wiraya.concurency: unknown key; did you mean 'concurrency'?",
        "  contacts.customers.cursor: required; add it",
    ]


@pytest.mark.slow
def test_no_config_file_says_where_it_looked(tmp_path: Path) -> None:
    result = cli("status", cwd=tmp_path, env={"CONNECTOR_CONFIG": ""})
    assert result.returncode == 2
    assert "no config file at connector.yaml" in result.stderr
    assert "--config" in result.stderr and "$CONNECTOR_CONFIG" in result.stderr


@pytest.mark.slow
def test_sync_then_status(db: Database, api: Sandbox, write_config) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 30)
    path = write_config(contacts={"customers": customers_stream()})
    result = cli("--config", str(path), "sync")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("customers: 30 read, 30 sent, 0 skipped in ")
    assert_no_secret(result.stdout, result.stderr)

    status = cli("--config", str(path), "status", "--json")
    assert status.returncode == 0
    rows = json.loads(status.stdout)
    assert [row["stream"] for row in rows] == ["customers"]
    assert rows[0]["last_run"]["outcome"] == "ok"
    assert rows[0]["last_run"]["sent"] == 30
    assert rows[0]["delivered"] == 30
    assert rows[0]["dead"] == 0
    assert_no_secret(status.stdout)

    table = cli("--config", str(path), "status")
    assert table.returncode == 0
    assert "customers" in table.stdout and "ok" in table.stdout


@pytest.mark.slow
def test_check_reports_each_finding(db: Database, api: Sandbox, write_config) -> None:
    db.execute(CUSTOMERS)
    db.execute("CREATE TABLE orders (order_id int PRIMARY KEY, customer_id int, "
               "created_at timestamptz)")  # no index on the cursor
    path = write_config(contacts={"customers": customers_stream()},
                        events={"conversions": {"table": "orders", "id": "order_id",
                                                "contact": "customer_id",
                                                "cursor": "created_at"}})
    result = cli("--config", str(path), "check")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "ok   config: 1 contact stream(s), 1 event stream(s)"
    with db.connect() as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    assert lines[1] == f"ok   database: {version} at {config.load(path).source.display_url}"
    assert "ok   contacts.customers: public.customers (table), id customer_id, cursor " \
           "updated_at (timestamptz)" in lines
    assert any(line.startswith("warn events.conversions: no index starts with created_at")
               for line in lines)
    assert "ok   open-transaction guard: active (the role sees every session)" in lines
    assert lines[-3] == f"ok   Wiraya: logged in at {api.url}"
    assert lines[-1] == "0 problem(s), 2 warning(s)"
    assert_no_secret(result.stdout, result.stderr)


@pytest.mark.slow
def test_check_names_a_missing_column_and_a_refused_key(db: Database, api: Sandbox,
                                                        write_config) -> None:
    db.execute(CUSTOMERS)
    path = write_config(contacts={"customers": customers_stream(cursor="updatd_at")},
                        wiraya={"api_key": "not-the-key-123"})
    result = cli("--config", str(path), "check")
    assert result.returncode == 1
    assert ("FAIL contacts.customers: public.customers has no column 'updatd_at' "
            "(did you mean 'updated_at'?)") in result.stdout
    assert "FAIL Wiraya: Wiraya refused the API key (401" in result.stdout
    assert "not-the-key-123" not in result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "2 problem(s), 0 warning(s)"


@pytest.mark.slow
def test_failures_are_one_clear_line_and_never_show_secrets(db: Database, api: Sandbox,
                                                            write_config,
                                                            tmp_path: Path) -> None:
    db.execute(CUSTOMERS)
    add_customers(db, 1, 3)
    # A refused API key: the pass fails, exit code 2 (fix the config).
    path = write_config(contacts={"customers": customers_stream()},
                        wiraya={"api_key": "sk-live-0123456789abcdef"})
    result = cli("--config", str(path), "sync")
    assert result.returncode == 2
    assert "Wiraya refused the API key" in result.stdout + result.stderr
    assert "sk-live-0123456789abcdef" not in result.stdout + result.stderr

    # A wrong database password: exit 1, the password is not shown.
    document = yaml.safe_load(path.read_text())
    document["wiraya"]["api_key"] = API_KEY
    document["source"]["url"] = db.url.replace(DB_PASSWORD, "wrong-db-password-77")
    path.write_text(yaml.safe_dump(document))
    result = cli("--config", str(path), "sync")
    assert result.returncode == 1
    assert "password authentication failed" in result.stdout + result.stderr
    assert "wrong-db-password-77" not in result.stdout + result.stderr

    # A database that is not there at all.
    document["source"]["url"] = f"postgresql+psycopg://connector:{DB_PASSWORD}@127.0.0.1:1/x"
    path.write_text(yaml.safe_dump(document))
    result = cli("--config", str(path), "sync")
    assert result.returncode == 1
    assert "customers" in result.stderr and "refused" in result.stderr.lower()
    assert_no_secret(result.stdout, result.stderr)
    state = (tmp_path / "state" / "connector.db").read_bytes()
    assert API_KEY.encode() not in state and DB_PASSWORD.encode() not in state


@pytest.mark.slow
def test_unknown_stream_is_a_usage_error(db: Database, api: Sandbox, write_config) -> None:
    db.execute(CUSTOMERS)
    path = write_config(contacts={"customers": customers_stream()})
    result = cli("--config", str(path), "sync", "custmers")
    assert result.returncode == 2
    assert "custmers: no such stream (known: customers)" in result.stderr


@pytest.mark.slow
def test_the_demo_runs_with_nothing_set_up(tmp_path: Path) -> None:
    result = cli("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Pass 1: every row is new" in out and "Pass 2: only what changed is sent" in out
    first = out.split("Pass 1")[1].split("Changes")[0]
    second = out.split("Pass 2")[1].split("The sandbox received")[0]
    row = next(line for line in first.splitlines() if line.startswith("customers"))
    assert row.split()[1:4] == ["20", "19", "0"]  # read, sent, skipped
    row = next(line for line in second.splitlines() if line.startswith("customers"))
    assert row.split()[2] == "4"  # only the 4 changed contacts are sent again
    assert list(tmp_path.iterdir()) == []  # it left nothing behind
