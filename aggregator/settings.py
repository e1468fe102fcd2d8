"""The aggregator's settings: one pydantic-settings class, read from ``FEDGATE_AGG_*`` variables.

Built once in ``aggregator.cli`` (or by a test) and passed to ``create_app``; nothing reads the
environment anywhere else. The privacy and quantization settings here are the operator's policy
for the rounds this aggregator runs; gateways never read them from an environment: they receive
them inside each signed round config and check them against their own floor.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from aggregator.privacy import DPConfig

_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class AggregatorSettings(BaseSettings):
    """Everything the aggregator process needs to start."""

    model_config = SettingsConfigDict(env_prefix="FEDGATE_AGG_", extra="forbid")

    admin_token: SecretStr = Field(min_length=16, description="bearer token of the operator")
    database_url: str = Field("sqlite:///fedgate-aggregator.db",
                              description="SQLAlchemy URL: sqlite:///FILE or postgresql+psycopg://")
    database_schema: str | None = Field(None, description="PostgreSQL schema for every table")
    signing_key_path: Path = Field(Path("aggregator-signing.key"),
                                   description="Ed25519 seed file, created with mode 0600")
    enrollment_ttl_s: int = Field(3600, ge=60, le=30 * 86400)
    max_blob_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_client_id: str = Field("aggregator", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    # Round orchestration (operator policy; gateways receive it inside the signed round config).
    rounds: int = Field(0, ge=-1, description="rounds to run in the background; 0 none, -1 forever")
    model: str = "ecg"
    strategy: Literal["fedavg", "fedadam", "fedyogi"] = "fedavg"
    server_lr: float = Field(1.0, gt=0, le=100)
    server_lr_decay: float = Field(1.0, gt=0, le=1, description="factor from the round below on")
    server_lr_decay_from: int = Field(0, ge=0, description="first decayed round; 0 = never")
    min_participants: int = Field(3, ge=2, le=65536)
    max_participants: int = Field(256, ge=2, le=65536)
    fraction: float = Field(1.0, gt=0, le=1)
    over_selection: float = Field(0.0, ge=0, le=1)
    stage_timeout_s: float = Field(60.0, gt=0, le=86400)
    round_pause_s: float = Field(2.0, ge=0, le=86400)
    quant_bits: int = Field(8, ge=2, le=24)
    clip: float = Field(1.0, gt=0, le=1e6)
    secagg_degree: int | None = Field(None, ge=2, description="SecAgg+ neighbours; None = all")
    # Distributed DP (docs/privacy.md): off unless a noise multiplier is set.
    dp_noise_multiplier: float | None = Field(None, gt=0, le=1000,
                                              description="summed noise / L2 sensitivity")
    dp_l2_clip: float = Field(1.0, gt=0, le=1e6, description="L2 clip of a gateway's update")
    dp_sampling_rate: float = Field(1.0, gt=0, le=1, description="Poisson rate per gateway")
    dp_delta: float = Field(1e-5, gt=0, lt=1)
    dp_epsilon_budget: float | None = Field(None, gt=0, le=1e6,
                                            description="no round once it would be exceeded")
    dp_mechanism: Literal["ddg", "skellam"] = "ddg"
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)

    @field_validator("database_schema")
    @classmethod
    def _schema_is_identifier(cls, value: str | None) -> str | None:
        if value is not None and not _SCHEMA.fullmatch(value):
            raise ValueError("database_schema must be a lowercase SQL identifier")
        return value

    def dp_config(self) -> DPConfig | None:
        """The privacy policy of the rounds, or None when DP is off."""
        if self.dp_noise_multiplier is None:
            return None
        from aggregator.privacy import DPConfig

        return DPConfig(self.dp_noise_multiplier, self.dp_l2_clip, self.dp_sampling_rate,
                        self.dp_delta, self.dp_epsilon_budget, self.dp_mechanism)
