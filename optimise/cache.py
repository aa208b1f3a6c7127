"""Where the build step keeps what it can make again: trained demo weights, students, the corpus."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "LEANSERVE_CACHE_DIR"


def cache_root() -> Path:
    """`$LEANSERVE_CACHE_DIR`, else `~/.cache/leanserve`."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "leanserve")
