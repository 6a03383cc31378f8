"""Deployment files that cannot run here (no Docker engine, no systemd as PID 1): static checks.

The systemd unit goes through ``systemd-analyze verify`` (unknown directives fail); the
Dockerfile and compose file are checked for the files they copy or mount and the settings the
runbook relies on.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "monitor.service"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
COMPOSE = DEPLOY / "docker" / "compose.yaml"


def test_systemd_unit_settings() -> None:
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read(UNIT)
    service = unit["Service"]
    assert service["ExecStart"].endswith("/monitor run --config /etc/monitor/monitor.yaml")
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["TimeoutStopSec"] == "60"
    assert service["User"] == "monitor" and service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict" and service["ReadWritePaths"] == "/var/lib/monitor"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # The venv of a host install does not exist here: verify the unit with a command that does.
    text = re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", UNIT.read_text(encoding="utf-8"), flags=re.M)
    copy = tmp_path / "monitor.service"
    copy.write_text(text, encoding="utf-8")
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_dockerfile_copies_existing_files_and_runs_as_non_root() -> None:
    lines = [ln.strip() for ln in DOCKERFILE.read_text(encoding="utf-8").splitlines()]
    assert "FROM python:3.11-slim AS build" in lines and "FROM python:3.11-slim" in lines
    for line in lines:
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["monitor"]' in lines and 'CMD ["run"]' in lines
    assert "EXPOSE 9108" in lines


def test_compose_services_mounts_and_build() -> None:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"kafka", "monitor", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    build = services["monitor"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    env = services["monitor"]["environment"]
    assert env["MONITOR__KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["MONITOR__METRICS__HOST"] == "0.0.0.0"
    assert "ports" not in services["monitor"], "a published port would prevent --scale"
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts missing {source}"
    prometheus_mounts = services["prometheus"]["volumes"]
    assert "../prometheus/prometheus.compose.yml:/etc/prometheus/prometheus.yml:ro" in prometheus_mounts
    assert "../prometheus/rules:/etc/prometheus/rules:ro" in prometheus_mounts
