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


@pytest.mark.parametrize("value", ["0123", "12:30", "abc #def", "~", "a: b", "[1, 2]", "null", "yes", " x "])
def test_environment_strings_stay_strings(value: str) -> None:
    cfg = load_config(None, env={"MONITOR__KAFKA__SASL_PLAIN_PASSWORD": value, "MONITOR__KAFKA__GROUP_ID": value})
    assert cfg.kafka.client_options()["sasl_plain_password"] == value
    assert cfg.kafka.group_id == value


def test_environment_values_convert_to_the_field_type() -> None:
    cfg = load_config(None, env={"MONITOR__LOGGING__JSON": "true", "MONITOR__METRICS__WINDOWS_SECONDS": "60, 120",
                                 "MONITOR__ALERTS__RATIO": "3", "MONITOR__KAFKA__REPLICATION_FACTOR": "",
                                 "MONITOR__LEARNING__SETTINGS__DETECTOR": "KSWIN"})
    assert cfg.logging.json is True and cfg.metrics.windows_seconds == (60, 120) and cfg.alerts.ratio == 3.0
    assert cfg.kafka.replication_factor is None
    assert cfg.learning.settings == {"detector": "KSWIN"}
    assert load_config(None, env={"MONITOR__KAFKA__REPLICATION_FACTOR": "3"}).kafka.replication_factor == 3
    # A mapping from the environment is a JSON object.
    cfg = load_config(None, env={"MONITOR__LEARNING__SETTINGS": '{"detector": "KSWIN", "epochs": 3}'})
    assert cfg.learning.settings == {"detector": "KSWIN", "epochs": 3}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MONITOR__KAFKA__BOOTSTRAP": "x"}, "kafka.bootstrap: unknown key"),
        ({"MONITOR__KAFAK__GROUP_ID": "x"}, "MONITOR__KAFAK__GROUP_ID: unknown section 'kafak'"),
        ({"MONITOR__BATCH": "x"}, "expected MONITOR__<SECTION>__<KEY>"),
        ({"MONITOR__LOGGING__JSON": "maybe"}, "logging.json: expected true or false"),
        ({"MONITOR__KAFKA__REPLICATION_FACTOR": "0"}, "kafka.replication_factor: must be >= 1"),
        ({"MONITOR__BATCH__MAX_FUTURE_SKEW_S": "-1"}, "batch.max_future_skew_s: must be > 0"),
        ({"MONITOR__LEARNING__SETTINGS": "detector: KSWIN"}, "learning.settings: expected a mapping \\(a JSON"),
    ],
)
def test_invalid_environment_is_rejected_with_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, env=env)


@pytest.mark.parametrize("text", ["kafka:\n  sasl_plain_password: {a: s3cr3t}\n",
                                  "kafka:\n  ssl_password: [s3cr3t]\n"])
def test_a_secret_is_never_shown_in_an_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "password" in str(err.value) and "s3cr3t" not in str(err.value)
    assert "s3cr3t" not in repr(err.value) and err.value.__cause__ is None


def test_a_secret_is_never_shown_in_repr_or_check_config(capsys: pytest.CaptureFixture[str]) -> None:
    from monitor.cli import main

    cfg = load_config(None, env={"MONITOR__KAFKA__SSL_PASSWORD": "s3cr3t"})
    assert "s3cr3t" not in repr(cfg) and "s3cr3t" not in str(cfg.redacted())
    import os

    os.environ["MONITOR__KAFKA__SSL_PASSWORD"] = "s3cr3t"
    try:
        assert main(["run", "--check-config"]) == 0
    finally:
        del os.environ["MONITOR__KAFKA__SSL_PASSWORD"]
    out = capsys.readouterr()
    assert "s3cr3t" not in out.out + out.err and '"ssl_password": "***"' in out.out


def test_check_config_validates_learning_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from monitor.cli import main

    path = tmp_path / "c.yaml"
    path.write_text("learning:\n  settings:\n    methd: replay\n")
    assert main(["run", "--config", str(path), "--check-config"]) == 2
    assert "learning.settings.methd: unknown key" in capsys.readouterr().err


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
