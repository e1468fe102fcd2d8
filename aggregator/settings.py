"""The aggregator's settings: one pydantic-settings class, read from ``FEDGATE_AGG_*`` variables.

Built once in ``aggregator.cli`` (or by a test) and passed to ``create_app``; nothing reads the
environment anywhere else. Privacy and quantization parameters are deliberately absent: they
travel in the signed round config, never in environment variables.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    min_participants: int = Field(3, ge=2, le=65536)
    max_participants: int = Field(256, ge=2, le=65536)
    fraction: float = Field(1.0, gt=0, le=1)
    over_selection: float = Field(0.0, ge=0, le=1)
    stage_timeout_s: float = Field(60.0, gt=0, le=86400)
    round_pause_s: float = Field(2.0, ge=0, le=86400)
    quant_bits: int = Field(8, ge=2, le=24)
    clip: float = Field(1.0, gt=0, le=1e6)
    secagg_degree: int | None = Field(None, ge=2, description="SecAgg+ neighbours; None = all")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)

    @field_validator("database_schema")
    @classmethod
    def _schema_is_identifier(cls, value: str | None) -> str | None:
        if value is not None and not _SCHEMA.fullmatch(value):
            raise ValueError("database_schema must be a lowercase SQL identifier")
        return value
