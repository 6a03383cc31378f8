"""Configuration: file + environment overrides, validated with the key named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.config import ConfigError, describe_keys, load_config


def test_defaults_load_without_a_file() -> None:
    cfg = load_config(None, env={})
    assert cfg.kafka.input_topics == ("news", "comments")
    assert cfg.metrics.port == 9108


def test_file_then_env_override(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("kafka:\n  input_topics: [a, b, c]\n  group_id: g1\nbatch:\n  max_batch: 8\n")
    cfg = load_config(path, env={"MONITOR__BATCH__MAX_BATCH": "16", "MONITOR__KAFKA__INPUT_TOPICS": "x,y"})
    assert cfg.batch.max_batch == 16
    assert cfg.kafka.input_topics == ("x", "y")
    assert cfg.kafka.group_id == "g1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kafka:\n  bootstrap: x\n", "kafka.bootstrap: unknown key"),
        ("kafak:\n  group_id: x\n", "kafak: unknown section"),
        ("batch:\n  max_batch: many\n", "batch.max_batch: expected an integer"),
        ("batch:\n  max_wait_ms: -1\n", "batch.max_wait_ms: must be >= 0"),
        ("alerts:\n  ratio: 0.5\n", "alerts.ratio: must be >= 1"),
        ("model:\n  device: tpu\n", "model.device: unknown device 'tpu'"),
        ("kafka:\n  security_protocol: TLS\n", "kafka.security_protocol: unknown protocol"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
)
def test_invalid_settings_are_rejected_with_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(path, env={})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", env={})


def test_secrets_are_redacted() -> None:
    cfg = load_config(
        None, env={"MONITOR__KAFKA__SASL_PLAIN_PASSWORD": "hunter2", "MONITOR__KAFKA__SECURITY_PROTOCOL": "SASL_SSL"}
    )
    assert cfg.kafka.client_options()["sasl_plain_password"] == "hunter2"
    assert "hunter2" not in repr(cfg.redacted())


def test_every_key_is_documented() -> None:
    rows = describe_keys()
    assert len(rows) > 40
    assert all(doc for _, _, doc in rows), [key for key, _, doc in rows if not doc]


def test_readme_documents_every_key_and_metric() -> None:
    from pathlib import Path

    from prometheus_client import CollectorRegistry

    from monitor.metrics import Metrics

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    missing = [key for key, _, _ in describe_keys() if f"`{key}`" not in readme]
    assert not missing, f"README lacks config keys: {missing}"
    registry = CollectorRegistry()
    Metrics(registry)
    names = {fam.name + ("_total" if fam.type == "counter" else "_info" if fam.type == "info" else "")
             for fam in registry.collect()}
    assert not [n for n in names if f"`{n}`" not in readme], "README lacks metrics"
