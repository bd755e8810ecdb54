"""Where backends keep files across runs (TensorRT timing caches, int8 models): $RESBENCH_CACHE_DIR, else
$XDG_CACHE_HOME/resbench, else ~/.cache/resbench."""

from __future__ import annotations

import os
import re
from pathlib import Path


def cache_dir() -> Path:
    """$RESBENCH_CACHE_DIR, else $XDG_CACHE_HOME/resbench, else ~/.cache/resbench."""
    if os.environ.get("RESBENCH_CACHE_DIR"):
        return Path(os.environ["RESBENCH_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "resbench"


def slug(text: str) -> str:
    """A file-name-safe, lower-case form of `text` ('NVIDIA H200' -> 'nvidia-h200')."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()
