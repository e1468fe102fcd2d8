"""One router per REST resource; each module exposes ``build() -> APIRouter``."""

from __future__ import annotations
