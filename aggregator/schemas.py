"""Request and response bodies of the REST API, separate from the stored rows in ``db``."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aggregator.db import EnrollmentCode, Evaluation, Gateway, ModelVersion, Round, as_utc
from native.evalreport import MAX_REPORT_BYTES


class ErrorOut(BaseModel):
    """Every 4xx/5xx the API raises on purpose: a stable reason label and a readable detail."""

    error: str = Field(description="short machine-readable reason, also the metrics label")
    detail: str


class HealthOut(BaseModel):
    status: str
    database: str


class EnrollmentCodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field("", max_length=128)
    ttl_s: int | None = Field(None, ge=60, le=30 * 86400, description="default from settings")


class EnrollmentCodeOut(BaseModel):
    code: str = Field(description="shown once; only its hash is stored")
    label: str
    expires_at: dt.datetime


class EnrollIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=256)
    public_key: str = Field(pattern=r"^[0-9a-fA-F]{64}$",
                            description="Ed25519 public key, 64 hex digits")
    proof: str = Field(pattern=r"^[0-9a-fA-F]{128}$", description=(
        "hex Ed25519 signature of b'fedgate/enroll/v1\\x00' + code (UTF-8) with that key"))
    label: str = Field("", max_length=128)


class GatewayOut(BaseModel):
    gateway_id: str
    pid: int = Field(description="participant id in secure aggregation")
    public_key: str
    label: str
    enrolled_at: dt.datetime
    revoked: bool

    @classmethod
    def of(cls, row: Gateway) -> GatewayOut:
        return cls(gateway_id=row.id, pid=row.pid, public_key=row.public_key.hex(), label=row.label,
                   enrolled_at=as_utc(row.enrolled_at), revoked=row.revoked_at is not None)


class EnrolledOut(GatewayOut):
    aggregator_public_key: str = Field(description="pin this key to verify model signatures")


class RoundOut(BaseModel):
    round_id: int
    stage: str
    outcome: str | None
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    ended_at: dt.datetime | None
    selected: int
    participants: int
    dropouts: int
    timings: dict[str, float] = Field(description="seconds per stage")
    model_version: int | None

    @classmethod
    def of(cls, row: Round) -> RoundOut:
        return cls(
            round_id=row.id, stage=row.stage, outcome=row.outcome, error=row.error,
            created_at=as_utc(row.created_at), updated_at=as_utc(row.updated_at),
            ended_at=None if row.ended_at is None else as_utc(row.ended_at),
            selected=row.selected, participants=row.participants, dropouts=row.dropouts,
            timings={str(k): float(v) for k, v in (row.timings or {}).items()},
            model_version=row.model_version,
        )


class RoundList(BaseModel):
    total: int
    rounds: list[RoundOut]


class BlobOut(BaseModel):
    sha256: str
    size: int


class ModelOut(BaseModel):
    version: int
    parent: int | None
    round_id: int | None
    created_at: dt.datetime
    participants: int
    config: dict[str, Any]
    privacy: dict[str, Any]
    inference: BlobOut
    checkpoint: BlobOut | None
    lineage: list[int] = Field(description="this version, its parent, ... back to the root")
    manifest: str = Field(description="base64 of the exact signed manifest bytes")
    signature: str = Field(description="hex Ed25519 signature of domain + manifest")
    signer: str = Field(description="hex public key of the aggregator that signed it")

    @classmethod
    def of(cls, row: ModelVersion, manifest: dict[str, Any], lineage: list[int]) -> ModelOut:
        ckpt = manifest.get("checkpoint")
        return cls(
            version=row.version, parent=row.parent, round_id=row.round_id,
            created_at=as_utc(row.created_at), participants=row.participants,
            config=row.config, privacy=row.privacy,
            inference=BlobOut(**manifest["inference"]),
            checkpoint=None if ckpt is None else BlobOut(**ckpt), lineage=lineage,
            manifest=base64.b64encode(row.manifest).decode("ascii"),
            signature=row.signature.hex(), signer=row.signer,
        )


class ModelList(BaseModel):
    models: list[ModelOut]


class SigningKeyOut(BaseModel):
    public_key: str
    key_id: str
    manifest_domain: str = Field(description="bytes prefixed to the manifest before signing")


def code_out(row: EnrollmentCode, code: str) -> EnrollmentCodeOut:
    """Response for a freshly issued code (the only time the plain code leaves the server)."""
    return EnrollmentCodeOut(code=code, label=row.label, expires_at=as_utc(row.expires_at))


class PrivacyOut(BaseModel):
    """The deployment's privacy ledger as the latest signed model version records it."""

    enabled: bool = Field(description="whether this aggregator runs DP rounds")
    mechanism: str | None = None
    noise_multiplier: float | None = None
    l2_clip: float | None = None
    sampling_rate: float | None = None
    delta: float | None = None
    epsilon: float = Field(0.0, description="cumulative epsilon at delta, all DP rounds so far")
    epsilon_budget: float | None = None
    remaining: float | None = Field(None, description="budget - epsilon, when a budget is set")
    rounds: int = Field(0, description="DP rounds released so far")
    model_version: int | None = Field(None, description="the version whose manifest says this")
    exhausted: str = Field("", description="why training stopped, once the budget is spent")


# base64 of the largest report native.evalreport decodes
_MAX_REPORT_B64 = 4 * -(-MAX_REPORT_BYTES // 3)


class EvaluationIn(BaseModel):
    """A gateway's signed federated-evaluation report (docs/deployment.md, Evaluations)."""

    model_config = ConfigDict(extra="forbid")

    gateway_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$", description=(
        "the sender; its enrolled key must have signed the report, which names it again"))
    report: str = Field(min_length=4, max_length=_MAX_REPORT_B64, pattern=(
        r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"), description=(
        "base64 of the report bytes: 'FGEV', u16 format 1, u8 classes k, u8 id length L, "
        "u32 model version, u64 samples, f64 loss sum, L bytes gateway id, k*k u64 counts "
        "(little-endian, rows = true class)"))
    signature: str = Field(pattern=r"^[0-9a-fA-F]{128}$", description=(
        "hex Ed25519 signature of b'fedgate/eval-report/v1\\x00' + report bytes by the "
        "gateway's enrolled identity key"))


class EvaluationAccepted(BaseModel):
    model_version: int
    gateway_id: str
    samples: int
    duplicate: bool = Field(description="true when this exact report was already stored")
    received_at: dt.datetime


class EvaluationOut(BaseModel):
    """One gateway's metrics of a model version, from its confusion counts."""

    gateway_id: str = Field(description="pseudonymous: derived from the gateway's key")
    model_version: int
    samples: int
    loss: float = Field(description="mean cross-entropy on the gateway's hold-out")
    confusion: list[list[int]] = Field(description="rows: true class, columns: predicted")
    sensitivity: dict[str, float | None]
    ppv: dict[str, float | None] = Field(description="positive predictivity per class")
    f1: dict[str, float | None]
    macro_f1: float | None
    received_at: dt.datetime
    report: str = Field(description="base64 of the signed report bytes, to re-verify")
    signature: str

    @classmethod
    def of(cls, row: Evaluation, metrics: dict[str, Any]) -> EvaluationOut:
        return cls(
            gateway_id=row.gateway_id, model_version=row.model_version, samples=row.samples,
            loss=row.loss_sum / row.samples, confusion=row.confusion,
            sensitivity=metrics["sensitivity"], ppv=metrics["ppv"], f1=metrics["f1"],
            macro_f1=metrics["macro_f1"], received_at=as_utc(row.received_at),
            report=base64.b64encode(row.report).decode("ascii"),
            signature=row.signature.hex())


class EvaluationList(BaseModel):
    model_version: int
    classes: list[str]
    total: int = Field(description="reports stored for this version (all pages)")
    evaluations: list[EvaluationOut]
