"""Federated evaluation: gateways post signed metrics of a model version; the operator reads them.

A report (``native.evalreport``) is accepted only from an enrolled, unrevoked gateway whose
identity key signed it (checked before the bytes are parsed), for a version that exists and whose
model has the report's class count.
Posting the same bytes again answers 200 with ``duplicate`` and stores nothing new; a different
report for the same (version, gateway) is refused (409): the first one stands. Every refusal is
an ``ApiError`` and so counted in ``fedgate_rejections_total``. Reading the per-gateway metrics
needs the admin token: the counts of a small site say something about its wearer.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from aggregator.audit.fairness import confusion_metrics
from aggregator.db import Evaluation, Gateway, ModelVersion, as_utc, utcnow
from aggregator.deps import AdminDep, ApiError, SessionDep, errors
from aggregator.routers.models import VersionPath
from aggregator.schemas import EvaluationAccepted, EvaluationIn, EvaluationList, EvaluationOut
from native import evalreport
from native.errors import IntegrityError, WireError


def classes_of(row: ModelVersion) -> list[str]:
    """Class names of the model a version was built from (its config's ``model``)."""
    from models.zoo import get_spec
    from native.errors import InputError

    name = (row.config or {}).get("model")
    try:
        return list(get_spec(str(name)).class_names)
    except InputError:
        raise ApiError(409, "model_unknown", f"model version {row.version} names no known "
                       f"model ({name!r}); it cannot take evaluations") from None


def _version(session: Session, version: int) -> ModelVersion:
    row = session.get(ModelVersion, version)
    if row is None:
        raise ApiError(404, "model_not_found", f"no model version {version}")
    return row


def _verified(session: Session, version: int, body: EvaluationIn
              ) -> tuple[evalreport.EvalReport, bytes]:
    """Authenticate a posted report, then decode it and check it against the stored state.

    The signature is checked before the bytes are parsed: only an enrolled gateway's own
    report reaches the decoder.
    """
    gateway = session.get(Gateway, body.gateway_id)
    if gateway is None:
        raise ApiError(403, "unknown_gateway", f"no enrolled gateway {body.gateway_id!r}")
    if gateway.revoked_at is not None:
        raise ApiError(403, "gateway_revoked", f"gateway {body.gateway_id} is revoked")
    try:
        data = base64.b64decode(body.report, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "malformed_report", "report must be base64") from None
    try:
        report = evalreport.verify(data, bytes.fromhex(body.signature), gateway.public_key)
    except IntegrityError:
        raise ApiError(403, "bad_signature", "the report is not signed by this gateway's "
                       "enrolled key") from None
    except evalreport.CountError as exc:
        raise ApiError(422, "bad_counts", str(exc)) from None
    except WireError as exc:
        raise ApiError(422, "malformed_report", str(exc)) from None
    if report.gateway_id != body.gateway_id:
        raise ApiError(422, "gateway_mismatch", f"the report names gateway {report.gateway_id}")
    if report.model_version != version:
        raise ApiError(422, "version_mismatch", f"report is for model version "
                       f"{report.model_version}, posted to version {version}")
    classes = classes_of(_version(session, version))
    if report.classes != len(classes):
        raise ApiError(422, "wrong_shape", f"model version {version} has {len(classes)} classes, "
                       f"the report {report.classes}")
    return report, data


def _stored(session: Session, version: int, gateway_id: str) -> Evaluation | None:
    return session.scalars(select(Evaluation).where(
        Evaluation.model_version == version, Evaluation.gateway_id == gateway_id)).first()


def _answer(row: Evaluation, duplicate: bool) -> EvaluationAccepted:
    return EvaluationAccepted(model_version=row.model_version, gateway_id=row.gateway_id,
                              samples=row.samples, duplicate=duplicate,
                              received_at=as_utc(row.received_at))


def _same_or_conflict(row: Evaluation, data: bytes) -> EvaluationAccepted:
    if row.report != data:
        raise ApiError(409, "duplicate_evaluation", f"gateway {row.gateway_id} already reported "
                       f"on model version {row.model_version}; the first report stands")
    return _answer(row, True)


def build() -> APIRouter:
    """Router for ``/v1/models/{version}/evaluations``."""
    router = APIRouter(prefix="/v1", tags=["evaluations"])

    @router.post("/models/{version}/evaluations", status_code=201,
                 response_model=EvaluationAccepted,
                 responses={200: {"model": EvaluationAccepted,
                                  "description": "this exact report was already stored"},
                            **errors(403, 404, 409, 422)})
    def submit(version: VersionPath, body: EvaluationIn, session: SessionDep,
               response: Response) -> EvaluationAccepted:
        """Store a gateway's signed evaluation of a model version (metrics only, no data)."""
        _version(session, version)
        report, data = _verified(session, version, body)
        existing = _stored(session, version, report.gateway_id)
        if existing is not None:
            response.status_code = 200
            return _same_or_conflict(existing, data)
        row = Evaluation(model_version=version, gateway_id=report.gateway_id,
                         samples=report.samples, loss_sum=report.loss_sum,
                         confusion=[list(r) for r in report.confusion], report=data,
                         signature=bytes.fromhex(body.signature), received_at=utcnow())
        session.add(row)
        try:
            session.commit()
        except DbIntegrityError:  # the same gateway's report raced in on another worker
            session.rollback()
            raced = _stored(session, version, report.gateway_id)
            if raced is None:
                raise
            response.status_code = 200
            return _same_or_conflict(raced, data)
        return _answer(row, False)

    @router.get("/models/{version}/evaluations", response_model=EvaluationList,
                responses=errors(401, 403, 404, 409))
    def list_evaluations(
        version: VersionPath, _: AdminDep, session: SessionDep,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
        offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    ) -> EvaluationList:
        """Per-gateway metrics of a version, by pseudonymous gateway id (admin)."""
        classes = classes_of(_version(session, version))
        total = session.scalar(select(func.count()).where(
            Evaluation.model_version == version)) or 0
        rows = session.scalars(select(Evaluation).where(Evaluation.model_version == version)
                               .order_by(Evaluation.gateway_id).limit(limit).offset(offset))
        out = [EvaluationOut.of(row, confusion_metrics(row.confusion, classes)) for row in rows]
        return EvaluationList(model_version=version, classes=classes, total=total,
                              evaluations=out)

    return router
