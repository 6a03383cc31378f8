"""monitor.broker without Java: server.properties, ports, the state file, the jar-cache marker."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
from pathlib import Path

import pytest

from monitor import broker as mb
from monitor.broker import Broker, BrokerConfig, BrokerError, BrokerState


def _props(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_server_properties_single_node_kraft_on_loopback(tmp_path: Path) -> None:
    config = BrokerConfig(data_dir=tmp_path, num_partitions=3, extra_properties={"log.retention.hours": "1"})
    props = _props(mb.server_properties(config, 19092, 19093, tmp_path / "kraft"))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == str(tmp_path / "kraft")
    assert props["num.partitions"] == "3"
    assert props["auto.create.topics.enable"] == "false"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
        "offsets.topic.num.partitions",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.cleaner.dedupe.buffer.size"] == "2097152"
    assert props["log.retention.hours"] == "1"


def test_extra_properties_override_defaults(tmp_path: Path) -> None:
    config = BrokerConfig(data_dir=tmp_path, extra_properties={"auto.create.topics.enable": "true"})
    text = mb.server_properties(config, 1, 2, tmp_path)
    assert _props(text)["auto.create.topics.enable"] == "true"
    assert text.count("auto.create.topics.enable") == 1


def test_cluster_id_is_22_char_urlsafe_base64() -> None:
    ids = {mb.new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(
        len(i) == 22 and set(i) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") for i in ids
    )


def test_free_port_is_bindable_and_taken_port_is_detected() -> None:
    port = mb.find_free_port()
    assert 0 < port < 65536
    assert not mb.port_in_use("127.0.0.1", port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert mb.port_in_use("127.0.0.1", port)


def test_taken_port_fails_before_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no java, no mvn: the port check must come first
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(BrokerError, match=rf"port {port} on 127\.0\.0\.1 is already in use"):
            Broker(BrokerConfig(data_dir=tmp_path / "d", controller_port=port)).start()


def test_same_client_and_controller_port_rejected(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="both 40000"):
        Broker(BrokerConfig(data_dir=tmp_path, port=40000, controller_port=40000)).start()


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(BrokerError, match="`java` not found"):
        Broker(BrokerConfig(data_dir=tmp_path / "d")).start()


def _state(pid: int) -> dict[str, object]:
    return {
        "pid": pid,
        "host": "127.0.0.1",
        "port": 9092,
        "controller_port": 9093,
        "cluster_id": "x",
        "started_at": "t",
        "log_file": "l",
    }


def test_state_file_of_a_dead_or_foreign_process_is_ignored(tmp_path: Path) -> None:
    assert mb.read_state(tmp_path) is None
    (tmp_path / mb.STATE_FILE).write_text(json.dumps(_state(os.getpid())))  # alive, but not a broker
    assert mb.read_state(tmp_path) is None
    (tmp_path / mb.STATE_FILE).write_text("{not json")
    assert mb.read_state(tmp_path) is None
    assert mb.stop_broker(tmp_path) is None
    assert not (tmp_path / mb.STATE_FILE).exists()  # a stale state file is cleaned up


def test_state_bootstrap() -> None:
    assert BrokerState(**_state(1)).bootstrap == "127.0.0.1:9092"  # type: ignore[arg-type]


def _fake_mvn(tmp_path: Path, body: str) -> Path:
    """An executable named ``mvn`` that copies one jar into -DoutputDirectory (or fails)."""
    script = tmp_path / "bin" / "mvn"
    script.parent.mkdir(exist_ok=True)
    script.write_text(
        f"#!{sys.executable}\nimport sys, pathlib\n"
        "out = pathlib.Path(next(a.split('=', 1)[1] for a in sys.argv "
        "if a.startswith('-DoutputDirectory=')))\n"
        "calls = pathlib.Path(__file__).with_name('calls')\n"
        "calls.write_text(calls.read_text() + 'x' if calls.exists() else 'x')\n" + body
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_jar_cache_resolves_once_then_reuses(tmp_path: Path) -> None:
    mvn = _fake_mvn(tmp_path, "(out / 'kafka.jar').write_text('jar')\n")
    pom, lib = tmp_path / "pom.xml", tmp_path / "lib"
    pom.write_text("<project/>")
    assert mb.ensure_jars(lib, pom, mvn=str(mvn)) == lib.resolve()
    assert (lib / "kafka.jar").exists() and (lib / mb.MARKER).exists()
    mb.ensure_jars(lib, pom, mvn=str(mvn))
    assert (mvn.parent / "calls").read_text() == "x"  # second call used the cache
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".lib.") and p.is_dir()]


def test_jar_cache_without_marker_or_with_other_pom_is_redone(tmp_path: Path) -> None:
    mvn = _fake_mvn(tmp_path, "(out / 'kafka-2.jar').write_text('jar')\n")
    pom, lib = tmp_path / "pom.xml", tmp_path / "lib"
    pom.write_text("<project/>")
    lib.mkdir()
    (lib / "half-copied.jar").write_text("")  # an interrupted copy: jars but no marker
    mb.ensure_jars(lib, pom, mvn=str(mvn))
    assert sorted(p.name for p in lib.glob("*.jar")) == ["kafka-2.jar"]  # stale jars are gone
    pom.write_text("<project><!-- new version --></project>")
    mb.ensure_jars(lib, pom, mvn=str(mvn))
    assert (mvn.parent / "calls").read_text() == "xx"


def test_failed_maven_leaves_no_cache_and_says_why(tmp_path: Path) -> None:
    mvn = _fake_mvn(tmp_path, "print('Could not resolve org.apache.kafka:kafka_2.13'); sys.exit(1)\n")
    pom, lib = tmp_path / "pom.xml", tmp_path / "lib"
    pom.write_text("<project/>")
    with pytest.raises(BrokerError, match=r"Could not resolve org\.apache\.kafka"):
        mb.ensure_jars(lib, pom, mvn=str(mvn))
    assert not lib.exists()


def test_missing_maven_is_a_clear_error(tmp_path: Path) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text("<project/>")
    with pytest.raises(BrokerError, match="not found on PATH"):
        mb.ensure_jars(tmp_path / "lib", pom, mvn=str(tmp_path / "no-such-mvn"))


def test_lib_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITOR_KAFKA_LIB", str(tmp_path))
    assert mb.default_lib_dir() == tmp_path.resolve()
    monkeypatch.delenv("MONITOR_KAFKA_LIB")
    assert mb.default_lib_dir() == mb.KAFKA_DEPLOY_DIR / "lib"  # the repo checkout is here


def _run_cli(*argv: str) -> int:
    """``monitor broker ...`` through this command's own parser (no other command modules imported)."""
    import argparse

    from monitor.commands import broker as command

    parser = argparse.ArgumentParser(prog="monitor")
    command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["broker", *argv])
    code: int = args.func(args)
    return code


def test_cli_without_a_broker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_cli("status", "--data-dir", str(tmp_path)) == 3
    assert "not running" in capsys.readouterr().out
    assert _run_cli("stop", "--data-dir", str(tmp_path)) == 0
    assert "no broker running" in capsys.readouterr().out
    assert _run_cli("create-topics", "--data-dir", str(tmp_path), "news") == 1
    assert "pass --bootstrap" in capsys.readouterr().err
