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


def iter_frames(paths, require_forces: bool = True):
    """Labelled frames of data files one at a time (``common.formats.iter_frames``: a file is never held whole)."""
    from common import formats

    for p in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        path = Path(p)
        for k, atoms in enumerate(formats.iter_frames(path)):
            check_frames([atoms], f"{path} frame {k}", require_forces)
            atoms.info.setdefault("source", f"file:{path.name}")
            yield atoms


def _read_file(path: Path, index: str, require_forces: bool) -> list:
    """Labelled frames of one file by the one reader (``common.formats.read_labelled``), checked for training."""
    from common.formats import read_labelled

    frames, _ = read_labelled(path, index=index, require_forces=False)
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


def frame_group(info: dict):
    """The stratification key of a frame: (temperature_K, run_id or source)."""
    return (info.get("temperature_K"), info.get("run_id", info.get("source")))


def split_indices(groups: Sequence, val_fraction: float = 0.1, seed: int = 0,
                  val_per_group: int | None = None) -> tuple[list[int], list[int]]:
    """Reproducible (train, validation) indices of frames with stratification keys ``groups``.

    Each group gives ``val_fraction`` of its frames (at least one from groups of two or more), or
    ``val_per_group`` frames (e.g. the study's 500 per temperature), to validation.  Same seed -> same split.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}; use e.g. 0.1")
    if val_per_group is not None and val_per_group < 0:
        raise InputError(f"val_per_group must be >= 0, got {val_per_group}")
    n = len(groups)
    if (val_fraction == 0.0 and not val_per_group) or n < 2:
        return list(range(n)), []
    by_group: dict = defaultdict(list)
    for k, key in enumerate(groups):
        by_group[key].append(k)
    rng = np.random.default_rng(seed)
    val_idx: list[int] = []
    for key in sorted(by_group, key=repr):
        idx = np.array(by_group[key])
        rng.shuffle(idx)
        if val_per_group is not None:
            n_val = min(val_per_group, len(idx) - 1)
        else:
            n_val = int(round(val_fraction * len(idx)))
            if n_val == 0 and len(idx) >= 2:
                n_val = 1
        val_idx.extend(idx[:n_val].tolist())
    if len(val_idx) >= n:
        val_idx = val_idx[:-1]
    val_set = set(val_idx)
    return [k for k in range(n) if k not in val_set], sorted(val_set)


def split_frames(frames: Sequence, val_fraction: float = 0.1, seed: int = 0,
                 stratify: bool = True, val_per_group: int | None = None) -> tuple[list, list]:
    """Reproducible train/validation split of frames (:func:`split_indices` on their :func:`frame_group`;
    one group for all with ``stratify=False``)."""
    frames = list(frames)
    groups = [repr(frame_group(a.info)) if stratify else "" for a in frames]   # the frame cache's keys too
    train, val = split_indices(groups, val_fraction, seed, val_per_group)
    return [frames[k] for k in train], [frames[k] for k in val]


def metadata(atoms) -> dict:
    """The per-frame metadata kept through training (oracle, source, temperature_K, run_id)."""
    return {k: atoms.info[k] for k in METADATA_KEYS if k in atoms.info}
