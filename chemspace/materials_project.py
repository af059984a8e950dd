"""Known compositions from the Materials Project (mp-api), cached on disk.

The API key is read from ``MP_API_KEY`` in the environment only; it is never logged, printed or
stored.  Chemical systems are queried in chunks; each system's answer (the canonical keys of all
MP entries in exactly that system) is cached as JSON under the cache directory
(default ``~/.cache/matscreen/mp``), so a second run for the same systems makes no request.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from common.atomic import atomic_write_text
from common.errors import InputError
from chemspace.composition import formula_key

CHUNK = 50


def default_cache_dir() -> Path:
    """``$MATSCREEN_CACHE/mp`` or ``~/.cache/matscreen/mp``."""
    root = os.environ.get("MATSCREEN_CACHE") or Path.home() / ".cache" / "matscreen"
    return Path(root) / "mp"


def chemsys_of(elements) -> str:
    """Sorted, dash-joined chemical system ("Li-P-S")."""
    return "-".join(sorted(set(elements)))


class MPKnown:
    """Known keys per chemical system from the Materials Project, with an on-disk cache."""

    def __init__(self, cache_dir: str | Path | None = None):
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.requests = 0  # number of API calls made by this object

    def _cache_file(self, chemsys: str) -> Path:
        return self.cache_dir / f"{chemsys}.json"

    def cached(self, chemsys: str) -> set[str] | None:
        f = self._cache_file(chemsys)
        if f.is_file():
            return set(json.loads(f.read_text())["keys"])
        return None

    def keys(self, systems) -> set[str]:
        """Known canonical keys over the given chemical systems (iterables of symbols)."""
        wanted = sorted({chemsys_of(s) for s in systems})
        out: set[str] = set()
        missing = []
        for cs in wanted:
            got = self.cached(cs)
            if got is None:
                missing.append(cs)
            else:
                out |= got
        for i in range(0, len(missing), CHUNK):
            chunk = missing[i : i + CHUNK]
            answer = self._query(chunk)
            for cs in chunk:
                keys = sorted(answer.get(cs, set()))
                atomic_write_text(self._cache_file(cs), json.dumps({"chemsys": cs, "keys": keys}))
                out |= set(keys)
        return out

    def _query(self, chemsys: list[str]) -> dict[str, set[str]]:
        key = os.environ.get("MP_API_KEY", "").strip()
        if not key:
            raise InputError("MP_API_KEY is not set; export your Materials Project API key or use --known FILE")
        try:
            from mp_api.client import MPRester
        except ImportError:
            raise InputError("mp-api is not installed; pip install mp-api or use --known FILE") from None
        self.requests += 1
        try:
            with MPRester(key, mute_progress_bars=True) as mpr:
                docs = mpr.materials.summary.search(chemsys=chemsys, fields=["formula_pretty", "chemsys"])
        except Exception as exc:  # noqa: BLE001 - mp-api raises MPRestError, requests errors, ValueError
            text = str(exc).replace(key, "***").splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise InputError(f"Materials Project query failed ({text}); check MP_API_KEY and the network, or use --known FILE") from None
        answer: dict[str, set[str]] = {}
        for d in docs:
            cs = chemsys_of(str(d.chemsys).split("-"))
            answer.setdefault(cs, set()).add(formula_key(d.formula_pretty))
        return answer
