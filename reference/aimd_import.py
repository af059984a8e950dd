"""Import existing AIMD trajectories (vasprun.xml, OUTCAR, extxyz) into the labelled data store.

Every frame must carry an energy (eV) and forces (eV/Å); a file without them is refused with its
name.  XDATCAR holds positions only (no energies or forces), so it is refused: convert the run's
vasprun.xml or OUTCAR instead.  Truncated VASP files (a run killed mid-write) are refused unless
``allow_truncated=True``, which keeps the complete frames only.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from common.errors import InputError

log = logging.getLogger(__name__)

FORMATS = {"vasprun": "vasp-xml", "outcar": "vasp-out", "xdatcar": "vasp-xdatcar", "extxyz": "extxyz"}


def detect_format(path: Path) -> str:
    """One of vasprun, outcar, xdatcar, extxyz (from the file name)."""
    name = path.name.lower()
    if name.endswith(".xml") or "vasprun" in name:
        return "vasprun"
    if "outcar" in name:
        return "outcar"
    if "xdatcar" in name:
        return "xdatcar"
    if name.endswith((".xyz", ".extxyz")):
        return "extxyz"
    raise InputError(f"{path.name}: unknown AIMD file type; give vasprun.xml, OUTCAR or .extxyz (or --format)")


def read_labelled_frames(path: str | os.PathLike, fmt: str | None = None, oracle: str | None = None,
                         temperature_K: float | None = None, run_id: str | None = None,
                         allow_truncated: bool = False, stride: int = 1) -> list:
    """Labelled ase.Atoms from an AIMD file (see module docstring); InputError on any bad input.

    ``oracle`` names the level of theory (e.g. ``vasp-pbe``); default ``vasp`` for VASP files and
    the frames' own ``info['oracle']`` for extxyz (required there).
    """
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import read

    from md.formats import truncated

    path = Path(path)
    if not path.is_file():
        raise InputError(f"AIMD file {path} not found; check the path")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "xdatcar":
        raise InputError(f"{path.name}: XDATCAR has positions only, no energies or forces; "
                         "import the run's vasprun.xml or OUTCAR instead")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty; give a complete {fmt} file")
    if fmt in ("vasprun", "outcar") and truncated(path, FORMATS[fmt]) and not allow_truncated:
        raise InputError(f"{path.name} is truncated (the run stopped mid-write); re-run, or pass "
                         "--allow-truncated to keep the complete frames only")
    if stride < 1:
        raise InputError(f"stride must be >= 1 (got {stride})")
    try:
        frames = list(read(path, index=f"::{stride}", format=FORMATS[fmt]))
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - every parser error is bad input
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path.name} is not a readable {fmt} file ({msg[:120]}); check or regenerate it") from None
    if not frames:
        raise InputError(f"{path.name} holds no frames; give a file with at least one ionic step")
    default_oracle = oracle or ("vasp" if fmt in ("vasprun", "outcar") else None)
    out = []
    for i, atoms in enumerate(frames):
        res = dict(atoms.calc.results) if atoms.calc is not None else {}
        if "energy" not in res or "forces" not in res or res.get("forces") is None:
            missing = "energy and forces" if "energy" not in res else "forces"
            raise InputError(f"{path.name}: frame {i * stride} has no {missing}; only labelled frames can be "
                             "imported (XDATCAR-like data cannot train a force field)")
        forces = np.asarray(res["forces"], dtype=float)
        energy = float(res["energy"])
        if forces.shape != (len(atoms), 3) or not np.isfinite(forces).all() or not np.isfinite(energy):
            raise InputError(f"{path.name}: frame {i * stride} has non-finite or mis-shaped energy/forces; "
                             "check the file")
        frame_oracle = default_oracle or atoms.info.get("oracle")
        if not frame_oracle:
            raise InputError(f"{path.name}: frames do not say which method labelled them; pass --oracle "
                             "(e.g. vasp-pbe)")
        labelled = atoms.copy()
        kw = {"stress": np.asarray(res["stress"])} if res.get("stress") is not None else {}
        labelled.calc = SinglePointCalculator(labelled, energy=energy, forces=forces, **kw)
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
