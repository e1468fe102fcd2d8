"""Enrollment: the operator issues one-time codes; a gateway registers its Ed25519 key with one.

The gateway proves it holds the private key by signing ``ENROLL_DOMAIN + code``; the code is
consumed by a conditional UPDATE, so two concurrent uses cannot both succeed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Annotated

import nacl.exceptions
import nacl.signing
from fastapi import APIRouter, Path
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from aggregator.db import EnrollmentCode, Gateway, as_utc, utcnow
from aggregator.deps import (
    AdminDep,
    ApiError,
    MetricsDep,
    RegistryDep,
    SessionDep,
    SettingsDep,
    errors,
)
from aggregator.schemas import (
    EnrolledOut,
    EnrollIn,
    EnrollmentCodeIn,
    EnrollmentCodeOut,
    GatewayOut,
    code_out,
)

ENROLL_DOMAIN = b"fedgate/enroll/v1\x00"
_GATEWAY_ID = r"^[A-Za-z0-9_-]{1,32}$"


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


def gateway_id_for(public_key: bytes) -> str:
    """Gateway ids are derived from the key, so a gateway cannot pick another's name."""
    return "gw-" + hashlib.sha256(public_key).hexdigest()[:16]


def pid_for(public_key: bytes) -> int:
    """Secure-aggregation participant id (1 .. 2^31 - 1), derived from the key like the id."""
    return 1 + int.from_bytes(hashlib.sha256(public_key).digest()[8:12], "little") % (2**31 - 1)


def _decode_hex(value: str, size: int, reason: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ApiError(422, reason, f"{what} must be hex") from None
    if len(raw) != size:
        raise ApiError(422, reason, f"{what} must be {size} bytes, got {len(raw)}")
    return raw


def _consume_code(session: Session, code: str, gateway_id: str) -> None:
    now = utcnow()
    row = session.scalars(select(EnrollmentCode).where(EnrollmentCode.code_hash == code_hash(code)))
    found = row.first()
    if found is None:
        raise ApiError(403, "enrollment_code_invalid", "unknown enrollment code")
    if found.used_at is not None:
        raise ApiError(409, "enrollment_code_used", "this enrollment code was already used")
    if as_utc(found.expires_at) <= now:
        raise ApiError(410, "enrollment_code_expired", "this enrollment code has expired")
    taken = session.execute(
        update(EnrollmentCode)
        .where(EnrollmentCode.id == found.id, EnrollmentCode.used_at.is_(None))
        .values(used_at=now, gateway_id=gateway_id)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        raise ApiError(409, "enrollment_code_used", "this enrollment code was already used")


def build() -> APIRouter:
    """Router for enrollment codes and gateways."""
    router = APIRouter(prefix="/v1", tags=["enrollment"])

    @router.post("/enrollment-codes", status_code=201, response_model=EnrollmentCodeOut,
                 responses=errors(401, 403))
    def issue_code(body: EnrollmentCodeIn, _: AdminDep, session: SessionDep,
                   settings: SettingsDep, metrics: MetricsDep) -> EnrollmentCodeOut:
        """Issue a one-time enrollment code (admin). The code is shown only in this response."""
        code = secrets.token_urlsafe(24)
        now = utcnow()
        ttl = body.ttl_s or settings.enrollment_ttl_s
        row = EnrollmentCode(code_hash=code_hash(code), label=body.label, created_at=now,
                             expires_at=now + dt.timedelta(seconds=ttl))
        session.add(row)
        session.commit()
        metrics.enrollment_codes.inc()
        return code_out(row, code)

    @router.post("/gateways", status_code=201, response_model=EnrolledOut,
                 responses=errors(403, 409, 410, 422))
    def enroll(body: EnrollIn, session: SessionDep, registry: RegistryDep,
               metrics: MetricsDep) -> EnrolledOut:
        """Register a gateway's Ed25519 public key with a one-time code."""
        public_key = _decode_hex(body.public_key, 32, "malformed_public_key", "public_key")
        proof = _decode_hex(body.proof, 64, "malformed_proof", "proof")
        try:
            nacl.signing.VerifyKey(public_key).verify(ENROLL_DOMAIN + body.code.encode(), proof)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
                nacl.exceptions.TypeError, UnicodeEncodeError):
            raise ApiError(403, "bad_proof", "proof is not a signature of the code by this key") \
                from None
        gateway_id = gateway_id_for(public_key)
        _consume_code(session, body.code, gateway_id)
        if session.scalar(select(func.count()).where(Gateway.public_key == public_key)):
            raise ApiError(409, "public_key_already_enrolled", "this public key is enrolled")
        pid = pid_for(public_key)
        if session.scalar(select(func.count()).where(Gateway.pid == pid)):
            # Two keys mapping to one 31-bit id: about one enrollment in 2^31 per fleet member.
            raise ApiError(409, "participant_id_taken", "generate a new identity key and retry")
        row = Gateway(id=gateway_id, public_key=public_key, pid=pid, label=body.label,
                      enrolled_at=utcnow())
        session.add(row)
        session.commit()
        metrics.enrollments.inc()
        out = GatewayOut.of(row).model_dump()
        return EnrolledOut(**out, aggregator_public_key=registry.public_key.hex())

    @router.get("/gateways", response_model=list[GatewayOut], responses=errors(401, 403))
    def list_gateways(_: AdminDep, session: SessionDep) -> list[GatewayOut]:
        """Every enrolled gateway (admin)."""
        rows = session.scalars(select(Gateway).order_by(Gateway.enrolled_at, Gateway.id))
        return [GatewayOut.of(row) for row in rows]

    @router.get("/gateways/{gateway_id}", response_model=GatewayOut,
                responses=errors(401, 403, 404))
    def get_gateway(gateway_id: Annotated[str, Path(pattern=_GATEWAY_ID)],
                    _: AdminDep, session: SessionDep) -> GatewayOut:
        """One enrolled gateway (admin)."""
        row = session.get(Gateway, gateway_id)
        if row is None:
            raise ApiError(404, "gateway_not_found", f"no gateway {gateway_id!r}")
        return GatewayOut.of(row)

    return router
