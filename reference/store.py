"""The labelled data store: every labelled frame, queryable by elements; safe for concurrent writers.

Layout (a directory, local or on a shared filesystem)::

    <root>/shards/<utc time>-<host>-<pid>-<random>.extxyz    one file per append, never modified
    <root>/shards/campaign-<campaign>-<step>-r<n>.extxyz      a campaign step's labels (``write_shard``:
                                                             deterministic, so a retried step rewrites
                                                             its own shard instead of adding frames twice)

A training set is a :class:`Selection`: frames named by (shard, index in shard) with a fingerprint
that changes exactly when the selection does (shards are immutable, so it names the same frames
later).  ``LabelStore.select`` builds one by shared elements; ``LabelStore.frames_of`` reads it.

Each ``append`` writes its frames to a temporary file in ``shards/`` and renames it into place
(atomic on POSIX), so several processes can append at once without locks, readers only ever see
complete shards, and a crash mid-write loses nothing already stored (at worst a hidden ``.tmp``
file is left, which readers ignore).  Frames are extended-XYZ with energy (eV), forces (eV/Å),
stress (eV/Å³) and the info keys oracle, source, temperature_K, run_id (docs/ARTIFACTS.md).

The root is a path or a ``file://`` URI; default ``$MATSCREEN_STORE`` or ``.matscreen/store``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import urlparse

import numpy as np

from common.atomic import atomic_path
from common.errors import InputError

DEFAULT_STORE = ".matscreen/store"
REQUIRED_INFO = ("oracle", "source")


def default_store_path() -> str:
    return os.environ.get("MATSCREEN_STORE") or DEFAULT_STORE


def _root_from_uri(uri: str | os.PathLike) -> Path:
    text = str(uri)
    parsed = urlparse(text)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(parsed.path if parsed.scheme == "file" else text).expanduser()
    raise InputError(f"store URI {text!r}: scheme {parsed.scheme!r} is not supported; give a directory path "
                     "or file:// URI on a filesystem every worker mounts")


def elements_of(formula_or_atoms) -> set[str]:
    """Element symbols of a formula string (``Li10SiP2S12``), a pymatgen object or ase.Atoms."""
    if hasattr(formula_or_atoms, "get_chemical_symbols"):
        return set(formula_or_atoms.get_chemical_symbols())
    if hasattr(formula_or_atoms, "composition"):
        return {e.symbol for e in formula_or_atoms.composition.elements}
    if isinstance(formula_or_atoms, (set, list, tuple, frozenset)):
        return {str(e) for e in formula_or_atoms}
    from pymatgen.core import Composition

    try:
        return {e.symbol for e in Composition(str(formula_or_atoms)).elements}
    except Exception:  # noqa: BLE001
        raise InputError(f"cannot parse formula {formula_or_atoms!r}; give e.g. Li10GeP2S12") from None


def validate_frame(atoms, where: str = "frame") -> None:
    """Raise InputError unless ``atoms`` is a labelled frame (energy, forces, oracle, source)."""
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", {}) if calc is not None else {}
    if "energy" not in results or "forces" not in results:
        raise InputError(f"{where} has no energy/forces; only labelled frames can be stored (label them with an oracle)")
    for key in REQUIRED_INFO:
        if not atoms.info.get(key):
            raise InputError(f"{where} lacks info[{key!r}]; set atoms.info['{key}'] (see docs/ARTIFACTS.md)")
    f = np.asarray(results["forces"])
    if f.shape != (len(atoms), 3) or not np.isfinite(f).all() or not np.isfinite(results["energy"]):
        raise InputError(f"{where} has non-finite or mis-shaped energy/forces; drop it or relabel it")


@dataclass
class Selection:
    """Frames of one oracle named by ``shards`` = [[shard file name, [indices]], ...] (see module docstring)."""
    shards: list
    oracle: str
    n_frames: int = 0
    fingerprint: str = ""

    def __post_init__(self):
        self.shards = [[str(name), [int(i) for i in idx]] for name, idx in self.shards if idx]
        self.n_frames = sum(len(i) for _, i in self.shards)
        text = json.dumps([self.oracle, self.shards], sort_keys=True)
        self.fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]

    def keep(self, predicate) -> "Selection":
        """The frames ``(shard, index)`` for which ``predicate(shard, index)`` is true."""
        return Selection([[name, [i for i in idx if predicate(name, i)]] for name, idx in self.shards], self.oracle)

    def thinned(self, mine, at_most: int) -> "Selection":
        """Every frame of a shard ``mine(name)`` accepts, and at most ``at_most`` of the others, evenly spaced
        over them in selection order (deterministic)."""
        others = [(name, i) for name, idx in self.shards if not mine(name) for i in idx]
        if len(others) <= at_most:
            return self
        step = len(others) / at_most
        kept = {others[int(k * step)] for k in range(at_most)}
        return self.keep(lambda name, i: mine(name) or (name, i) in kept)

    def addresses(self) -> set[tuple[str, int]]:
        return {(name, i) for name, idx in self.shards for i in idx}

    def to_dict(self) -> dict:
        return {"shards": self.shards, "oracle": self.oracle, "n_frames": self.n_frames,
                "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, d: dict) -> "Selection":
        return cls(shards=d["shards"], oracle=d["oracle"])


def shard_name(campaign: str, step: str, n: int) -> str:
    """Deterministic shard file name of a campaign step's labels: ``campaign-<campaign>-<step>-r<n>.extxyz``."""
    return re.sub(r"[^A-Za-z0-9._@-]", "_", f"campaign-{campaign}-{step}-r{n}") + ".extxyz"


@dataclass
class StoreStats:
    n_frames: int
    n_shards: int
    by_oracle: dict
    by_source: dict
    by_formula: dict
    elements: list

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class LabelStore:
    """Append-only, shard-per-write store of labelled frames (see module docstring)."""

    def __init__(self, root: str | os.PathLike | None = None, create: bool = True):
        self.root = _root_from_uri(root if root is not None else default_store_path())
        self.shards_dir = self.root / "shards"
        if create:
            try:
                self.shards_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"cannot create store {self.root}: {exc.strerror}; choose a writable --store") from None
        elif not self.shards_dir.is_dir():
            raise InputError(f"no data store at {self.root}; import or label data first, or give the right --store")
        self._cache: dict[str, list] = {}
        self._summaries: dict[str, tuple[tuple, list]] = {}

    # -- writing ------------------------------------------------------------------------------------
    def append(self, frames: Sequence, run_id: str | None = None) -> Path | None:
        """Store ``frames`` (labelled ase.Atoms) as one new shard; returns its path (None if empty)."""
        frames = list(frames)
        if not frames:
            return None
        for i, atoms in enumerate(frames):
            validate_frame(atoms, where=f"frame {i}")
            if run_id is not None and "run_id" not in atoms.info:
                atoms.info["run_id"] = str(run_id)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        return self._write(f"{stamp}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}.extxyz", frames)

    def _write(self, name: str, frames: list) -> Path:
        """Frames as ``shards/<name>``: a hidden temporary file, fsynced, then renamed (atomic)."""
        from ase.io import write

        target = self.shards_dir / name
        with atomic_path(target) as tmp:
            with open(tmp, "w") as fh:
                write(fh, frames, format="extxyz")
                fh.flush()
                os.fsync(fh.fileno())
        self._cache.pop(name, None)
        self._summaries.pop(name, None)
        return target

    def write_shard(self, name: str, frames: Sequence, run_id: str | None = None) -> Path:
        """Store ``frames`` as the shard ``name`` (see :func:`shard_name`), replacing a previous write of it.

        For a step that may be retried after a crash: the same step writes the same name, so its frames are
        never stored twice.  Written to a hidden temporary file and renamed (readers never see half a shard).
        """
        frames = list(frames)
        if not frames:
            raise InputError(f"shard {name}: no frames to store")
        if "/" in name or not name.endswith(".extxyz") or name.startswith("."):
            raise InputError(f"shard name {name!r} must be a plain '<name>.extxyz' file name")
        for i, atoms in enumerate(frames):
            if run_id is not None:
                atoms.info["run_id"] = str(run_id)
            atoms.info.pop("step", None)
            validate_frame(atoms, where=f"frame {i} of shard {name}")
        return self._write(name, frames)

    # -- reading ------------------------------------------------------------------------------------
    def shards(self) -> list[Path]:
        """Complete shard files, oldest first (hidden temporary files are ignored)."""
        return sorted(p for p in self.shards_dir.glob("*.extxyz") if not p.name.startswith("."))

    def _read_shard(self, path: Path) -> list:
        from ase.io import read

        key = path.name
        if key not in self._cache:
            frames = list(read(path, ":", format="extxyz", do_not_split_by_at_sign=True))
            for a in frames:
                a.info.setdefault("shard", key)
            self._cache[key] = frames
        return self._cache[key]

    def frames(self) -> list:
        """Every stored frame (copies with their SinglePointCalculator)."""
        out = []
        for p in self.shards():
            for a in self._read_shard(p):
                out.append(_copy_frame(a))
        return out

    def __len__(self) -> int:
        return sum(len(self._read_shard(p)) for p in self.shards())

    def query(self, elements_subset: Iterable[str] | None = None, shares_with=None, min_shared: int = 1,
              oracle: str | None = None, source: str | None = None, temperature_K: float | None = None,
              run_id: str | None = None) -> list:
        """Frames matching every given filter.

        ``elements_subset``: frame elements must be a subset of these (e.g. {Li,Ge,P,S}).
        ``shares_with`` + ``min_shared``: frame shares at least ``min_shared`` elements with this
        formula (e.g. Li10SiP2S12) — the trainer's shared-element data.  ``source`` matches a prefix.
        """
        allowed = elements_of(elements_subset) if elements_subset is not None else None
        target = elements_of(shares_with) if shares_with is not None else None
        out = []
        for p in self.shards():
            for a in self._read_shard(p):
                els = set(a.get_chemical_symbols())
                if allowed is not None and not els <= allowed:
                    continue
                if target is not None and len(els & target) < int(min_shared):
                    continue
                if oracle is not None and a.info.get("oracle") != oracle:
                    continue
                if source is not None and not str(a.info.get("source", "")).startswith(source):
                    continue
                if temperature_K is not None and not np.isclose(float(a.info.get("temperature_K", np.nan)), temperature_K):
                    continue
                if run_id is not None and str(a.info.get("run_id")) != str(run_id):
                    continue
                out.append(_copy_frame(a))
        return out

    def training_set(self, oracle: str | None = None, forces_only_oracles: Sequence[str] = (), **filters) -> list:
        """Frames for training: energies from ONE oracle only.

        With several oracles in the selection and no ``oracle`` given this raises InputError.  Frames
        of ``forces_only_oracles`` are added with ``info['energy_weight'] = 0`` (forces-only mixing,
        only when configured); their energies must not be trained on.
        """
        frames = self.query(**filters)
        oracles = Counter(a.info.get("oracle") for a in frames)
        if oracle is None:
            main = [o for o in oracles if o not in forces_only_oracles]
            if len(main) > 1:
                raise InputError(f"selected frames come from {len(main)} oracles ({', '.join(sorted(main))}); "
                                 "energies must not be mixed: choose one with --oracle")
            oracle = main[0] if main else None
        out = []
        for a in frames:
            o = a.info.get("oracle")
            if o == oracle:
                a.info["energy_weight"] = 1.0
                out.append(a)
            elif o in forces_only_oracles:
                a.info["energy_weight"] = 0.0
                out.append(a)
        return out

    def _summary(self, path: Path) -> list[tuple[frozenset, str | None]]:
        """(elements, oracle) of every frame of a shard, cached by (size, mtime)."""
        st = path.stat()
        stamp = (st.st_size, st.st_mtime_ns)
        hit = self._summaries.get(path.name)
        if hit is None or hit[0] != stamp:          # frames streamed, only their summaries kept
            from ase.io import iread

            self._cache.pop(path.name, None)
            hit = (stamp, [(frozenset(a.get_chemical_symbols()), a.info.get("oracle"))
                           for a in iread(path, ":", format="extxyz", do_not_split_by_at_sign=True)])
            self._summaries[path.name] = hit
        return hit[1]

    def select(self, elements: Iterable[str], min_shared: int, oracle: str) -> Selection:
        """Frames of ``oracle`` sharing at least ``min_shared`` elements with ``elements`` (a training set)."""
        elements = set(elements)
        chosen = []
        for path in self.shards():
            idx = [i for i, (els, orc) in enumerate(self._summary(path))
                   if orc == oracle and len(els & elements) >= min_shared]
            chosen.append([path.name, idx])
        return Selection(chosen, oracle)

    def frames_of(self, selection: Selection) -> list:
        """The labelled frames a selection names (copies), in selection order."""
        out = []
        for name, idx in selection.shards:
            path = self.shards_dir / name
            if not path.is_file():
                raise InputError(f"shard {name} of a recorded training set is missing from {self.root}; "
                                 "restore the store or start the campaign under a new name")
            frames = self._read_shard(path)
            out += [_copy_frame(frames[i]) for i in idx]
        return out

    def iter_frames(self, selection: Selection):
        """The frames a selection names, one shard read at a time and nothing kept (for streamed training)."""
        from ase.io import iread

        for name, idx in selection.shards:
            path = self.shards_dir / name
            if not path.is_file():
                raise InputError(f"shard {name} of a recorded training set is missing from {self.root}; "
                                 "restore the store or start the campaign under a new name")
            wanted = set(idx)
            for i, atoms in enumerate(iread(path, ":", format="extxyz", do_not_split_by_at_sign=True)):
                if i in wanted:
                    yield atoms

    def stats(self) -> StoreStats:
        frames = [a for p in self.shards() for a in self._read_shard(p)]
        els = sorted({s for a in frames for s in a.get_chemical_symbols()})
        return StoreStats(n_frames=len(frames), n_shards=len(self.shards()),
                          by_oracle=dict(Counter(a.info.get("oracle", "?") for a in frames)),
                          by_source=dict(Counter(str(a.info.get("source", "?")).split(":")[0] for a in frames)),
                          by_formula=dict(Counter(a.get_chemical_formula(mode="reduce") for a in frames)),
                          elements=els)


def _copy_frame(atoms):
    from ase.calculators.singlepoint import SinglePointCalculator

    out = atoms.copy()
    out.info = {k: v for k, v in atoms.info.items() if k != "shard"}
    res = dict(atoms.calc.results) if atoms.calc is not None else {}
    out.calc = SinglePointCalculator(out, **{k: v for k, v in res.items()
                                              if k in ("energy", "forces", "stress", "free_energy")})
    return out
