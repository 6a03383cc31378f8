"""The broker process: KRaft properties, format, start, state file, stop."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from monitor.broker.admin import find_free_port, is_serving, port_in_use
from monitor.broker.errors import LOG_TAIL_LINES as _LOG_TAIL_LINES
from monitor.broker.errors import BrokerError, _now, _tail
from monitor.broker.jars import KAFKA_DEPLOY_DIR, ensure_jars

__all__ = [
    "LOG_FILE",
    "STATE_FILE",
    "Broker",
    "BrokerConfig",
    "BrokerState",
    "new_cluster_id",
    "read_state",
    "server_properties",
    "stop_broker",
]

STATE_FILE = "broker.json"
LOG_FILE = "broker.log"


@dataclass(frozen=True)
class BrokerConfig:
    """Settings of one local broker."""

    data_dir: Path
    """Where the broker keeps its config, KRaft data, log and state file."""
    host: str = "127.0.0.1"
    """Address both listeners bind to; loopback keeps the broker private to this machine."""
    port: int = 0
    """Client (PLAINTEXT) port; 0 picks a free one."""
    controller_port: int = 0
    """KRaft controller port; 0 picks a free one."""
    heap: str = "512m"
    """JVM maximum heap (-Xmx)."""
    start_timeout_s: float = 60.0
    """How long to wait for the broker to answer an admin request."""
    num_partitions: int = 1
    """Default partition count of topics created without an explicit count."""
    extra_properties: Mapping[str, str] = field(default_factory=dict)
    """Further server.properties entries; they override the defaults."""


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (as StorageTool makes).

    Like Kafka's ``Uuid.randomUuid``, never one that starts with "-": StorageTool's argument parser
    would take it for an option (``--cluster-id/-t: expected one argument``; 1 start in 64).

    >>> all(not new_cluster_id().startswith("-") and len(new_cluster_id()) == 22 for _ in range(500))
    True
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def server_properties(config: BrokerConfig, port: int, controller_port: int, log_dir: Path) -> str:
    """The server.properties text for a combined-mode single-node broker."""
    h = config.host
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # A static voter set: nothing about the controller address is baked in at format time.
        "controller.quorum.voters": f"1@{h}:{controller_port}",
        "listeners": f"PLAINTEXT://{h}:{port},CONTROLLER://{h}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{h}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": str(config.num_partitions),
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "share.coordinator.state.topic.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.cleaner.dedupe.buffer.size": "2097152",
    }
    props.update(config.extra_properties)
    lines = ["# Written by monitor.broker: single-node KRaft broker (combined mode)."]
    lines += [f"{k}={v}" for k, v in props.items()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class BrokerState:
    """What ``broker.json`` records about a running broker."""

    pid: int
    host: str
    port: int
    controller_port: int
    cluster_id: str
    started_at: str
    log_file: str

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


def _pid_alive(pid: int) -> bool:
    """True when ``pid`` is a live Kafka broker (not a zombie, not a recycled pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no procfs: trust kill(0)


def read_state(data_dir: Path) -> BrokerState | None:
    """The running broker of ``data_dir``, or None (no state file, or its process is gone)."""
    try:
        state = BrokerState(**json.loads((Path(data_dir) / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return state if _pid_alive(state.pid) else None


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise BrokerError("`java` not found (PATH or JAVA_HOME): the Kafka broker needs Java 17+ "
                          "(e.g. apt-get install openjdk-17-jre-headless)")
    return java


def _terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM (a clean shutdown), then SIGKILL if still alive after ``timeout_s``."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while _pid_alive(pid) and time.monotonic() < deadline:  # a zombie child counts as gone
            time.sleep(0.1)
        if not _pid_alive(pid):
            return


def stop_broker(data_dir: Path, timeout_s: float = 30.0) -> BrokerState | None:
    """Stop the broker recorded in ``data_dir`` (started detached); return its state, None if none ran."""
    state = read_state(data_dir)
    if state is not None:
        _terminate(state.pid, timeout_s)
    (Path(data_dir) / STATE_FILE).unlink(missing_ok=True)
    return state


class Broker:
    """One local Kafka broker process: ``start()`` returns once it answers, ``stop()`` shuts it down.

    ``detach=True`` (``monitor broker start``) puts the JVM in its own session so that it
    outlives this process; otherwise the JVM gets SIGTERM when this process dies (via
    ``setpriv --pdeathsig`` where available), so a crashed test run leaves no broker behind.
    Use it as a context manager in tests::

        with Broker(BrokerConfig(data_dir=tmp_path)) as broker:
            produce_to(broker.bootstrap)
    """

    def __init__(self, config: BrokerConfig, *, detach: bool = False, lib_dir: Path | None = None,
                 log4j_config: Path | None = None) -> None:
        self.config = config
        self.detach = detach
        self._lib_dir = lib_dir
        self._log4j = log4j_config or KAFKA_DEPLOY_DIR / "log4j2.properties"
        self._proc: subprocess.Popen[bytes] | None = None
        self._state: BrokerState | None = None
        self._startup_s: float | None = None

    # read-only views ---------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.config.data_dir.resolve()

    @property
    def state(self) -> BrokerState | None:
        """The state written to ``broker.json`` by the last start (None before it)."""
        return self._state

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients' ``bootstrap_servers``."""
        if self._state is None:
            raise BrokerError("the broker has not been started")
        return self._state.bootstrap

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def startup_seconds(self) -> float | None:
        """Wall time of the last start: format (if any) + JVM start until an admin request answered."""
        return self._startup_s

    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_FILE

    # verbs -------------------------------------------------------------------------------------
    def start(self) -> Broker:
        """Format the data dir if new, launch the JVM and wait until the broker answers.

        Raises :class:`BrokerError` when a broker already runs on this data dir, a port is
        taken, Java or the jars are missing, or the JVM exits or stays silent; the message
        carries the cause and the broker's last log lines.
        """
        if self.running:
            return self
        data = self.data_dir
        data.mkdir(parents=True, exist_ok=True)
        # One start at a time per data dir: a concurrent second start then sees the state file.
        with open(data / ".start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._start(data)
        return self

    def _start(self, data: Path) -> None:
        other = read_state(data)
        if other is not None:
            raise BrokerError(f"a broker is already running at {other.bootstrap} (pid {other.pid}); "
                              f"stop it with `monitor broker stop --data-dir {data}`")
        t0 = time.monotonic()
        port, cport = self._pick_ports()
        java = _java()
        lib = ensure_jars(self._lib_dir)
        log_dir = data / "kraft"
        props = data / "server.properties"
        props.write_text(server_properties(self.config, port, cport, log_dir))
        cluster_id = self._format(java, lib, props, log_dir)

        cmd = [java, f"-Xmx{self.config.heap}", "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError",
               "-Djava.awt.headless=true", "-cp", f"{lib}/*", "kafka.Kafka", str(props)]
        if self._log4j.is_file():
            cmd.insert(1, f"-Dlog4j2.configurationFile={self._log4j}")
        setpriv = shutil.which("setpriv")
        if not self.detach and setpriv:
            cmd = [setpriv, "--pdeathsig", "TERM", *cmd]
        with open(self.log_file, "ab") as log:
            log_offset = log.tell()
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, cwd=data,
                                          start_new_session=self.detach)
        self._state = BrokerState(pid=self._proc.pid, host=self.config.host, port=port,
                                  controller_port=cport, cluster_id=cluster_id, started_at=_now(),
                                  log_file=str(self.log_file))
        _write_json(data / STATE_FILE, asdict(self._state))
        try:
            self._wait_ready(t0 + self.config.start_timeout_s)
        except BaseException as exc:
            self.stop(timeout_s=10.0)
            if isinstance(exc, BrokerError):
                raise BrokerError(f"{exc}\n{self._log_tail(log_offset)}") from None
            raise
        self._startup_s = time.monotonic() - t0

    def stop(self, timeout_s: float = 30.0) -> None:
        """Shut the broker down cleanly (SIGTERM), killing it after ``timeout_s``; idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _terminate(proc.pid, timeout_s)
            proc.wait()
        self._proc = None
        state_file = self.data_dir / STATE_FILE
        with contextlib.suppress(OSError, ValueError):
            if json.loads(state_file.read_text()).get("pid") == proc.pid:
                state_file.unlink()

    def wait(self) -> int:
        """Block until the broker process exits (``--foreground``); return its exit code."""
        if self._proc is None:
            raise BrokerError("the broker has not been started")
        return self._proc.wait()

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # steps -------------------------------------------------------------------------------------
    def _pick_ports(self) -> tuple[int, int]:
        host, port, cport = self.config.host, self.config.port, self.config.controller_port
        if port and port == cport:
            raise BrokerError(f"the client port and the controller port are both {port}")
        for p in (port, cport):
            if p and port_in_use(host, p):
                raise BrokerError(f"port {p} on {host} is already in use")
        port = port or find_free_port(host)
        while not cport or cport == port:
            cport = find_free_port(host)
        return port, cport

    def _format(self, java: str, lib: Path, props: Path, log_dir: Path) -> str:
        """Format ``log_dir`` for KRaft unless it already is; return the cluster id."""
        meta = log_dir / "meta.properties"
        if meta.is_file():
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
        cluster_id = new_cluster_id()
        # Static voters (controller.quorum.voters), so no --standalone: ports are not baked in.
        cmd = [java, "-Xmx256m", "-cp", f"{lib}/*", "kafka.tools.StorageTool", "format",
               "-t", cluster_id, "-c", str(props)]
        if self._log4j.is_file():
            cmd.insert(1, f"-Dlog4j2.configurationFile={self._log4j}")
        out_path = self.data_dir / "format.log"
        with open(out_path, "wb") as out:
            rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                check=False).returncode
        if rc != 0:
            tail = _tail(out_path.read_text(errors="replace").splitlines())
            raise BrokerError(f"formatting {log_dir} failed (StorageTool exit {rc}):\n{tail}")
        return cluster_id

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None and self._state is not None
        host, port = self._state.host, self._state.port
        while True:
            rc = self._proc.poll()
            if rc is not None:
                raise BrokerError(f"the broker exited with code {rc} during start-up")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(f"the broker did not answer on {host}:{port} within "
                                  f"{self.config.start_timeout_s:g} s")
            if is_serving(self._state.bootstrap, min(remaining, 5.0)):
                return
            time.sleep(0.2)

    def _log_tail(self, offset: int) -> str:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(offset)
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            lines = []
        if not lines:
            return f"(nothing in {self.log_file} yet)"
        return f"--- last {min(len(lines), _LOG_TAIL_LINES)} lines of {self.log_file} ---\n{_tail(lines)}"


def _write_json(path: Path, body: dict[str, Any]) -> None:
    """Write ``body`` atomically (a reader never sees half a state file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=1) + "\n")
    tmp.replace(path)
