"""Typed, frozen settings: the only code that reads config files and environment variables.

A config file is YAML with one section per component (``kafka``, ``batch``, ``model``,
``metrics``, ``alerts``, ``learning``, ``logging``). Any key can be overridden from the
environment as ``MONITOR__<SECTION>__<KEY>``, e.g. ``MONITOR__KAFKA__BOOTSTRAP_SERVERS=broker:9092``.
Environment values are read by pydantic-settings and stay the strings they are (never parsed as
YAML: a password ``0123`` stays ``"0123"``); pydantic converts them to the field's type (``"16"``
to 16, ``"true"`` to True, ``"a,b"`` to a tuple of topics; an empty value is None, "not set").
Deeper keys use more ``__``: ``MONITOR__LEARNING__SETTINGS__DETECTOR=KSWIN``. Unknown sections or keys, wrong types
and out-of-range values are rejected at start with a message naming the key. Secrets are
``SecretStr``: their values appear in no message, no ``repr`` and no ``--check-config`` output.

    >>> cfg = load_config(None, env={"MONITOR__BATCH__MAX_BATCH": "16"})
    >>> cfg.batch.max_batch, cfg.kafka.input_topics
    (16, ('news', 'comments'))
    >>> load_config(None, env={"MONITOR__BATCH__MAX_BATCH": "0"})
    Traceback (most recent call last):
    ...
    monitor.config.ConfigError: batch.max_batch: must be >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, ConfigDict, SecretStr, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

__all__ = [
    "AlertConfig",
    "BatchConfig",
    "ConfigError",
    "KafkaConfig",
    "LearningConfig",
    "LoggingConfig",
    "MetricsConfig",
    "ModelConfig",
    "MonitorConfig",
    "describe_keys",
    "field_docs",
    "load_config",
]

ENV_PREFIX = "MONITOR__"
_SECRET_KEYS = ("sasl_plain_password", "ssl_password")
# Sections reject unknown keys (a typo is an error naming the key); a number in YAML is accepted
# where a string is expected (``group_id: 7``).
_SECTION = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class ConfigError(ValueError):
    """A configuration problem, with the dotted key that caused it."""


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {message}")


def _split_commas(value: Any) -> Any:
    """``"a, b"`` -> ``["a", "b"]`` (lists from the environment are comma-separated)."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _json_object(value: Any) -> Any:
    """A mapping from the environment is a JSON object: ``MONITOR__LEARNING__SETTINGS='{"detector": "KSWIN"}'``."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError("expected a mapping (a JSON object from the environment)") from None
    return value


StrList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split_commas)]
JsonMapping = Annotated[Mapping[str, Any], NoDecode, BeforeValidator(_json_object)]
IntList = Annotated[tuple[int, ...], NoDecode, BeforeValidator(_split_commas)]


@dataclass(frozen=True)
class KafkaConfig:
    __pydantic_config__ = _SECTION

    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated host:port list of the brokers."""
    input_topics: StrList = ("news", "comments")
    """Topics carrying NewsItem JSON messages."""
    output_topic: str = "predictions"
    """One enriched result per input (key = item id)."""
    dead_letter_topic: str = "dead-letter"
    """Rejected input with the original bytes and the reason."""
    alerts_topic: str = "alerts"
    """Negative-surge alert events."""
    labels_topic: str = "labels"
    """Late labels for items already classified (joined by id)."""
    label_requests_topic: str = "label-requests"
    """Uncertain items published for people to label."""
    versions_topic: str = "model-versions"
    """Compacted, one-partition topic on which the learner announces every serving model version."""
    lease_topic_prefix: str = "monitor-lease-"
    """Prefix of the one-partition topics whose group membership elects the single learner / analytics owner."""
    group_id: str = "monitor"
    """Consumer group; instances with the same group share the input partitions."""
    client_id: str = "monitor"
    """Client id prefix shown in broker logs and quotas."""
    group_instance_id: str | None = "auto"
    """Static membership id (a restart gets its partitions back at once): auto = host + free slot; empty = off."""
    auto_offset_reset: str = "earliest"
    """Where a new group starts: earliest or latest."""
    max_poll_interval_ms: int = 300_000
    """Max time between polls before the group evicts this member (>= 10000)."""
    session_timeout_ms: int = 45_000
    """Heartbeat session timeout of the consumer group."""
    heartbeat_interval_ms: int = 3_000
    """Heartbeat period of the consumer (below session_timeout_ms / 3)."""
    security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    sasl_mechanism: str | None = None
    """PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or GSSAPI (with SASL_* protocols)."""
    sasl_plain_username: str | None = None
    """SASL user name."""
    sasl_plain_password: SecretStr | None = None
    """Secret: never logged or shown."""
    ssl_cafile: str | None = None
    """CA bundle (PEM) to verify the brokers."""
    ssl_certfile: str | None = None
    """Client certificate (PEM) for mutual TLS."""
    ssl_keyfile: str | None = None
    """Client private key (PEM) for mutual TLS."""
    ssl_password: SecretStr | None = None
    """Secret: never logged or shown."""
    create_topics: bool = True
    """Create missing topics at start (needs the cluster's CreateTopics permission)."""
    topic_partitions: int = 3
    """Partitions of topics the monitor creates (upper bound on instances sharing the load)."""
    replication_factor: int | None = None
    """Replication factor of topics the monitor creates; empty = the broker's default.replication.factor."""
    flush_timeout_s: float = 30.0
    """One attempt to flush the outputs or commit the offsets; on timeout it is retried, the daemon never exits."""
    outage_backoff_max_s: float = 30.0
    """Longest wait between two retries while the broker is unreachable (doubling from 0.5 s)."""

    def __post_init__(self) -> None:
        _check(bool(self.bootstrap_servers.strip()), "kafka.bootstrap_servers", "must not be empty")
        _check(len(self.input_topics) > 0, "kafka.input_topics", "needs at least one topic")
        _check(self.auto_offset_reset in ("earliest", "latest"), "kafka.auto_offset_reset",
               f"must be earliest or latest, got {self.auto_offset_reset!r}")
        _check(self.security_protocol in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
               "kafka.security_protocol", f"unknown protocol {self.security_protocol!r}")
        _check(self.max_poll_interval_ms >= 10_000, "kafka.max_poll_interval_ms", "must be >= 10000")
        _check(self.heartbeat_interval_ms * 3 <= self.session_timeout_ms, "kafka.heartbeat_interval_ms",
               "must be at most a third of kafka.session_timeout_ms")
        _check(self.topic_partitions >= 1, "kafka.topic_partitions", "must be >= 1")
        _check(self.replication_factor is None or self.replication_factor >= 1, "kafka.replication_factor",
               "must be >= 1 (or empty for the broker's default)")
        _check(self.flush_timeout_s > 0, "kafka.flush_timeout_s", "must be > 0")
        _check(self.outage_backoff_max_s >= 0.5, "kafka.outage_backoff_max_s", "must be >= 0.5")
        _check(self.group_instance_id is None or bool(self.group_instance_id.strip()), "kafka.group_instance_id",
               "must not be blank")

    def client_options(self) -> dict[str, Any]:
        """Security and identity options passed through to every kafka-python client (secrets revealed)."""
        opts: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers.split(","),
                                "security_protocol": self.security_protocol}
        for key in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password", "ssl_cafile",
                    "ssl_certfile", "ssl_keyfile", "ssl_password"):
            value = getattr(self, key)
            if value is not None:
                opts[key] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return opts


@dataclass(frozen=True)
class BatchConfig:
    __pydantic_config__ = _SECTION

    max_batch: int = 256
    """Classify at most this many messages at once (one poll; token-budget batches are formed over all of them)."""
    max_wait_ms: int = 200
    """... or whatever arrived within this time, whichever comes first."""
    adaptive: bool = True
    """Return a batch as soon as the consumer has caught up, without waiting the rest of max_wait_ms."""
    max_text_chars: int = 20_000
    """Longer texts are dead-lettered with reason 'oversize'."""
    max_future_skew_s: float = 3600.0
    """published_at further than this ahead of the Kafka timestamp: dead-lettered 'bad_timestamp'."""

    def __post_init__(self) -> None:
        _check(self.max_batch >= 1, "batch.max_batch", f"must be >= 1, got {self.max_batch}")
        _check(self.max_wait_ms >= 0, "batch.max_wait_ms", f"must be >= 0, got {self.max_wait_ms}")
        _check(self.max_text_chars >= 1, "batch.max_text_chars", "must be >= 1")
        _check(self.max_future_skew_s > 0, "batch.max_future_skew_s", "must be > 0")


@dataclass(frozen=True)
class ModelConfig:
    __pydantic_config__ = _SECTION

    path: str = "var/models"
    """A checkpoint directory, or a model registry directory (its 'current' version serves)."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    max_length: int = 128
    """Token truncation length."""
    inference_batch_size: int = 32
    """Most texts per inference batch (texts are sorted by length first; on CUDA at least 256)."""
    backend: str = "auto"
    """auto (ONNX Runtime on CPU when its checked export is accepted, else torch), torch or onnx."""
    threads: int | Literal["auto"] = "auto"
    """Intra-op CPU threads of the backend; auto: the fastest in a probe at start; 0: the library default."""
    max_batch_tokens: int | Literal["auto"] = "auto"
    """Padded tokens per inference batch; auto: the budget measured best for the backend (256 on CPU)."""
    fp16: bool = True
    """On CUDA, run inference under fp16 autocast."""
    int8: bool = False
    """Serve the int8 ONNX model when the accuracy guard accepts it (max_accuracy_loss per head)."""
    max_accuracy_loss: float = 0.005
    """int8 guard: largest accuracy loss per head against fp32 on the replay holdout and on recent labels."""
    int8_min_examples: int = 200
    """int8 guard: labelled examples each set needs per head, else fp32 serves."""
    int8_labels_dir: str = ""
    """int8 guard: the learner state dir with buffer.jsonl and window.jsonl (empty: <registry>/learner)."""

    def __post_init__(self) -> None:
        _check(self.device in ("auto", "cpu", "cuda"), "model.device", f"unknown device {self.device!r}")
        _check(8 <= self.max_length <= 512, "model.max_length", "must be in 8..512")
        _check(self.inference_batch_size >= 1, "model.inference_batch_size", "must be >= 1")
        _check(self.backend in ("auto", "torch", "onnx"), "model.backend",
               f"must be auto, torch or onnx, got {self.backend!r}")
        _check(self.threads == "auto" or (isinstance(self.threads, int) and self.threads >= 0), "model.threads",
               f"must be auto or an integer >= 0, got {self.threads!r}")
        tokens = self.max_batch_tokens
        _check(tokens == "auto" or (isinstance(tokens, int) and tokens >= 8), "model.max_batch_tokens",
               f"must be auto or an integer >= 8, got {self.max_batch_tokens!r}")
        _check(0.0 <= self.max_accuracy_loss < 1.0, "model.max_accuracy_loss", "must be in [0, 1)")
        _check(self.int8_min_examples >= 1, "model.int8_min_examples", "must be >= 1")


@dataclass(frozen=True)
class MetricsConfig:
    __pydantic_config__ = _SECTION

    host: str = "127.0.0.1"
    """Address of the /metrics endpoint."""
    port: int = 9108
    """Port of the /metrics endpoint (0 disables it)."""
    windows_seconds: IntList = (900, 3600)
    """Rolling event-time windows of the sentiment index (label 'window' = e.g. '900s')."""
    watch_tickers: StrList = ()
    """Tickers with their own sentiment index and surge alerts (bounded label set)."""

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, "metrics.port", "must be in 0..65535")
        _check(len(self.windows_seconds) > 0 and min(self.windows_seconds) > 0, "metrics.windows_seconds",
               "needs at least one positive window")
        _check(len(self.watch_tickers) <= 200, "metrics.watch_tickers", "at most 200 tickers (label cardinality)")


@dataclass(frozen=True)
class AlertConfig:
    __pydantic_config__ = _SECTION

    window_seconds: float = 900.0
    """Event-time window in which the negative share is measured."""
    baseline_seconds: float = 6 * 3600.0
    """Span before the window that gives the baseline negative share."""
    min_count: int = 20
    """Minimum items in the window before an alert can be raised."""
    ratio: float = 2.0
    """Raise when share >= baseline * ratio ..."""
    min_delta: float = 0.15
    """... and share - baseline >= min_delta."""
    clear_ratio: float = 1.3
    """The clear condition: share < max(baseline * clear_ratio, baseline + clear_delta), or volume < min_count."""
    clear_delta: float = 0.05
    """See clear_ratio: keeps the clear threshold above the noise of a small baseline (<= min_delta)."""
    cooldown_seconds: float = 1800.0
    """Quiet time for a key after its alert clears."""
    default_baseline: float = 0.2
    """Baseline used until the baseline span holds min_baseline_count items."""
    min_baseline_count: int = 50
    """Items the baseline span needs before its own share replaces default_baseline."""
    hold_seconds: float = 1800.0
    """A raised alert stays active at least this long (event time)."""
    clear_seconds: float = 600.0
    """The clear condition (share or volume) must hold this long (event time) before the alert clears."""
    watermark_outliers: int = 2
    """Items dated in the future, among the last watermark_sample, that cannot move the event-time clock."""
    watermark_sample: int = 50
    """Recent items over which the event-time clock (watermark) is taken."""

    def __post_init__(self) -> None:
        _check(self.window_seconds > 0, "alerts.window_seconds", "must be > 0")
        _check(self.ratio >= 1.0, "alerts.ratio", "must be >= 1")
        _check(1.0 <= self.clear_ratio <= self.ratio, "alerts.clear_ratio", "must be in 1..ratio")
        _check(0.0 <= self.default_baseline <= 1.0, "alerts.default_baseline", "must be in 0..1")
        _check(self.min_count >= 1, "alerts.min_count", "must be >= 1")
        _check(0.0 <= self.clear_delta <= self.min_delta, "alerts.clear_delta", "must be in 0..alerts.min_delta")
        _check(self.hold_seconds >= 0 and self.clear_seconds >= 0, "alerts.hold_seconds",
               "hold_seconds and clear_seconds must be >= 0")
        _check(0 <= self.watermark_outliers < self.watermark_sample, "alerts.watermark_outliers",
               "must be >= 0 and < alerts.watermark_sample")


@dataclass(frozen=True)
class LearningConfig:
    __pydantic_config__ = _SECTION

    enabled: bool = False
    """Continual learning on labels from the stream (see README, 'Continual learning')."""
    settings: JsonMapping = field(default_factory=dict)
    """Learner settings (drift detector, replay buffer, training policy, gate)."""
    label_store_path: str = ""
    """SQLite file (WAL) of the predictions awaiting their labels; empty = label-joins.sqlite in the learner state."""
    label_retention_s: float = 48 * 3600.0
    """A prediction waits this long for its label (by the time it was classified), then leaves the store."""
    label_store_max_items: int = 2_000_000
    """At most this many predictions wait in the store, least recently used out first (join_cache_size overrides)."""

    def __post_init__(self) -> None:
        _check(self.label_retention_s > 0, "learning.label_retention_s", "must be > 0")
        _check(self.label_store_max_items >= 1, "learning.label_store_max_items", "must be >= 1")


@dataclass(frozen=True)
class LoggingConfig:
    __pydantic_config__ = _SECTION

    level: str = "INFO"
    """DEBUG, INFO, WARNING or ERROR."""
    json: bool = False
    """JSON lines instead of plain text."""
    summary_interval_s: float = 30.0
    """Seconds between one-line summaries (rate, lag, model version)."""

    def __post_init__(self) -> None:
        _check(self.level in ("DEBUG", "INFO", "WARNING", "ERROR"), "logging.level", f"unknown {self.level!r}")


@dataclass(frozen=True)
class MonitorConfig:
    __pydantic_config__ = ConfigDict(extra="forbid")

    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    alerts: AlertConfig = field(default_factory=AlertConfig)
    learning: LearningConfig = field(default_factory=LearningConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with secrets replaced, safe to log."""
        out = dataclasses.asdict(self)
        for key in _SECRET_KEYS:
            if out["kafka"].get(key) is not None:
                out["kafka"][key] = "***"
        return out


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a settings dataclass (``""`` where a field has none)."""
    import ast
    import inspect

    body = ast.parse(inspect.getsource(cls)).body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    for node, following in zip(body.body, [*body.body[1:], None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            is_doc = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
            docs[node.target.id] = str(following.value.value) if is_doc else ""  # type: ignore[union-attr]
    return docs


def describe_keys() -> list[tuple[str, str, str]]:
    """``(section.key, default, description)`` for every setting, from the field docstrings."""
    rows = []
    for section in dataclasses.fields(MonitorConfig):
        cls = typing.get_type_hints(MonitorConfig)[section.name]
        docs = field_docs(cls)
        defaults = cls()
        for f in dataclasses.fields(cls):
            value = getattr(defaults, f.name)
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            rows.append((f"{section.name}.{f.name}", shown, docs.get(f.name, "")))
    return rows


class _Env(EnvSettingsSource):
    """pydantic-settings' environment source reading a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        # An empty value means "not set" (None): ``MONITOR__KAFKA__REPLICATION_FACTOR=`` is the broker's default.
        super().__init__(settings_cls, env_parse_none_str="")

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._env, False, False, self.env_parse_none_str)


class _Sources(BaseSettings):
    """The raw settings: the YAML file's sections, then ``MONITOR__SECTION__KEY`` on top (deep merge)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid",
                                      case_sensitive=False)
    # Sections are kept raw here (strings stay strings); MonitorConfig validates them, once.
    kafka: dict[str, Any] = {}
    batch: dict[str, Any] = {}
    model: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    alerts: dict[str, Any] = {}
    learning: dict[str, Any] = {}
    logging: dict[str, Any] = {}

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (_ENV_SOURCE.get(), init_settings)


class _EnvHolder:
    """The environment source of the current ``load_config`` call (pydantic-settings builds sources per class)."""

    def __init__(self) -> None:
        self.source: PydanticBaseSettingsSource | None = None

    def get(self) -> PydanticBaseSettingsSource:
        assert self.source is not None
        return self.source


_ENV_SOURCE = _EnvHolder()
_ADAPTER: TypeAdapter[MonitorConfig] = TypeAdapter(MonitorConfig)


def _describe(err: ValidationError) -> str:
    """The first error as ``section.key: message``; never the input value of a secret."""
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"] if not str(part).startswith("function-"))
    if first["type"] == "value_error" and isinstance(first.get("ctx", {}).get("error"), ConfigError):
        return str(first["ctx"]["error"])
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        section = key.split(".")[0]
        if "." not in key:
            return f"{key}: unknown section (known: {', '.join(f.name for f in dataclasses.fields(MonitorConfig))})"
        known = sorted(f.name for f in dataclasses.fields(typing.get_type_hints(MonitorConfig)[section]))
        return f"{key}: unknown key (known: {', '.join(known)})"
    message = {"int_parsing": "expected an integer", "int_type": "expected an integer",
               "int_from_float": "expected an integer", "float_parsing": "expected a number",
               "float_type": "expected a number", "bool_parsing": "expected true or false",
               "bool_type": "expected true or false", "string_type": "expected a string",
               "dict_type": "expected a mapping", "tuple_type": "expected a list",
               "mapping_type": "expected a mapping", "dataclass_type": "expected a mapping"}.get(
        first["type"], str(first["msg"]).removeprefix("Value error, "))
    if any(secret in key for secret in _SECRET_KEYS):
        return f"{key}: {message}"
    return f"{key}: {message}, got {first.get('input')!r}"


def load_config(path: str | Path | None, env: Mapping[str, str] | None = None) -> MonitorConfig:
    """Read the YAML file (optional), apply ``MONITOR__SECTION__KEY`` overrides, validate."""
    import os

    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping of sections at the top level")
        raw = loaded or {}
    environment = os.environ if env is None else env
    sections = [f.name for f in dataclasses.fields(MonitorConfig)]
    for name in environment:
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX):].lower().split("__")
        if len(parts) < 2:
            raise ConfigError(f"{name}: expected MONITOR__<SECTION>__<KEY>")
        if parts[0] not in sections:
            raise ConfigError(f"{name}: unknown section {parts[0]!r} (known: {', '.join(sections)})")
    for section, values in raw.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: expected a mapping, got {type(values).__name__}")
    _ENV_SOURCE.source = _Env(_Sources, environment)
    try:
        merged = _Sources(**raw).model_dump()
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None
    finally:
        _ENV_SOURCE.source = None
    try:
        return _ADAPTER.validate_python({k: v for k, v in merged.items() if v})
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None

