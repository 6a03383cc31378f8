"""The broker's jar cache: resolved once from Maven Central with ``deploy/kafka/pom.xml``."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from monitor.broker.errors import BrokerError, _now, _tail

__all__ = ["KAFKA_DEPLOY_DIR", "MARKER", "default_lib_dir", "ensure_jars"]

#: ``deploy/kafka`` of the repo checkout (holds pom.xml, log4j2.properties and the default jar cache).
KAFKA_DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
MARKER = ".complete.json"


def default_lib_dir() -> Path:
    """The jar cache: ``$MONITOR_KAFKA_LIB``, else ``deploy/kafka/lib`` in the repo checkout,
    else ``~/.cache/monitor/kafka-lib``."""
    env = os.environ.get("MONITOR_KAFKA_LIB")
    if env:
        return Path(env).expanduser().resolve()
    if (KAFKA_DEPLOY_DIR / "pom.xml").is_file():
        return KAFKA_DEPLOY_DIR / "lib"
    return Path.home() / ".cache" / "monitor" / "kafka-lib"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_complete(lib: Path, pom: Path | None) -> bool:
    """True when ``lib`` holds a finished copy (marker present) made from this pom (same hash)."""
    try:
        marker = json.loads((lib / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return pom is None or not pom.is_file() or marker.get("pom_sha256") == _sha256(pom)


def ensure_jars(lib_dir: Path | None = None, pom: Path | None = None, *, mvn: str = "mvn") -> Path:
    """Return a jar dir holding the complete broker runtime, resolving it with Maven if needed.

    The cache counts as complete only when its marker file exists and records the hash of
    ``pom``: Maven copies into a temporary sibling dir, the marker is written last and the
    dir is renamed into place, so an interrupted copy is redone rather than half-used. A
    file lock serialises concurrent callers (parallel test sessions).
    """
    lib = (lib_dir or default_lib_dir()).resolve()
    pom = (pom or KAFKA_DEPLOY_DIR / "pom.xml").resolve()
    if _cache_complete(lib, pom):
        return lib
    if not pom.is_file():
        raise BrokerError(f"no complete Kafka jar cache in {lib} and no pom to resolve it from ({pom})")
    mvn_path = shutil.which(mvn)
    if mvn_path is None:
        raise BrokerError(f"`{mvn}` not found on PATH: Maven is needed once to resolve the Kafka jars "
                          f"from {pom} (e.g. apt-get install maven), or set MONITOR_KAFKA_LIB")
    lib.parent.mkdir(parents=True, exist_ok=True)
    with open(lib.parent / f".{lib.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _cache_complete(lib, pom):  # another process finished while we waited
            return lib
        tmp = Path(tempfile.mkdtemp(prefix=f".{lib.name}.", dir=lib.parent))
        try:
            cmd = [mvn_path, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
                   "-DincludeScope=runtime", f"-DoutputDirectory={tmp}"]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            jars = sorted(p.name for p in tmp.glob("*.jar"))
            if proc.returncode != 0 or not jars:
                out = _tail((proc.stdout + proc.stderr).splitlines())
                raise BrokerError(f"Maven could not resolve the Kafka jars (exit {proc.returncode}):\n{out}")
            (tmp / MARKER).write_text(json.dumps(
                {"pom_sha256": _sha256(pom), "jars": len(jars), "completed_at": _now()}, indent=1))
            tmp.chmod(0o755)  # mkdtemp makes it private
            shutil.rmtree(lib, ignore_errors=True)
            tmp.rename(lib)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return lib
