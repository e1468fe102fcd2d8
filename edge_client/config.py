"""The gateway daemon's configuration: one TOML file, overridable from the environment.

Every setting lives in a section of the file (``[gateway]``, ``[policy]``, ``[eligibility]``,
``[training]``, ``[evaluation]``). ``FEDGATE_<SECTION>__<KEY>`` overrides a key, e.g.
``FEDGATE_GATEWAY__BROKER_URL=mqtt://broker:1883``, so a container or a systemd drop-in can change
one value without editing the file. Unknown sections or keys, values of the wrong type and
out-of-range values all raise ``ConfigError`` naming the offending key; nothing is silently
ignored. Privacy and quantization parameters are not here: they come in the signed round config,
and ``[policy]`` only states the minimums this gateway accepts.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union
from urllib.parse import urlsplit

from native import topics
from native.errors import ConfigError, InputError

ENV_PREFIX = "FEDGATE_"


@dataclass(frozen=True)
class GatewaySection:
    """Where the gateway keeps its files and whom it talks to."""

    data_dir: str = "/var/lib/fedgate-gateway"
    broker_url: str = "mqtt://127.0.0.1:1883"
    aggregator_url: str = "http://127.0.0.1:8080"
    enrollment_code: str = ""
    label: str = ""
    topic_root: str = topics.DEFAULT_ROOT
    ca_file: str = ""
    model: str = "ecg"
    http_timeout_s: float = 30.0
    reconnect_max_s: int = 30
    keepalive_s: int = 30


@dataclass(frozen=True)
class PolicySection:
    """Safety minimums a signed round config must meet before this gateway sends anything."""

    min_participants: int = 3
    min_degree: int = 2
    min_threshold_fraction: float = 0.5
    min_quant_bits: int = 2
    max_quant_bits: int = 24
    max_clip: float = 100.0
    # Differential privacy floor: > 0 refuses every round whose summed noise is below this many
    # times its L2 sensitivity (and every round without noise); 0 accepts rounds without DP.
    min_noise_multiplier: float = 0.0
    min_dp_threshold: int = 2


@dataclass(frozen=True)
class EligibilitySection:
    """When the gateway may spend energy on a round."""

    min_new_samples: int = 32
    min_battery_pct: float = 20.0
    require_charging: bool = False
    max_load_per_cpu: float = 1.5


@dataclass(frozen=True)
class TrainingSection:
    """Local training (the round config fixes the model; these are the gateway's own choices)."""

    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-3
    mu: float = 0.01
    class_weights: list[float] = field(default_factory=list)
    threads: int = 1
    # "equal": every gateway counts once in the average; "samples": by its training samples
    # (capped at the round's max_weight), as centralised training over the pooled data would.
    weighting: str = "equal"


@dataclass(frozen=True)
class EvaluationSection:
    """Federated evaluation: each new global model scored on a local hold-out never trained on.

    The hold-out is the newest ``holdout_fraction`` of each wearable's labelled beats by time, so
    the score looks forward (as the model will be used) and no beat in it has a near-identical
    neighbour in the training set. Off by default: turning it on trains on fewer beats.
    """

    enabled: bool = False
    holdout_fraction: float = 0.1
    # Fewer beats than this are not reported: the counts of a handful of beats say more about
    # the wearer than about the model.
    min_samples: int = 20


@dataclass(frozen=True)
class GatewayConfig:
    """The whole configuration of one gateway daemon."""

    gateway: GatewaySection = field(default_factory=GatewaySection)
    policy: PolicySection = field(default_factory=PolicySection)
    eligibility: EligibilitySection = field(default_factory=EligibilitySection)
    training: TrainingSection = field(default_factory=TrainingSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)

    @property
    def data_dir(self) -> Path:
        return Path(self.gateway.data_dir)


_SECTIONS: dict[str, type[Any]] = {
    "gateway": GatewaySection, "policy": PolicySection,
    "eligibility": EligibilitySection, "training": TrainingSection,
    "evaluation": EvaluationSection,
}


def load_config(path: str | Path | None, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read ``path`` (TOML; None = defaults only), apply environment overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
    return config_from_dict(raw, os.environ if env is None else env)


def config_from_dict(raw: Mapping[str, Any], env: Mapping[str, str] | None = None
                     ) -> GatewayConfig:
    """Build and validate a config from parsed TOML plus ``FEDGATE_<SECTION>__<KEY>`` overrides."""
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"unknown config sections {sorted(unknown)}; known: {sorted(_SECTIONS)}")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        values = raw.get(name, {})
        if not isinstance(values, Mapping):
            raise ConfigError(f"[{name}] must be a table")
        merged = dict(values) | _env_values(name, cls, env or {})
        sections[name] = _build(name, cls, merged)
    cfg = GatewayConfig(**sections)
    _validate(cfg)
    return cfg


def _env_values(section: str, cls: type[Any], env: Mapping[str, str]) -> dict[str, Any]:
    prefix = f"{ENV_PREFIX}{section.upper()}__"
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for var, text in env.items():
        if not var.startswith(prefix):
            continue
        key = var[len(prefix):].lower()
        if key not in hints:
            raise ConfigError(f"{var}: [{section}] has no key {key!r}")
        out[key] = _parse_env(var, text, hints[key])
    return out


def _parse_env(var: str, text: str, kind: Any) -> Any:
    try:
        if kind is bool:
            low = text.strip().lower()
            if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(f"not a boolean: {text!r}")
            return low in ("1", "true", "yes", "on")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if typing.get_origin(kind) is list:
            return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ConfigError(f"{var}: {exc}") from None
    return text


def _type_ok(value: Any, kind: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if typing.get_origin(kind) is list:
        return isinstance(value, list) and all(_type_ok(v, float) for v in value)
    if typing.get_origin(kind) in (Union, types.UnionType):
        return any(_type_ok(value, k) for k in typing.get_args(kind))
    return False


def _build(section: str, cls: type[Any], values: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    unknown = set(values) - set(hints)
    if unknown:
        raise ConfigError(f"[{section}] has unknown keys {sorted(unknown)}")
    for key, value in values.items():
        if not _type_ok(value, hints[key]):
            want = getattr(hints[key], "__name__", str(hints[key]))
            raise ConfigError(f"[{section}] {key} must be {want}, got {type(value).__name__} "
                              f"{value!r}")
    fixed: dict[str, Any] = {}
    for key, value in values.items():
        if hints[key] is float:
            value = float(value)
        elif isinstance(value, list):
            value = [float(v) for v in value]
        fixed[key] = value
    return dataclasses.replace(cls(), **fixed)


def _validate(cfg: GatewayConfig) -> None:
    g, p, e, t, v = cfg.gateway, cfg.policy, cfg.eligibility, cfg.training, cfg.evaluation
    checks = [
        (urlsplit(g.broker_url).scheme in ("mqtt", "mqtts"), "gateway.broker_url must be mqtt://"
         "host[:port] or mqtts://..."),
        (urlsplit(g.aggregator_url).scheme in ("http", "https")
         and bool(urlsplit(g.aggregator_url).hostname), "gateway.aggregator_url must be http(s)://"),
        (bool(g.data_dir), "gateway.data_dir must not be empty"),
        (0 < g.http_timeout_s <= 3600, "gateway.http_timeout_s must be in (0, 3600]"),
        (1 <= g.reconnect_max_s <= 3600, "gateway.reconnect_max_s must be 1..3600"),
        (5 <= g.keepalive_s <= 3600, "gateway.keepalive_s must be 5..3600"),
        (len(g.label) <= 64, "gateway.label is at most 64 characters"),
        (p.min_participants >= 2, "policy.min_participants must be >= 2"),
        (p.min_degree >= 1, "policy.min_degree must be >= 1"),
        (0 <= p.min_threshold_fraction < 1, "policy.min_threshold_fraction must be in [0, 1)"),
        (1 <= p.min_quant_bits <= p.max_quant_bits <= 24, "policy: need 1 <= min_quant_bits <= "
         "max_quant_bits <= 24"),
        (p.max_clip > 0, "policy.max_clip must be > 0"),
        (0 <= p.min_noise_multiplier <= 1000, "policy.min_noise_multiplier must be in [0, 1000]"),
        (p.min_dp_threshold >= 1, "policy.min_dp_threshold must be >= 1"),
        (e.min_new_samples >= 0, "eligibility.min_new_samples must be >= 0"),
        (0 <= e.min_battery_pct <= 100, "eligibility.min_battery_pct must be 0..100"),
        (e.max_load_per_cpu > 0, "eligibility.max_load_per_cpu must be > 0"),
        (1 <= t.epochs <= 100, "training.epochs must be 1..100"),
        (1 <= t.batch_size <= 65536, "training.batch_size must be 1..65536"),
        (0 < t.lr <= 1, "training.lr must be in (0, 1]"),
        (0 <= t.mu <= 100, "training.mu must be in [0, 100]"),
        (all(w >= 0 for w in t.class_weights), "training.class_weights must be >= 0"),
        (1 <= t.threads <= 64, "training.threads must be 1..64"),
        (t.weighting in ("equal", "samples"), "training.weighting must be equal or samples"),
        (0 < v.holdout_fraction <= 0.5, "evaluation.holdout_fraction must be in (0, 0.5]"),
        (1 <= v.min_samples <= 1_000_000, "evaluation.min_samples must be 1..1000000"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    try:
        topics.check_root(g.topic_root)
    except (InputError, TypeError) as exc:
        raise ConfigError(f"gateway.topic_root: {exc}") from None
