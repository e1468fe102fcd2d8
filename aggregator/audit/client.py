"""The auditor's REST client: reads an aggregator's public (and, with a token, admin) routes.

Plain ``urllib``: an audit should need nothing an operator's laptop lacks. Answers are bounded
in size before they are parsed. A refusal keeps the aggregator's status and reason label, so the
audit can tell "this version does not exist" (the operator's typo) from "the aggregator refuses
to serve a stored version" (a finding).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from native.errors import ConfigError, FedgateError, TransportError

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 64 << 20
MAX_BLOB_BYTES = 256 << 20


class HttpRefusal(FedgateError):
    """The aggregator answered with an error status (its reason label kept)."""

    def __init__(self, path: str, status: int, reason: str, detail: str) -> None:
        super().__init__(f"{path}: HTTP {status} {reason}: {detail}")
        self.path = path
        self.status = status
        self.reason = reason
        self.detail = detail


def check_base_url(url: str) -> str:
    """``http(s)://host[:port]`` without a trailing slash; ``ConfigError`` otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--aggregator must be http(s)://host[:port], got {url!r}")
    return url.rstrip("/")


class AuditClient:
    """GET requests against one aggregator."""

    def __init__(self, base_url: str, timeout_s: float = 30.0,
                 admin_token: str | None = None) -> None:
        self.base_url = check_base_url(base_url)
        self.timeout_s = timeout_s
        self.admin_token = admin_token

    def _get(self, path: str, limit: int, admin: bool) -> bytes:
        headers = {"Accept": "application/json"}
        if admin and self.admin_token:
            headers["Authorization"] = f"Bearer {self.admin_token}"
        req = urllib.request.Request(self.base_url + path, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                out: bytes = resp.read(limit + 1)
        except urllib.error.HTTPError as exc:
            raise _refusal(path, exc) from None
        except (urllib.error.URLError, OSError) as exc:
            raise TransportError(f"aggregator {self.base_url} unreachable: {exc}") from None
        if len(out) > limit:
            raise TransportError(f"{path}: answer larger than {limit} bytes")
        return out

    def json(self, path: str, *, admin: bool = False) -> Any:
        """A JSON answer; ``TransportError`` when it is not JSON."""
        try:
            return json.loads(self._get(path, MAX_JSON_BYTES, admin))
        except ValueError:
            raise TransportError(f"{path}: answer is not JSON") from None

    def obj(self, path: str, *, admin: bool = False) -> dict[str, Any]:
        """A JSON object answer; ``TransportError`` for anything else."""
        out = self.json(path, admin=admin)
        if not isinstance(out, dict):
            raise TransportError(f"{path}: answer is not a JSON object")
        return out

    def blob(self, path: str) -> bytes:
        """A binary answer (a model or checkpoint blob)."""
        return self._get(path, MAX_BLOB_BYTES, False)


def _refusal(path: str, exc: urllib.error.HTTPError) -> HttpRefusal:
    text = exc.read(8192).decode("utf-8", "replace")
    reason, detail = f"http_{exc.code}", text[:500]
    try:
        body = json.loads(text)
        if isinstance(body, dict):
            reason = str(body.get("error") or reason)
            detail = str(body.get("detail") or detail)[:500]
    except ValueError:
        pass
    return HttpRefusal(path, exc.code, reason, detail)
