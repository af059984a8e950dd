"""Import existing AIMD trajectories (vasprun.xml, OUTCAR, extxyz, any labelled format ASE reads) into the
labelled data store.

Every frame must carry an energy (eV) and forces (eV/Å); a file without them is refused with its
name.  XDATCAR holds positions only (no energies or forces), so it is refused: convert the run's
vasprun.xml or OUTCAR instead.  Truncated VASP files (a run killed mid-write) are refused unless
``allow_truncated=True``, which keeps the complete frames only.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from common.errors import InputError

log = logging.getLogger(__name__)

def read_labelled_frames(path: str | os.PathLike, fmt: str | None = None, oracle: str | None = None,
                         temperature_K: float | None = None, run_id: str | None = None,
                         allow_truncated: bool = False, stride: int = 1) -> list:
    """Labelled ase.Atoms from an AIMD file, read by the one reader (``common.formats.read_labelled``: any
    format ASE reads, ``fmt`` an ASE name or vasprun/outcar/xdatcar), tagged for the store; InputError on any
    bad input.  ``oracle`` names the level of theory (e.g. ``vasp-pbe``); default ``vasp`` for VASP files and
    the frames' own ``info['oracle']`` otherwise (required there).
    """
    from ase.calculators.singlepoint import SinglePointCalculator

    from common.formats import detect_format, labels_of, read_labelled

    path = Path(path)
    if stride < 1:
        raise InputError(f"stride must be >= 1 (got {stride})")
    if path.is_file() and path.stat().st_size and detect_format(path, fmt) == "vasp-xdatcar":
        raise InputError(f"{path.name}: XDATCAR has positions only, no energies or forces; "
                         "import the run's vasprun.xml or OUTCAR instead")
    frames, fmt = read_labelled(path, fmt, f"::{stride}", allow_truncated=allow_truncated)
    default_oracle = oracle or ("vasp" if fmt.startswith("vasp") else None)
    out = []
    for atoms in frames:
        lab = labels_of(atoms)
        frame_oracle = default_oracle or atoms.info.get("oracle")
        if not frame_oracle:
            raise InputError(f"{path.name}: frames do not say which method labelled them; pass --oracle "
                             "(e.g. vasp-pbe)")
        labelled = atoms.copy()
        kw = {"stress": np.asarray(lab["stress"])} if lab["stress"] is not None else {}
        labelled.calc = SinglePointCalculator(labelled, energy=lab["energy"], forces=lab["forces"], **kw)
        info = {k: v for k, v in atoms.info.items() if isinstance(v, (str, int, float, bool))}
        info.update(oracle=str(frame_oracle), source=f"aimd:{path.name}")
        t = temperature_K if temperature_K is not None else atoms.info.get("temperature_K")
        if t is not None:
            info["temperature_K"] = float(t)
        if run_id is not None:
            info["run_id"] = str(run_id)
        labelled.info = info
        out.append(labelled)
    return out


def import_aimd(paths, store, **kwargs) -> dict:
    """Read every file first (all or nothing), then append one shard per file; returns counts per file."""
    per_file = [(Path(p), read_labelled_frames(p, **kwargs)) for p in paths]
    result = {}
    for p, frames in per_file:
        store.append(frames)
        result[str(p)] = len(frames)
    return result
