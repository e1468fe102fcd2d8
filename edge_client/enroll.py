"""The gateway's side of the aggregator's REST API: enrollment, signed model downloads and
evaluation reports.

Plain ``urllib`` so the gateway needs no HTTP client library. Enrollment proves possession of the
identity key by signing ``ENROLL_DOMAIN + code``; the aggregator answers with the gateway id, the
participant id and its own public key, which the gateway pins. A model download is accepted only
if the manifest's Ed25519 signature verifies with that pinned key and the blob's sha256 matches
the manifest; the verification needs nothing but PyNaCl (the aggregator's own code is not used:
the two sides never import each other).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing
import numpy as np
import numpy.typing as npt

from edge_client.identity import Enrollment
from native.errors import ConfigError, IntegrityError, ProtocolError, TransportError

log = logging.getLogger(__name__)

ENROLL_DOMAIN = b"fedgate/enroll/v1\x00"
MANIFEST_DOMAIN = b"fedgate/model-manifest/v1\x00"
MANIFEST_FORMAT = "fedgate-model-manifest/1"
MAX_JSON_BYTES = 4 << 20
MAX_BLOB_BYTES = 256 << 20


class RefusedError(ProtocolError):
    """The aggregator answered a request with a 4xx: it will refuse the same request again."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class GlobalModel:
    """A verified global model version: its flat parameters and its manifest."""

    version: int
    params: npt.NDArray[np.float32]
    manifest: dict[str, Any]


class AggregatorClient:
    """REST calls of one gateway against ``base_url`` (``http(s)://host:port``)."""

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _request(self, path: str, body: dict[str, Any] | None = None,
                 limit: int = MAX_JSON_BYTES) -> bytes:
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.base_url + path, data=data, method=(
            "GET" if body is None else "POST"), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                out: bytes = resp.read(limit + 1)
        except urllib.error.HTTPError as exc:
            detail = exc.read(4096).decode("utf-8", "replace")
            if 400 <= exc.code < 500:
                raise RefusedError(f"{path}: HTTP {exc.code}: {detail}", exc.code) from None
            raise TransportError(f"{path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise TransportError(f"{path}: aggregator unreachable: {exc}") from None
        if len(out) > limit:
            raise ProtocolError(f"{path}: response larger than {limit} bytes")
        return out

    def _json(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            parsed = json.loads(self._request(path, body))
        except ValueError:
            raise ProtocolError(f"{path}: response is not JSON") from None
        if not isinstance(parsed, dict):
            raise ProtocolError(f"{path}: response is not a JSON object")
        return parsed

    def enroll(self, key: nacl.signing.SigningKey, code: str, label: str = "") -> Enrollment:
        """Register ``key`` with a one-time enrollment ``code``."""
        if not code:
            raise ConfigError("not enrolled yet and no gateway.enrollment_code configured")
        proof = key.sign(ENROLL_DOMAIN + code.encode("utf-8")).signature
        out = self._json("/v1/gateways", {"code": code, "proof": proof.hex(), "label": label,
                                          "public_key": bytes(key.verify_key).hex()})
        try:
            rec = Enrollment(str(out["gateway_id"]), int(out["pid"]),
                             str(out["aggregator_public_key"]))
            if len(rec.server_key) != 32:
                raise ValueError("aggregator key is not 32 bytes")
        except (KeyError, ValueError, TypeError) as exc:
            raise ProtocolError(f"enrollment answer is malformed: {exc}") from None
        log.info("enrolled as %s (participant %d)", rec.gateway_id, rec.pid)
        return rec

    def latest_model(self, server_key: bytes, model: str, n_params: int,
                     cached: GlobalModel | None = None) -> GlobalModel:
        """Download and verify the newest version's training checkpoint (``cached`` is returned
        instead of a second download when the signed manifest names exactly its checkpoint)."""
        return self._model("/v1/models/latest", server_key, model, n_params, cached)

    def model_at(self, server_key: bytes, model: str, n_params: int, version: int,
                 checkpoint_sha256: bytes, cached: GlobalModel | None = None) -> GlobalModel:
        """Version ``version``, whose checkpoint must hash to ``checkpoint_sha256`` (the value a
        signed round config names); ``cached`` is used when it is that checkpoint."""
        if cached is not None and cached.version == version and hmac.compare_digest(
                checkpoint_digest(cached), checkpoint_sha256):
            return cached
        found = self._model(f"/v1/models/{int(version)}", server_key, model, n_params, None)
        if found.version != version or not hmac.compare_digest(checkpoint_digest(found),
                                                               checkpoint_sha256):
            raise IntegrityError(f"model version {version} is not the one the round config names")
        return found

    def _model(self, path: str, server_key: bytes, model: str, n_params: int,
               cached: GlobalModel | None) -> GlobalModel:
        meta = self._json(path)
        try:
            manifest_bytes = base64.b64decode(str(meta["manifest"]), validate=True)
            signature = bytes.fromhex(str(meta["signature"]))
        except (KeyError, ValueError) as exc:
            raise ProtocolError(f"model metadata is malformed: {exc}") from None
        manifest = verify_manifest(manifest_bytes, signature, server_key)
        ckpt = manifest.get("checkpoint")
        version = manifest.get("version")
        if not isinstance(ckpt, dict) or not isinstance(version, int):
            raise IntegrityError("signed manifest names no checkpoint")
        name = (manifest.get("config") or {}).get("model")
        if name not in (None, model):
            raise IntegrityError(f"global model is {name!r}, this gateway trains {model!r}")
        if cached is not None and cached.version == version and hmac.compare_digest(
                str((cached.manifest.get("checkpoint") or {}).get("sha256")),
                str(ckpt.get("sha256"))):
            return cached  # the same signed checkpoint, already verified
        blob = self._request(f"/v1/models/{version}/checkpoint", limit=MAX_BLOB_BYTES)
        if not hmac.compare_digest(hashlib.sha256(blob).hexdigest(), str(ckpt.get("sha256"))):
            raise IntegrityError(f"checkpoint of version {version} does not match its manifest")
        if len(blob) != 4 * n_params:
            raise IntegrityError(f"checkpoint holds {len(blob) // 4} values, model has {n_params}")
        params = np.frombuffer(blob, dtype="<f4").astype(np.float32)
        if not np.isfinite(params).all():
            raise IntegrityError("checkpoint holds NaN or infinity")
        return GlobalModel(version, params, manifest)


    def post_evaluation(self, version: int, gateway_id: str, report: bytes,
                        signature: bytes) -> dict[str, Any]:
        """Deliver a signed evaluation report of ``version`` (``native.evalreport``)."""
        return self._json(f"/v1/models/{int(version)}/evaluations", {
            "gateway_id": gateway_id, "report": base64.b64encode(report).decode("ascii"),
            "signature": signature.hex()})


def checkpoint_digest(model: GlobalModel) -> bytes:
    """The sha256 of a verified model's checkpoint, as its signed manifest states it."""
    try:
        return bytes.fromhex(str(model.manifest["checkpoint"]["sha256"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"model version {model.version} has no checkpoint hash") from exc


def verify_manifest(manifest: bytes, signature: bytes, server_key: bytes) -> dict[str, Any]:
    """Check the aggregator's signature over ``MANIFEST_DOMAIN + manifest``; return it parsed."""
    if len(signature) != 64 or len(server_key) != 32:
        raise IntegrityError("model signature must be 64 bytes and the key 32")
    try:
        nacl.signing.VerifyKey(server_key).verify(MANIFEST_DOMAIN + manifest, signature)
    except nacl.exceptions.BadSignatureError:
        raise IntegrityError("model manifest signature does not verify") from None
    try:
        parsed = json.loads(manifest.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise IntegrityError("signed manifest is not JSON") from None
    if not isinstance(parsed, dict) or parsed.get("format") != MANIFEST_FORMAT:
        raise IntegrityError(f"manifest format must be {MANIFEST_FORMAT!r}")
    return parsed
