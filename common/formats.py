"""The one reader of foreign files: trajectories and labelled frames in any format ASE reads.

One format vocabulary: ASE's format names (``extxyz``, ``vasp-xml``, ``vasp-out``, ``vasp-xdatcar``,
``traj``, ``db``, ``lammps-dump-text``, ...), plus the short names ``vasprun``, ``outcar`` and ``xdatcar``
(:data:`ALIASES`).  :func:`read_frames` is the one place a foreign file is opened: existence, emptiness,
truncated VASP output and parser errors are checked there.  On top of it:

* :func:`read_any`: one system's trajectory (``common.trajectory.Trajectory``), which
  :func:`md.trajectory.load_trajectory` uses for every file that is not the service's own HDF5, so
  ``matscreen analyze``, the campaign (a user's AIMD as the reference) and the benchmark read foreign
  trajectories the same way;
* :func:`read_labelled`: frames that carry an energy (eV) and forces (eV/Å), for the data store
  (``reference.aimd_import``) and for training (``models.data``).

Trajectories:

* formats: everything ``ase.io.read`` reads, chosen from the file name or its content (``fmt``
  overrides): extxyz/xyz, VASP XDATCAR, vasprun.xml, OUTCAR, ASE ``.traj``, LAMMPS text dumps
  (``lammps-dump-text``; its data file, ``topology``, gives the elements of the atom types) ...;
  gzip/bzip2/xz-compressed files (``run.extxyz.gz``) are read as they are;
* time between frames (fs): from the file where it says (vasprun.xml and OUTCAR: ``POTIM``, every ionic
  step is stored; extxyz/traj: a ``time_fs`` per frame), else ``dt_fs`` is required and the error
  says so; a ``dt_fs`` that disagrees with the file's is an error;
* temperature (K), the thermostat's target: ``temperature_K``, else the file's setting (``TEBEG``, a
  ``target_temperature_K`` per frame, or a ``temperature_K`` per frame that is the same in every frame), else
  unknown (no conductivity, and no comparison of temperatures); a per-frame ``temperature_K`` that varies is
  an instantaneous temperature (``temperatures_K``), never the target;
* positions: unwrapped by the minimum image between consecutive frames (wrapped and already unwrapped
  files give the same trajectory, as long as no atom moves half a cell between two frames);
* one system per file: a frame whose atom count, atom order or cell differs from the first frame's is
  an error naming the frame (analyse a constant-cell run);
* energies (eV) where every frame has one; instantaneous temperatures where the frames carry velocities.

Units: Å, fs, K, eV.  Every problem is an ``InputError`` naming the file and the fix.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError

class MissingTimeStep(InputError):
    """The file does not record the time between its frames, and no ``dt_fs`` was given."""


CELL_RTOL = 1e-4          # relative change of any cell entry (of the longest lattice vector) that counts as a new cell
COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
VASP_TEXT = ("vasp-xml", "vasp-out")
ALIASES = {"vasprun": "vasp-xml", "outcar": "vasp-out", "xdatcar": "vasp-xdatcar"}   # short names, same formats


def _open_text(path: Path):
    opener = COMPRESSED.get(path.suffix.lower())
    return opener(path, "rt", errors="replace") if opener else open(path, errors="replace")


def _head(path: Path, n: int = 2_000_000) -> str:
    with _open_text(path) as fh:
        return fh.read(n)


def _tail(path: Path, n: int = 8192) -> str:
    if path.suffix.lower() in COMPRESSED:
        with _open_text(path) as fh:
            text = ""
            for chunk in iter(lambda: fh.read(1 << 20), ""):
                text = (text + chunk)[-n:]
            return text
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - n))
        return fh.read().decode("utf-8", errors="replace")


def truncated(path: Path, fmt: str) -> bool:
    """True when a VASP text file lacks its closing lines (the run stopped mid-write)."""
    tail = _tail(path)
    if fmt == "vasp-xml":
        return "</modeling>" not in tail
    if fmt == "vasp-out":
        return "General timing and accounting" not in tail and "Voluntary context switches" not in tail
    return False


def vasp_setting(path: Path, fmt: str, name: str) -> float | None:
    """A numeric INCAR setting (``POTIM``, ``TEBEG``) as vasprun.xml or OUTCAR record it; None when absent."""
    head = _head(path)
    pattern = (rf'<i\s+name="{name}"\s*>\s*([-+0-9.Ee]+)' if fmt == "vasp-xml"
               else rf"\b{name}\s*=\s*([-+0-9.Ee]+)")
    m = re.search(pattern, head)
    return float(m.group(1)) if m else None


def detect_format(path: Path, fmt: str | None = None) -> str:
    """The ASE format name of ``path`` (``fmt`` when given: an ASE name or a short name of :data:`ALIASES`)."""
    from ase.io.formats import filetype, ioformats

    if fmt:
        fmt = ALIASES.get(fmt.lower(), fmt)
        if fmt not in ioformats:
            raise InputError(f"--format {fmt!r} is not an ASE format; use e.g. extxyz, vasp-xdatcar, vasp-xml, "
                             "vasp-out, traj or lammps-dump-text")
        return fmt
    name = Path(path).name.lower()
    if "vasprun" in name or name.endswith((".xml", ".xml.gz")):
        return "vasp-xml"                      # by its name, so a damaged file is reported as what it should be
    try:
        return filetype(str(path))
    except Exception:  # noqa: BLE001 - ASE raises several kinds for an unknown file
        raise InputError(f"{path}: unknown trajectory format; name the file like its format (run.extxyz, XDATCAR, "
                         "vasprun.xml, OUTCAR, run.traj) or pass --format (an ASE format name)") from None


def _opened(path: Path, fmt: str | None, allow_truncated: bool) -> tuple[str, dict]:
    """The checks before any parser sees ``path`` (there, not empty, not a truncated VASP file), its ASE format
    and the reader's keywords for it."""
    if not path.is_file():
        raise InputError(f"{path} not found" + ("; give a file, not a directory" if path.is_dir() else
                                                 "; check the path"))
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty; give a complete file")
    fmt = detect_format(path, fmt)
    if fmt in VASP_TEXT and truncated(path, fmt) and not allow_truncated:
        raise InputError(f"{path} is truncated (the run stopped mid-write); re-run it, or keep its complete frames "
                         "(--allow-truncated where offered, or convert them to extxyz)")
    kwargs = {}
    if fmt.startswith("lammps-dump"):
        kwargs["order"] = True          # frames sorted by atom id: the same order in every frame
    if fmt in ("extxyz", "xyz", "db", "json"):
        kwargs["do_not_split_by_at_sign"] = True      # "@g2" in a store shard's name is no index
    return fmt, kwargs


def _unreadable(path: Path, fmt: str, exc: Exception) -> InputError:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InputError(f"{path}: not a readable {fmt} file, or truncated ({msg[:120]}); check or regenerate it, "
                      "or pass --format")


def read_frames(path: str | os.PathLike, fmt: str | None = None, index: str = ":", topology: str | None = None,
                allow_truncated: bool = False) -> tuple[list, str]:
    """The frames ``index`` (``ase.io.read`` syntax) of a foreign file as ``ase.Atoms``, and the ASE format they
    were read as.  ``allow_truncated``: a VASP file cut off mid-write gives its complete frames (else an error);
    ``topology``: the LAMMPS data file naming a dump's atom types."""
    from ase.io import read

    path = Path(path)
    fmt, kwargs = _opened(path, fmt, allow_truncated)
    source: Any = str(path)
    if path.suffix in COMPRESSED and fmt in ("extxyz", "xyz"):
        # ASE's (ext)xyz reader seeks back once per frame, and a seek back in a compressed stream decompresses
        # it again from the start (quadratic: 41 of 44 s for 1201 frames); decompressed text seeks freely
        with COMPRESSED[path.suffix](path, "rt") as fh:
            source = io.StringIO(fh.read())
    try:
        frames = read(source, index=index, format=fmt, **kwargs)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - every parser error is bad input
        raise _unreadable(path, fmt, exc) from None
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise InputError(f"{path} holds no frames; give a file with at least one structure")
    if fmt.startswith("lammps-dump"):
        frames = _lammps_elements(path, frames, topology)
    return frames, fmt


def iter_frames(path: str | os.PathLike, fmt: str | None = None):
    """The frames of a foreign file one at a time (``ase.io.iread``: the file is never held whole), with the
    checks of :func:`read_frames`."""
    from ase.io import iread

    path = Path(path)
    fmt, kwargs = _opened(path, fmt, allow_truncated=False)
    try:
        yield from iread(str(path), ":", format=fmt, **kwargs)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - every parser error is bad input
        raise _unreadable(path, fmt, exc) from None


def labels_of(atoms) -> dict | None:
    """The energy (eV), forces (eV/Å, or None) and stress of a frame's calculator; None without an energy."""
    res = dict(atoms.calc.results) if atoms.calc is not None else {}
    energy = res.get("energy", res.get("free_energy"))
    if energy is None:
        return None
    forces = res.get("forces")
    return {"energy": float(energy), "forces": None if forces is None else np.asarray(forces, dtype=float),
            "stress": res.get("stress")}


def read_labelled(path: str | os.PathLike, fmt: str | None = None, index: str = ":", require_forces: bool = True,
                  allow_truncated: bool = False) -> tuple[list, str]:
    """Frames that carry an energy and (``require_forces``) finite forces of the right shape, and their format;
    a frame without them is an error naming it (XDATCAR holds positions only)."""
    frames, fmt = read_frames(path, fmt, index, allow_truncated=allow_truncated)
    name = Path(path).name
    for i, atoms in enumerate(frames):
        lab = labels_of(atoms)
        if lab is None or (require_forces and lab["forces"] is None):
            missing = "energy and forces" if lab is None else "forces"
            raise InputError(f"{name}: frame {i} has no {missing}; only labelled frames can train a force field "
                             "(give vasprun.xml, OUTCAR, extxyz with energy and forces, or an ASE db; XDATCAR "
                             "holds positions only)")
        if not np.isfinite(lab["energy"]) or (lab["forces"] is not None and (
                lab["forces"].shape != (len(atoms), 3) or not np.isfinite(lab["forces"]).all())):
            raise InputError(f"{name}: frame {i} has non-finite or mis-shaped energy/forces; check the file")
    return frames, fmt


def _lammps_elements(path: Path, frames: list, topology: str | None) -> list:
    """A LAMMPS dump knows atom types, not elements: its data file (masses) names them."""
    header = re.search(r"ITEM: ATOMS ([^\n]*)", _head(path, 200_000))
    symbols_known = header is not None and "element" in header.group(1).split()
    if topology is None:
        if symbols_known:
            return frames
        raise InputError(f"{path}: a LAMMPS dump holds atom types, not elements; pass --topology with the "
                         "run's LAMMPS data file (its Masses name the elements)")
    from ase.io import read

    try:
        data = read(topology, format="lammps-data", atom_style="atomic", sort_by_id=True)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{topology}: not a readable LAMMPS data file ({str(exc).strip()[:100]}); give the "
                         "data file the run started from (atom_style atomic)") from None
    if len(data) != len(frames[0]):
        raise InputError(f"{topology} has {len(data)} atoms but {path} has {len(frames[0])}; give the data file "
                         "of this run")
    for atoms in frames:
        atoms.numbers = data.numbers
    return frames


def _frame_times(frames: list) -> np.ndarray | None:
    times = [atoms.info.get("time_fs") for atoms in frames]
    if all(isinstance(t, (int, float)) for t in times):
        return np.asarray(times, dtype=float)
    return None


def read_checked(path: str | os.PathLike, fmt: str | None = None, topology: str | None = None) -> tuple[list, str]:
    """The frames of ``path`` as ``ase.Atoms`` (one system, constant cell) and the ASE format they were read as."""
    path = Path(path)
    frames, fmt = read_frames(path, fmt, topology=topology)
    if len(frames) < 2:
        raise InputError(f"{path} holds {len(frames)} frame(s); a trajectory needs at least 2 (give the whole run)")
    first = frames[0]
    n = len(first)
    scale = max(float(np.linalg.norm(first.cell[:], axis=1).max()), 1e-12)
    if not np.all(first.pbc) or abs(np.linalg.det(first.cell[:])) < 1e-9:
        raise InputError(f"{path}: frames have no periodic 3D cell; diffusion needs a periodic cell")
    for k, atoms in enumerate(frames):
        if len(atoms) != n:
            raise InputError(f"{path}: frame {k} has {len(atoms)} atoms, frame 0 has {n}; one system per file "
                             "(split the file, or give a run at constant atom count)")
        if not np.array_equal(atoms.numbers, first.numbers):
            raise InputError(f"{path}: frame {k} orders the atoms differently from frame 0; write every frame "
                             "in one atom order")
        if np.abs(atoms.cell[:] - first.cell[:]).max() > CELL_RTOL * scale:
            raise InputError(f"{path}: the cell changes at frame {k} (a constant-pressure run?); analyse a "
                             "constant-cell (NVT/NVE) trajectory")
    return frames, fmt


def time_between_frames(path: str | os.PathLike, file_dt: float | None, dt_fs: float | None) -> float:
    """The time between stored frames (fs): the file's own ``file_dt`` (:func:`file_dt_and_temperature`),
    else ``dt_fs``; an error when neither says, or when they disagree."""
    path = Path(path)
    if dt_fs is not None and (not np.isfinite(dt_fs) or dt_fs <= 0):
        raise InputError(f"--dt-fs must be a positive time between frames in fs, got {dt_fs}")
    if file_dt is not None and dt_fs is not None and abs(file_dt - dt_fs) > 1e-6 * file_dt:
        raise InputError(f"--dt-fs {dt_fs:g} disagrees with {path.name}'s {file_dt:g} fs between frames; omit --dt-fs "
                         "or fix it")
    dt = file_dt if file_dt is not None else dt_fs
    if dt is None:
        raise MissingTimeStep(f"{path} does not say the time between its frames; pass --dt-fs (fs between stored "
                              "frames, e.g. POTIM x NBLOCK for an XDATCAR)")
    return float(dt)


def read_any(path: str | os.PathLike, *, dt_fs: float | None = None, temperature_K: float | None = None,
             fmt: str | None = None, topology: str | None = None):
    """One system's trajectory from a file ASE reads (see the module docstring); an ``analysis.Trajectory``."""
    from common.trajectory import Trajectory, unwrap

    frames, fmt = read_checked(path, fmt, topology)
    file_dt, file_t = file_dt_and_temperature(Path(path), fmt, frames)
    dt = time_between_frames(path, file_dt, dt_fs)
    first = frames[0]
    cell = np.asarray(first.cell[:])                     # read_checked refuses a changing cell
    positions = np.stack([atoms.get_positions() for atoms in frames])
    frac = positions @ np.linalg.inv(cell)
    temps = (np.array([a.get_temperature() for a in frames]) if first.has("momenta") and
             np.any(first.get_momenta()) else None)
    if temps is None and file_t is None:
        temps = frame_values(frames, "temperature_K")     # varies from frame to frame: instantaneous
    target = temperature_K if temperature_K is not None else file_t
    return Trajectory(numbers=np.asarray(first.numbers, dtype=np.int64), positions=(frac % 1.0) @ cell,
                      unwrapped=unwrap(positions, cell), cells=np.stack([a.cell[:] for a in frames]),
                      steps=np.arange(len(frames)), dt_fs=dt, temperature_K=None if target is None else float(target),
                      temperatures_K=temps, potential_energy=_energies(frames), path=str(path),
                      metadata={"source": str(path), "format": fmt, "kind": "imported"})


def _energies(frames: list) -> np.ndarray | None:
    out = []
    for atoms in frames:
        calc = atoms.calc
        e = calc.results.get("energy") if calc is not None else None
        if e is None:
            return None
        out.append(float(e))
    return np.asarray(out)


def file_dt_and_temperature(path: Path, fmt: str, frames: list) -> tuple[float | None, float | None]:
    """The time between frames (fs) and the target temperature (K) the file records, None where it does not."""
    if fmt in VASP_TEXT:
        potim = vasp_setting(path, fmt, "POTIM")
        tebeg = vasp_setting(path, fmt, "TEBEG")
        return (potim if potim and potim > 0 else None), (tebeg if tebeg and tebeg > 0 else None)
    times = _frame_times(frames)
    dt = None
    if times is not None:
        gaps = np.diff(times)
        if gaps[0] <= 0 or not np.allclose(gaps, gaps[0], rtol=1e-6, atol=1e-9):
            raise InputError(f"{path} has inconsistent times between frames ({gaps.min():g} to {gaps.max():g} fs); "
                             "analyse a trajectory stored at a constant stride")
        dt = float(gaps[0])
    for key in ("target_temperature_K", "temperature_K"):
        values = frame_values(frames, key)
        if values is not None and np.all(values > 0) and np.ptp(values) <= 1e-6 * values[0]:
            return dt, float(values[0])      # the same in every frame: a setting
    return dt, None


def frame_values(frames: list, key: str) -> np.ndarray | None:
    """``atoms.info[key]`` of every frame as numbers, None unless every frame has a number there."""
    values = [a.info.get(key) for a in frames]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    return np.asarray(values, float)
