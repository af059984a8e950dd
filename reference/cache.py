"""The on-disk cache directory (relaxed structures, Materials Project downloads).

``MATSCREEN_CACHE`` if set, else ``~/.cache/matscreen``.  Entries are written atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cache_dir(sub: str = "") -> Path:
    """The cache directory (created on demand), optionally a sub-folder of it."""
    root = Path(os.environ.get("MATSCREEN_CACHE") or Path.home() / ".cache" / "matscreen")
    path = root / sub if sub else root
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_key(*parts) -> str:
    """A short stable hash of JSON-serialisable ``parts``."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
