"""aggregator package of fedgate."""

from __future__ import annotations
