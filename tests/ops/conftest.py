"""Fixtures for the operations tests: a real Prometheus server and a real metrics exporter.

``prometheus_server(targets) -> url`` starts a real ``prometheus`` binary on a free loopback
port, with the project's own scrape config (deploy/prometheus/prometheus.yml) and rules, the
``monitor`` job's targets replaced by ``targets`` and a 1 s scrape/evaluation interval; it waits
for ``/-/ready`` and stops every server it started at the end of the session. ``promql(url)``
gives a small client of the HTTP API (instant queries, waiting for a value). ``metrics_exporter()``
serves a fresh ``monitor.metrics.Metrics`` registry over HTTP through ``monitor.metrics.serve``.
``metric_families`` / ``metric_names`` are the sample names ``Metrics`` can export, for
cross-checking the names used in rules and dashboard queries.

To point Prometheus at a running daemon instead: ``url = prometheus_server(["127.0.0.1:9108"])``,
then ``promql(url).wait_for_value("monitor_messages_published_total", n)``.

Without the ``prometheus`` binary (``scripts/install-prometheus.sh`` installs it) the tests
that need it are skipped with that reason.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from monitor.metrics import Metrics, serve

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
SCRAPE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES_DIR = PROMETHEUS_DIR / "rules"
NOT_INSTALLED = "Prometheus is not installed (run scripts/install-prometheus.sh)"


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape_config_for(targets: list[str], interval: str = "1s") -> dict[str, Any]:
    """The project's scrape config with the ``monitor`` targets replaced and absolute rule paths."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text(encoding="utf-8"))
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    config["rule_files"] = [str(PROMETHEUS_DIR / pattern) for pattern in config["rule_files"]]
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == "monitor"]
    assert len(jobs) == 1, "deploy/prometheus/prometheus.yml must have exactly one job named 'monitor'"
    jobs[0]["static_configs"] = [{"targets": list(targets)}]
    config["scrape_configs"] = jobs
    return config


class PromQL:
    """Just enough of the Prometheus HTTP API for the tests (instant queries, label values, rules)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as err:  # 400/422 carry the PromQL error as JSON
            body = json.load(err)
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; returns the result list (a scalar comes back as one sample without labels)."""
        data = self.get("/api/v1/query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def value(self, expr: str) -> float:
        """The value of a query that must return exactly one sample."""
        result = self.query(expr)
        assert len(result) == 1, f"{expr}: expected one sample, got {result}"
        return float(result[0]["value"][1])

    def wait_for(self, expr: str, predicate: Callable[[list[dict[str, Any]]], bool],
                 timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll ``expr`` until ``predicate(result)`` holds; fail with the last result after ``timeout``."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout}s waiting on {expr!r}; last result {result}")

    def wait_for_value(self, expr: str, expected: float, timeout: float = 30.0) -> None:
        """Wait until the single sample of ``expr`` equals ``expected``."""
        self.wait_for(expr, lambda r: len(r) == 1 and math.isclose(float(r[0]["value"][1]), expected),
                      timeout)


@dataclass
class _Server:
    process: subprocess.Popen[bytes]
    log: Path


def _stop(server: _Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=5)


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[list[str]], str]]:
    """``start(targets: list[str]) -> url``: a real Prometheus scraping ``targets`` every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(NOT_INSTALLED)
    servers: list[_Server] = []

    def start(targets: list[str]) -> str:
        work = tmp_path_factory.mktemp("prometheus")
        config = work / "prometheus.yml"
        config.write_text(yaml.safe_dump(scrape_config_for(targets)), encoding="utf-8")
        port = free_port()
        log = work / "prometheus.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT, cwd=work,
            )
        server = _Server(process, log)
        servers.append(server)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {process.returncode}:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return url
            except OSError:
                pass
            if time.monotonic() > deadline:
                _stop(server)
                raise RuntimeError(f"prometheus on {url} not ready after 60 s:\n{_tail(log)}")
            time.sleep(0.2)

    yield start
    for server in servers:
        _stop(server)


@pytest.fixture(scope="session")
def promql() -> Callable[[str], PromQL]:
    """``promql(url) -> PromQL``: a client of the Prometheus HTTP API at ``url``."""
    return PromQL


@dataclass(frozen=True)
class Exporter:
    """A ``Metrics`` on its own registry, served on ``target`` (host:port) by ``monitor.metrics.serve``."""

    metrics: Metrics
    registry: CollectorRegistry
    target: str


@pytest.fixture(scope="session")
def metrics_exporter() -> Callable[[], Exporter]:
    """``make() -> Exporter``: serve a fresh registry on a free loopback port (daemon thread)."""

    def make() -> Exporter:
        registry = CollectorRegistry()
        metrics = Metrics(registry)
        port = free_port()
        serve("127.0.0.1", port, registry)
        return Exporter(metrics, registry, f"127.0.0.1:{port}")

    return make


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


@pytest.fixture(scope="session")
def metric_families() -> dict[str, frozenset[str]]:
    """Every metric family of ``Metrics`` with the sample names it can export, by family type.

    A labelled family exports no sample before its first ``labels(...)`` call, so the names are
    derived from the family name and type rather than from the (partly empty) samples.
    """
    registry = CollectorRegistry()
    Metrics(registry)
    return {family.name: frozenset(family.name + suffix for suffix in _SUFFIXES[family.type])
            for family in registry.collect()}


@pytest.fixture(scope="session")
def metric_names(metric_families: dict[str, frozenset[str]]) -> frozenset[str]:
    """Every sample name a ``Metrics`` registry can export (``_total``, ``_bucket``, ``_info``...)."""
    return frozenset().union(*metric_families.values())
