"""deploy/: the Prometheus alert rules and the systemd unit, checked by the tools that load them
(promtool, systemd-analyze) where they are installed (.ci/run installs both), and the rules'
metric names against what connector/metrics.py exports."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from connector import metrics

DEPLOY = Path(__file__).parent.parent / "deploy"


def _exported_names() -> set[str]:
    names = set()
    for family in metrics.REGISTRY.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"],
                    "gauge": [""], "info": ["_info"]}.get(family.type, [""])
        names |= {family.name + suffix for suffix in suffixes}
    return names


def test_every_metric_the_alerts_use_is_one_the_connector_exports() -> None:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"][0]["rules"]
    used = {name for rule in rules for name in re.findall(r"\bconnector_[a-z_]+", rule["expr"])}
    assert used, "no connector_ metric in the rules"
    unknown = used - _exported_names()
    assert not unknown, f"not exported by connector/metrics.py: {sorted(unknown)}"
    titles = {rule["alert"] for rule in rules}
    assert {"ConnectorStreamFailing", "ConnectorLagHigh", "ConnectorDeadLettersGrowing",
            "ConnectorRateLimited", "ConnectorRateLimitHold"} <= titles


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: apt-get "
                    "install prometheus; .ci/run does)")
def test_promtool_accepts_the_alert_rules() -> None:
    done = subprocess.run([str(PROMTOOL), "check", "rules", str(DEPLOY / "alerts.yml")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


UNIT_TEST = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'connector_stream_consecutive_failures{{instance="c", stream="orders"}}'
        values: '0+1x40'
      - series: 'connector_stream_consecutive_failures{{instance="c", stream="customers"}}'
        values: '0x40'
      - series: 'connector_api_hold_seconds{{instance="c"}}'
        values: '0x5 600-1x30'
      - series: 'connector_dead_letters{{instance="c", stream="customers"}}'
        values: '20+1x100'
      - series: 'connector_api_rate_limited_total{{instance="c"}}'
        values: '0+5x40'
    alert_rule_test:
      - eval_time: 35m
        alertname: ConnectorStreamFailing
        exp_alerts:
          - exp_labels: {{severity: critical, instance: c, stream: orders}}
      - eval_time: 100m
        alertname: ConnectorDeadLettersGrowing
        exp_alerts:
          - exp_labels: {{severity: warning, instance: c, stream: customers}}
      - eval_time: 35m
        alertname: ConnectorRateLimited
        exp_alerts:
          - exp_labels: {{severity: warning, instance: c}}
      - eval_time: 20m
        alertname: ConnectorRateLimitHold
        exp_alerts:
          - exp_labels: {{severity: warning, instance: c}}
      - eval_time: 10m
        alertname: ConnectorRateLimitHold
        exp_alerts: []
"""


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: apt-get "
                    "install prometheus; .ci/run does)")
def test_the_alerts_fire_on_series_shaped_like_the_connector_s(tmp_path: Path) -> None:
    """A failing stream (and only it), growing dead letters, steady 429s and a long hold each
    fire; a hold younger than 10 minutes does not.
    The rules are taken without their annotations, which promtool would compare too."""
    document = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    for rule in document["groups"][0]["rules"]:
        rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(document))
    (tmp_path / "alerts_test.yml").write_text(UNIT_TEST.format(rules=tmp_path / "alerts.yml"))
    done = subprocess.run([str(PROMTOOL), "test", "rules", str(tmp_path / "alerts_test.yml")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (Debian: the systemd package)")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` with ExecStart pointed at this machine's `connector`, since
    /opt/connector is where the unit's install steps put it, not where the tests run."""
    connector = shutil.which("connector") or str(Path(sys.executable).parent / "connector")
    text = (DEPLOY / "connector.service").read_text()
    assert "ExecStart=/opt/connector/bin/connector " in text
    unit = tmp_path / "connector.service"
    unit.write_text(text.replace("/opt/connector/bin/connector", connector))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr.strip() == "", done.stderr  # unknown keys are only warnings
    settings = dict(line.split("=", 1) for line in text.splitlines()
                    if "=" in line and not line.startswith("#"))
    assert settings["User"] == "connector" and settings["StateDirectory"] == "connector"
    assert settings["Restart"] == "on-failure"
