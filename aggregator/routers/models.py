"""Signed model versions: lineage, manifests, and downloads of the model and checkpoint blobs."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy.orm import Session

from aggregator.db import ModelVersion
from aggregator.deps import ApiError, RegistryDep, SessionDep, errors
from aggregator.registry import ModelRegistry
from aggregator.schemas import ModelList, ModelOut, SigningKeyOut
from aggregator.signing import MANIFEST_DOMAIN, key_id

MAX_VERSION = 2**31 - 1
VersionPath = Annotated[int, Path(ge=1, le=MAX_VERSION)]
_OCTETS = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


def _out(session: Session, registry: RegistryDep, row: ModelVersion) -> ModelOut:
    return ModelOut.of(row, registry.verify(row), registry.lineage(session, row.version))


def _download(session: Session, registry: ModelRegistry, version: int,
              kind: Literal["inference", "checkpoint"]) -> Response:
    row = registry.get(session, version)
    if row is None:
        raise ApiError(404, "model_not_found", f"no model version {version}")
    data = registry.blob(session, row, kind)
    if data is None:
        raise ApiError(404, "checkpoint_not_found", f"model version {version} has no checkpoint")
    digest = row.inference_sha256 if kind == "inference" else row.checkpoint_sha256
    return Response(data, media_type="application/octet-stream", headers={
        "X-Fedgate-Sha256": str(digest), "X-Fedgate-Model-Version": str(version),
        "Content-Disposition": f'attachment; filename="model-{version}-{kind}.onnx"',
    })


def build() -> APIRouter:
    """Router for ``/v1/models`` and ``/v1/signing-key``."""
    router = APIRouter(prefix="/v1", tags=["models"])

    @router.get("/signing-key", response_model=SigningKeyOut)
    def signing_key(registry: RegistryDep) -> SigningKeyOut:
        """The aggregator's Ed25519 public key that signs every model manifest."""
        return SigningKeyOut(public_key=registry.public_key.hex(),
                             key_id=key_id(registry.public_key),
                             manifest_domain=MANIFEST_DOMAIN.hex())

    @router.get("/models", response_model=ModelList)
    def list_models(session: SessionDep, registry: RegistryDep,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    offset: Annotated[int, Query(ge=0, le=MAX_VERSION)] = 0) -> ModelList:
        """Model versions, oldest first, each with its signed manifest and lineage."""
        rows = registry.history(session, limit, offset)
        return ModelList(models=[_out(session, registry, row) for row in rows])

    @router.get("/models/latest", response_model=ModelOut, responses=errors(404))
    def latest_model(session: SessionDep, registry: RegistryDep) -> ModelOut:
        """The newest model version."""
        row = registry.latest(session)
        if row is None:
            raise ApiError(404, "model_not_found", "the registry is empty")
        return _out(session, registry, row)

    @router.get("/models/{version}", response_model=ModelOut, responses=errors(404))
    def get_model(version: VersionPath, session: SessionDep,
                  registry: RegistryDep) -> ModelOut:
        """One model version with its manifest, signature and lineage."""
        row = registry.get(session, version)
        if row is None:
            raise ApiError(404, "model_not_found", f"no model version {version}")
        return _out(session, registry, row)

    @router.get("/models/{version}/inference", response_class=Response,
                responses={200: {"content": _OCTETS, "description": "the ONNX inference model"},
                           **errors(404)})
    def download_inference(version: VersionPath, session: SessionDep,
                           registry: RegistryDep) -> Response:
        """The inference model bytes; check them against the manifest's sha256."""
        return _download(session, registry, version, "inference")

    @router.get("/models/{version}/checkpoint", response_class=Response,
                responses={200: {"content": _OCTETS, "description": "the training checkpoint"},
                           **errors(404)})
    def download_checkpoint(version: VersionPath, session: SessionDep,
                            registry: RegistryDep) -> Response:
        """The training checkpoint bytes; check them against the manifest's sha256."""
        return _download(session, registry, version, "checkpoint")

    return router
