"""Labelled training data: reading frames through ASE, checking labels, reproducible stratified splits.

A labelled frame is an ``ase.Atoms`` with a calculator holding energy (eV), forces (eV/Å) and
optionally stress (eV/Å³), plus ``info`` keys oracle/source/temperature_K/run_id
(docs/ARTIFACTS.md).  Any format ASE reads works: extxyz, ASE db, VASP vasprun.xml / OUTCAR
(XDATCAR has no labels and is refused, naming the file).
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from common.errors import InputError

METADATA_KEYS = ("oracle", "source", "temperature_K", "run_id")


def _has(atoms, prop: str) -> bool:
    calc = atoms.calc
    if calc is None:
        return False
    results = getattr(calc, "results", {}) or {}
    return prop in results and results[prop] is not None


def check_frames(frames: Sequence, origin: str = "the dataset", require_forces: bool = True) -> list:
    """Check every frame carries energy (and forces); return them as a list. InputError otherwise."""
    frames = list(frames)
    if not frames:
        raise InputError(f"{origin} contains no frames; give a file or list with labelled structures")
    for k, atoms in enumerate(frames):
        if not hasattr(atoms, "get_positions"):
            raise InputError(f"{origin}: item {k} is a {type(atoms).__name__}, not an ase.Atoms; pass labelled ase.Atoms frames")
        if not _has(atoms, "energy") and not _has(atoms, "free_energy"):
            raise InputError(f"{origin}: frame {k} has no energy label; use a file with energies "
                             "(extxyz with energy/forces, vasprun.xml, OUTCAR, ASE db)")
        if require_forces and not _has(atoms, "forces"):
            raise InputError(f"{origin}: frame {k} has no forces; force-field training needs forces "
                             "(extxyz with a forces column, vasprun.xml, OUTCAR, ASE db)")
        if len(atoms) == 0:
            raise InputError(f"{origin}: frame {k} has no atoms; remove empty structures")
    return frames


def read_frames(source, index: str = ":", require_forces: bool = True) -> list:
    """Labelled frames from a file path (any ASE format), a list of paths, or a list of ase.Atoms.

    Missing ``info['source']`` is set to ``file:<name>``; other metadata is kept as found.
    """
    if isinstance(source, (str, os.PathLike)):
        return _read_file(Path(source), index, require_forces)
    items = list(source)
    if items and all(isinstance(s, (str, os.PathLike)) for s in items):
        out = []
        for s in items:
            out.extend(_read_file(Path(s), index, require_forces))
        return out
    return check_frames(items, "the in-memory dataset", require_forces)


def _read_file(path: Path, index: str, require_forces: bool) -> list:
    from ase.io import read

    if not path.exists():
        raise InputError(f"data file {path} not found; check the --data path")
    if path.is_dir():
        raise InputError(f"data path {path} is a directory; give a file (extxyz, .db, vasprun.xml, OUTCAR)")
    try:
        frames = read(str(path), index=index)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - ASE raises many types for unreadable files
        raise InputError(f"cannot read {path} with ASE ({type(exc).__name__}: {exc}); "
                         "give extxyz, ASE db, vasprun.xml or OUTCAR") from None
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise InputError(f"{path} contains no frames; give a file with labelled structures")
    if not any(_has(a, "energy") or _has(a, "free_energy") for a in frames):
        raise InputError(f"{path} has no energy/force labels (e.g. XDATCAR holds positions only); "
                         "use vasprun.xml, OUTCAR, extxyz with energy and forces, or an ASE db")
    frames = check_frames(frames, str(path), require_forces)
    for atoms in frames:
        atoms.info.setdefault("source", f"file:{path.name}")
    return frames


def frame_labels(atoms) -> dict:
    """energy (eV), forces (eV/Å) and stress (3x3 eV/Å³ or None) of a labelled frame."""
    res = atoms.calc.results
    energy = res.get("energy", res.get("free_energy"))
    stress = res.get("stress")
    if stress is not None:
        stress = np.asarray(stress, dtype=float)
        if stress.shape == (6,):
            xx, yy, zz, yz, xz, xy = stress
            stress = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    return {"energy": float(energy), "forces": np.asarray(res["forces"], dtype=float), "stress": stress}


def check_single_oracle(frames: Iterable) -> str | None:
    """The one oracle of ``frames`` (None when unrecorded); InputError if several are mixed."""
    oracles = {a.info.get("oracle") for a in frames} - {None}
    if len(oracles) > 1:
        raise InputError(f"the dataset mixes labels from oracles {sorted(oracles)}; "
                         "train on one oracle's labels (filter the data store by oracle)")
    return next(iter(oracles), None)


def split_frames(frames: Sequence, val_fraction: float = 0.1, seed: int = 0,
                 stratify: bool = True, val_per_group: int | None = None) -> tuple[list, list]:
    """Reproducible train/validation split.

    With ``stratify`` the frames are grouped by (temperature_K, run_id or source) and each group
    gives ``val_fraction`` of its frames (at least one from groups of two or more) to validation,
    so every temperature and run is represented.  ``val_per_group`` (e.g. the study's 500 frames
    per temperature) takes that many frames per group instead of a fraction.  Same ``seed`` ->
    same split.
    """
    frames = list(frames)
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}; use e.g. 0.1")
    if val_per_group is not None and val_per_group < 0:
        raise InputError(f"val_per_group must be >= 0, got {val_per_group}")
    if (val_fraction == 0.0 and not val_per_group) or len(frames) < 2:
        return frames, []
    groups: dict = defaultdict(list)
    for k, atoms in enumerate(frames):
        key = (atoms.info.get("temperature_K"), atoms.info.get("run_id", atoms.info.get("source"))) if stratify else None
        groups[key].append(k)
    rng = np.random.default_rng(seed)
    val_idx: list[int] = []
    for key in sorted(groups, key=repr):
        idx = np.array(groups[key])
        rng.shuffle(idx)
        if val_per_group is not None:
            n_val = min(val_per_group, len(idx) - 1)
        else:
            n_val = int(round(val_fraction * len(idx)))
            if n_val == 0 and len(idx) >= 2:
                n_val = 1
        val_idx.extend(idx[:n_val].tolist())
    if len(val_idx) >= len(frames):
        val_idx = val_idx[:-1]
    val_set = set(val_idx)
    train = [frames[k] for k in range(len(frames)) if k not in val_set]
    val = [frames[k] for k in sorted(val_set)]
    return train, val


def metadata(atoms) -> dict:
    """The per-frame metadata kept through training (oracle, source, temperature_K, run_id)."""
    return {k: atoms.info[k] for k in METADATA_KEYS if k in atoms.info}
