"""The Prometheus config and alerting rules: promtool checks and unit tests, metric names, runbooks."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
CONFIGS = [PROM / "prometheus.yml", PROM / "prometheus.compose.yml"]
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))
RUNBOOK = ROOT / "docs" / "operations.md"
SEVERITIES = {"critical", "warning", "info"}
METRIC = re.compile(r"(?<![\w:])monitor_[a-z0-9_]+")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (run scripts/install-prometheus.sh)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, check=False)


def rules() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            out.extend(group["rules"])
    return out


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub generates for the headings of ``markdown``."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_files_exist() -> None:
    assert RULE_FILES, "no rule files in deploy/prometheus/rules"
    assert RULE_TESTS, "no promtool tests in deploy/prometheus/tests"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_promtool_check_config(config: Path) -> None:
    result = promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_test_rules() -> None:
    """Every alert fires on the series meant to trigger it and stays quiet on the others."""
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"
    assert (firing | quiet) - names == set(), "tests name alerts that do not exist"


def test_rules_use_only_metrics_the_monitor_exports(metric_names: frozenset[str]) -> None:
    used = {name for rule in rules() for name in METRIC.findall(rule["expr"])}
    assert len(used) >= 10, f"suspiciously few metric names found: {sorted(used)}"
    assert used - metric_names == set(), f"unknown metric names (known: {sorted(metric_names)})"


def test_alerts_have_severity_annotations_and_a_runbook_paragraph() -> None:
    anchors = github_anchors(RUNBOOK.read_text(encoding="utf-8"))
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in SEVERITIES, name
        annotations = alert["annotations"]
        assert annotations.get("summary") and annotations.get("description"), name
        url = annotations["runbook_url"]
        assert url == f"docs/operations.md#{name.lower()}", f"{name}: runbook_url {url}"
        assert name.lower() in anchors, f"{name}: no heading '{name}' in docs/operations.md"


def test_compose_config_differs_only_in_how_monitor_targets_are_found() -> None:
    host, compose = (yaml.safe_load(p.read_text(encoding="utf-8")) for p in CONFIGS)
    host_job, compose_job = host["scrape_configs"][0], compose["scrape_configs"][0]
    assert host_job.pop("static_configs") == [{"targets": ["localhost:9108"]}]
    # the all-in-one compose service and the scale-out roles
    assert compose_job.pop("dns_sd_configs")[0]["names"] == ["monitor", "serve", "analytics", "learn"]
    assert host == compose


def test_only_input_stopped_while_the_market_is_open_or_growing_lag_pages() -> None:
    """A desk's pager: critical alerts need the market open (monitor:market_open, not negated) or a lag
    that grows; each of those has a warning twin for quiet hours, except the lag."""
    critical = [a for a in alerts() if a["labels"]["severity"] == "critical"]
    assert {a["alert"] for a in critical} == {"MonitorTargetDown", "MonitorNoMessagesConsumed",
                                              "MonitorBrokerUnreachable", "MonitorConsumerLagGrowing"}
    for alert in critical:
        expr = " ".join(alert["expr"].split())
        gated = "and on () monitor:market_open" in expr and "unless on () monitor:market_open" not in expr
        assert gated or "deriv(monitor_consumer_lag_messages" in expr, alert["alert"]
    for name in ("MonitorTargetDown", "MonitorNoMessagesConsumed", "MonitorBrokerUnreachable"):
        twins = {a["labels"]["severity"]: " ".join(a["expr"].split()) for a in alerts() if a["alert"] == name}
        assert set(twins) == {"critical", "warning"}, name
        assert twins["warning"].replace("unless on () monitor:market_open", "and on () monitor:market_open") == \
            twins["critical"], f"{name}: the two rules must differ only in the market-hours term"
