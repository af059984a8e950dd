"""MD trajectory files: compressed, chunked, appendable HDF5 that ASE can read.

Schema (format ``matscreen-trajectory``, version 1; one file = one system, constant atom count):

datasets (frames along axis 0, gzip-compressed, chunked along frames)
    numbers              [n_atoms]              int, atomic numbers
    positions            [n_frames, n_atoms, 3] Å, wrapped into the cell
    unwrapped_positions  [n_frames, n_atoms, 3] Å, continuous (no jumps across the boundary)
    cell                 [n_frames, 3, 3]       Å, rows = lattice vectors
    potential_energy     [n_frames]             eV
    kinetic_energy       [n_frames]             eV
    temperature_K        [n_frames]             K, instantaneous
    step                 [n_frames]             int, integrator step of the frame
    time_fs              [n_frames]             fs
    stress     (optional)[n_frames, 3, 3]       eV/Å^3, ASE sign
    velocities (optional)[n_frames, n_atoms, 3] Å/fs
    forces     (optional)[n_frames, n_atoms, 3] eV/Å
    force_deviation_max (optional)[n_frames]    eV/Å, max atomic ensemble force deviation (ensembles)
root attributes
    format="matscreen-trajectory", format_version=1, dt_fs (time between stored frames),
    timestep_fs (integrator step), stride (steps between stored frames), temperature_K (target),
    pbc [3] bool, metadata_json (free-form JSON: model, system name, replica, ...).

While a writer is open it writes ``<name>.part``; ``close()`` renames it onto ``<name>``
(atomic), and ``TrajectoryWriter.resume`` continues a file, dropping frames after a step.
``load_trajectory(path)`` is the one reader analyses use (an ``analysis.Trajectory``: arrays,
target temperature, equilibration to discard, ensemble deviation, the engine's own verdict).
``ase.io.read(path, ":")`` works through the ``ase.ioformats`` entry point (format name
``matscreen-h5``, extension ``.h5``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import h5py
import numpy as np
from ase import units

from common.atomic import check_writable
from common.errors import InputError

FORMAT_NAME = "matscreen-trajectory"
FORMAT_VERSION = 1
PER_ATOM = ("positions", "unwrapped_positions", "velocities", "forces")
REQUIRED = ("positions", "unwrapped_positions", "cell", "potential_energy", "kinetic_energy",
            "temperature_K", "step", "time_fs")
OPTIONAL = ("stress", "velocities", "forces", "force_deviation_max")
_COMPRESSION = dict(compression="gzip", compression_opts=4, shuffle=True)


def part_path(path: str | os.PathLike) -> Path:
    """The in-progress file a writer fills before renaming onto ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".part")


class TrajectoryWriter:
    """Append frames of one system to a trajectory file.

    >>> with TrajectoryWriter("run.h5", numbers, timestep_fs=2.0, stride=10, temperature_K=800) as w:
    ...     w.append(step=0, positions=x, cell=c, potential_energy=e, kinetic_energy=k, temperature_K=t)

    ``append`` takes one frame, or several at once when every array has a leading frame axis.
    Unwrapped positions default to the wrapped ones (fine for the first frame only); ``time_fs``
    defaults to ``step * timestep_fs``.
    """

    def __init__(self, path: str | os.PathLike, numbers: Sequence[int], *, timestep_fs: float,
                 stride: int = 1, temperature_K: float | None = None, pbc: Sequence[bool] = (True, True, True),
                 metadata: dict[str, Any] | None = None, stress: bool = False, velocities: bool = False,
                 forces: bool = False, force_deviation: bool = False, buffer_frames: int = 32,
                 _open_existing: bool = False):
        self.path = check_writable(path)
        self._part = part_path(self.path)
        self._pending: list[dict[str, np.ndarray]] = []     # frames not yet in the file (see flush)
        self.buffer_frames = max(1, int(buffer_frames))
        if _open_existing:
            self._h5 = h5py.File(self._part, "a")
            _check_format(self._h5, self._part)
            self.numbers = np.asarray(self._h5["numbers"][:])
            self.timestep_fs = float(self._h5.attrs["timestep_fs"])
            return
        if timestep_fs <= 0 or stride < 1:
            raise InputError(f"timestep_fs must be > 0 and stride >= 1 (got {timestep_fs}, {stride}); fix the MD settings")
        self.numbers = np.asarray(numbers, dtype=np.int64)
        n = len(self.numbers)
        if n == 0:
            raise InputError("a trajectory needs at least one atom; check the structure")
        self.timestep_fs = float(timestep_fs)
        self._h5 = h5py.File(self._part, "w")
        f = self._h5
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["timestep_fs"] = float(timestep_fs)
        f.attrs["stride"] = int(stride)
        f.attrs["dt_fs"] = float(timestep_fs) * int(stride)
        f.attrs["temperature_K"] = float("nan") if temperature_K is None else float(temperature_K)
        f.attrs["pbc"] = np.asarray(pbc, dtype=bool)
        f.attrs["metadata_json"] = json.dumps(metadata or {}, sort_keys=True, default=str)
        f.create_dataset("numbers", data=self.numbers)
        chunk = max(1, min(256, 2 ** 20 // (24 * n)))  # ~1 MiB per chunk of per-atom data
        shapes = {
            "positions": (n, 3), "unwrapped_positions": (n, 3), "cell": (3, 3),
            "potential_energy": (), "kinetic_energy": (), "temperature_K": (), "step": (), "time_fs": (),
        }
        if stress:
            shapes["stress"] = (3, 3)
        if velocities:
            shapes["velocities"] = (n, 3)
        if forces:
            shapes["forces"] = (n, 3)
        if force_deviation:
            shapes["force_deviation_max"] = ()
        for name, shape in shapes.items():
            dtype = np.int64 if name == "step" else np.float64
            f.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                             chunks=(chunk, *shape), **_COMPRESSION)
        f.flush()

    # -- resume -----------------------------------------------------------------------------
    @classmethod
    def resume(cls, path: str | os.PathLike, after_step: int | None = None) -> "TrajectoryWriter":
        """Reopen ``path`` (or its ``.part``) for appending; drop frames with step > ``after_step``."""
        path = Path(path)
        part = part_path(path)
        if not part.exists():
            if not path.exists():
                raise InputError(f"cannot resume: trajectory {path} does not exist; start a new run instead")
            os.replace(path, part)
        writer = cls(path, (), timestep_fs=1.0, _open_existing=True)
        if after_step is not None:
            writer.truncate_to_step(after_step)
        return writer

    def truncate_to_step(self, step: int) -> int:
        """Remove every frame whose step is greater than ``step``; return the frames kept."""
        self._write_pending()
        steps = self._h5["step"][:]
        keep = int(np.searchsorted(steps, step, side="right"))
        for name in REQUIRED + OPTIONAL:
            if name in self._h5:
                self._h5[name].resize(keep, axis=0)
        self._h5.flush()
        return keep

    # -- writing ------------------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        return int(self._h5["step"].shape[0]) + sum(len(p["step"]) for p in self._pending)

    @property
    def last_step(self) -> int | None:
        if self._pending:
            return int(self._pending[-1]["step"][-1])
        return int(self._h5["step"][-1]) if self._h5["step"].shape[0] else None

    def append(self, *, step, positions, cell, potential_energy, kinetic_energy, temperature_K,
               unwrapped_positions=None, time_fs=None, stress=None, velocities=None, forces=None,
               force_deviation_max=None) -> None:
        """Append one frame (or a block of frames with a leading frame axis). Units as in the schema."""
        positions = np.asarray(positions, dtype=np.float64)
        single = positions.ndim == 2
        n = len(self.numbers)

        def block(value, shape):
            arr = np.asarray(value, dtype=np.float64)
            return arr.reshape((1, *shape)) if single else arr.reshape((-1, *shape))

        steps = np.atleast_1d(np.asarray(step, dtype=np.int64))
        frames = {
            "positions": block(positions, (n, 3)),
            "unwrapped_positions": block(positions if unwrapped_positions is None else unwrapped_positions, (n, 3)),
            "cell": block(cell, (3, 3)),
            "potential_energy": block(potential_energy, ()),
            "kinetic_energy": block(kinetic_energy, ()),
            "temperature_K": block(temperature_K, ()),
            "step": steps,
            "time_fs": block(steps * self.timestep_fs if time_fs is None else time_fs, ()),
        }
        for name, value, shape in (("stress", stress, (3, 3)), ("velocities", velocities, (n, 3)),
                                   ("forces", forces, (n, 3)), ("force_deviation_max", force_deviation_max, ())):
            if name in self._h5:
                if value is None:
                    raise InputError(f"this trajectory stores {name}; pass {name}= to append")
                frames[name] = block(value, shape)
        k = len(steps)
        last = self.last_step
        if last is not None and steps[0] <= last:
            raise InputError(f"frame step {int(steps[0])} is not after the last stored step {last}; "
                             "resume with truncate_to_step first")
        for name, arr in frames.items():
            if arr.shape[0] != k:
                raise InputError(f"{name} has {arr.shape[0]} frames but step has {k}; pass matching arrays")
        self._pending.append(frames)
        if sum(len(p["step"]) for p in self._pending) >= self.buffer_frames:
            self._write_pending()

    def _write_pending(self) -> None:
        """Write buffered frames to the file as one block per dataset."""
        if not self._pending:
            return
        block = {name: np.concatenate([p[name] for p in self._pending]) for name in self._pending[0]}
        self._pending = []
        start = int(self._h5["step"].shape[0])
        k = len(block["step"])
        for name, arr in block.items():
            ds = self._h5[name]
            ds.resize(start + k, axis=0)
            ds[start:start + k] = arr

    def flush(self) -> None:
        """Write buffered frames and flush the HDF5 file (the runner calls this before checkpoints)."""
        self._write_pending()
        self._h5.flush()

    def set_metadata(self, **items) -> None:
        """Merge ``items`` into the free-form metadata."""
        meta = json.loads(self._h5.attrs["metadata_json"])
        meta.update(items)
        self._h5.attrs["metadata_json"] = json.dumps(meta, sort_keys=True, default=str)

    def close(self, finalize: bool = True) -> Path:
        """Close the file; with ``finalize`` rename ``.part`` onto the final path (atomic)."""
        if self._h5 is not None:
            self.flush()
            self._h5.close()
            self._h5 = None
            if finalize:
                os.replace(self._part, self.path)
        return self.path

    def __enter__(self) -> "TrajectoryWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(finalize=exc_type is None)


def _check_format(f: h5py.File, path) -> None:
    if f.attrs.get("format") != FORMAT_NAME:
        raise InputError(f"{path} is not a matscreen trajectory (no format={FORMAT_NAME!r} attribute); "
                         "give a file written by `matscreen md`")
    missing = [name for name in REQUIRED + ("numbers",) if name not in f]
    if missing:
        raise InputError(f"trajectory {path} lacks datasets {missing}; the file is incomplete, rerun the MD")
    lengths = {name: f[name].shape[0] for name in REQUIRED + OPTIONAL if name in f}
    if len(set(lengths.values())) > 1:
        raise InputError(f"trajectory {path} has datasets of different lengths {lengths}; the file is corrupt")


class TrajectoryReader:
    """Read a trajectory: arrays by name and slice, metadata, or frames as ``ase.Atoms``.

    Frames carry a SinglePointCalculator (energy, forces/stress when stored) and ``info`` keys
    ``step``, ``time_fs``, ``temperature_K``; velocities become ASE momenta.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(2, "No such file", str(self.path))
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError:
            raise InputError(f"{self.path} is not a readable HDF5 trajectory (corrupt or wrong format); "
                             "give a file written by `matscreen md`") from None
        try:
            _check_format(self._h5, self.path)
        except InputError:
            self._h5.close()
            raise
        self.numbers = np.asarray(self._h5["numbers"][:], dtype=np.int64)
        attrs = self._h5.attrs
        self.dt_fs = float(attrs["dt_fs"])
        self.timestep_fs = float(attrs["timestep_fs"])
        self.stride = int(attrs["stride"])
        self.temperature_K = float(attrs["temperature_K"])
        self.pbc = np.asarray(attrs.get("pbc", (True, True, True)), dtype=bool)
        self.metadata: dict[str, Any] = json.loads(attrs.get("metadata_json", "{}"))

    def __len__(self) -> int:
        return int(self._h5["step"].shape[0])

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    def has(self, name: str) -> bool:
        return name in self._h5

    def read(self, name: str, index: int | slice = slice(None)) -> np.ndarray:
        """The dataset ``name`` for frames ``index`` (numpy basic indexing)."""
        if name not in self._h5:
            raise InputError(f"trajectory {self.path} has no {name!r} dataset; available: {sorted(self._h5)}")
        try:
            return self._h5[name][index]
        except OSError:
            raise InputError(f"cannot read {name!r} from {self.path}: the file is corrupt; rerun the MD") from None

    def atoms(self, index: int | slice | Sequence[int] = slice(None)):
        """Frame(s) as ``ase.Atoms``: one for an int index, a list for a slice or a list of indices."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        n = len(self)
        if isinstance(index, (list, tuple, np.ndarray)):
            try:
                idx = [range(n)[int(i)] for i in index]
            except IndexError:
                raise InputError(f"frame indices {list(index)} out of range: {self.path} has {n} frames") from None
        else:
            idx = range(n)[index]
        frames = [idx] if isinstance(idx, int) else list(idx)
        out = []
        for i in frames:
            atoms = Atoms(numbers=self.numbers, positions=self._h5["positions"][i], cell=self._h5["cell"][i],
                          pbc=self.pbc)
            if "velocities" in self._h5:
                atoms.set_velocities(self._h5["velocities"][i] * _ASE_VELOCITY_PER_A_FS)
            results = {"energy": float(self._h5["potential_energy"][i])}
            if "forces" in self._h5:
                results["forces"] = self._h5["forces"][i]
            if "stress" in self._h5:
                results["stress"] = self._h5["stress"][i]
            atoms.calc = SinglePointCalculator(atoms, **results)
            atoms.info.update(step=int(self._h5["step"][i]), time_fs=float(self._h5["time_fs"][i]),
                              temperature_K=float(self._h5["temperature_K"][i]))
            out.append(atoms)
        return out[0] if isinstance(idx, int) else out

    def __getitem__(self, index):
        return self.atoms(index)

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __enter__(self) -> "TrajectoryReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# 1 Å/fs in ASE velocity units (Å per ASE time unit).
_ASE_VELOCITY_PER_A_FS = 1.0 / units.fs


HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path: str | os.PathLike) -> bool:
    """True for an HDF5 file (by its signature), whatever its name."""
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == HDF5_MAGIC
    except OSError:
        return False


def load_trajectory(path: str | os.PathLike, *, dt_fs: float | None = None, temperature_K: float | None = None,
                    fmt: str | None = None, topology: str | None = None):
    """The whole trajectory as an ``analysis.Trajectory`` (read once; every analysis takes this).

    The service's HDF5: ``discard_fs`` comes from the protocol the file records (0 when none);
    ``live_verdict`` is the MD engine's own stop (``metadata['verdict']``) when it wrote one.  Any other
    file goes through ASE (:func:`common.formats.read_any`: ``dt_fs``, ``temperature_K``, ``fmt``,
    ``topology`` apply there; a ``dt_fs`` that disagrees with a file's own is an error either way).
    """
    from common.trajectory import Trajectory

    if not Path(path).is_file():
        raise InputError(f"trajectory {path} not found; check the path")
    if not is_hdf5(path) and not str(path).endswith(".h5"):
        from common.formats import read_any

        return read_any(path, dt_fs=dt_fs, temperature_K=temperature_K, fmt=fmt, topology=topology)
    with TrajectoryReader(path) as r:
        meta = r.metadata
        target = r.temperature_K
        live = meta.get("verdict")
        times = r.read("time_fs")
        if len(times) > 1:
            gaps = np.diff(times)
            if gaps[0] <= 0 or not np.allclose(gaps, gaps[0], rtol=1e-6, atol=1e-9):
                raise InputError(f"{path} has inconsistent time steps between frames ({gaps.min():g} to "
                                 f"{gaps.max():g} fs); analyse a trajectory with a constant stride")
        file_dt = float(np.diff(times)[0]) if len(times) > 1 else r.dt_fs
        if dt_fs is not None and abs(dt_fs - file_dt) > 1e-6 * file_dt:
            raise InputError(f"--dt-fs {dt_fs:g} disagrees with {Path(path).name}'s {file_dt:g} fs between frames; "
                             "omit --dt-fs or fix it")
        if temperature_K is not None:
            target = temperature_K
        return Trajectory(
            numbers=r.numbers, positions=r.read("positions"), unwrapped=r.read("unwrapped_positions"),
            cells=r.read("cell"), steps=r.read("step"), dt_fs=file_dt,
            temperature_K=float(target) if np.isfinite(target) else None, temperatures_K=r.read("temperature_K"),
            potential_energy=r.read("potential_energy"),
            force_deviation=r.read("force_deviation_max") if r.has("force_deviation_max") else None,
            live_verdict=live if isinstance(live, dict) else None,
            discard_fs=float((meta.get("protocol") or {}).get("discard_fs", 0.0)), path=str(path), metadata=meta)


def read_atoms(path: str | os.PathLike, index: int | slice | str | Sequence[int] = ":"):
    """Stored frames of a trajectory as ``ase.Atoms`` with their stored energy/forces (``index`` like
    ``ase.io.read``: int, slice or "a:b:c", or a list of frame indices)."""
    if isinstance(index, str):
        parts = [int(p) if p else None for p in index.split(":")]
        index = parts[0] if len(parts) == 1 else slice(*parts)
    with TrajectoryReader(path) as reader:
        return reader.atoms(index)


def write_atoms(path: str | os.PathLike, images: Iterable, *, timestep_fs: float = 1.0, stride: int = 1,
                temperature_K: float | None = None, metadata: dict | None = None) -> Path:
    """Write ``ase.Atoms`` frames (same atoms, e.g. from ASE MD) as a trajectory file.

    Energies/forces/stress come from each frame's calculator when present; ``info['step']`` is
    used as the step when present, else the frame index times ``stride``.  Positions are wrapped;
    unwrapped positions are the frames' own positions made continuous across the boundary.
    """
    images = list(images)
    if not images:
        raise InputError("no frames to write; give at least one structure")
    first = images[0]
    calc = first.calc
    has = {k: calc is not None and k in calc.results for k in ("forces", "stress")}
    with TrajectoryWriter(path, first.numbers, timestep_fs=timestep_fs, stride=stride, temperature_K=temperature_K,
                          pbc=first.pbc, metadata=metadata, stress=has["stress"], forces=has["forces"]) as w:
        prev_unwrapped = None
        for k, atoms in enumerate(images):
            if len(atoms) != len(first):
                raise InputError(f"frame {k} has {len(atoms)} atoms, frame 0 has {len(first)}; one system per file")
            cell = np.asarray(atoms.cell[:])
            pos = atoms.get_positions()
            if prev_unwrapped is None:
                unwrapped = pos
            else:
                unwrapped = unwrap_step(prev_unwrapped, pos, cell)
            prev_unwrapped = unwrapped
            c = atoms.calc
            energy = c.results.get("energy", np.nan) if c is not None else np.nan
            extra = {}
            if has["forces"]:
                extra["forces"] = c.results["forces"]
            if has["stress"]:
                from ase.stress import voigt_6_to_full_3x3_stress

                s = np.asarray(c.results["stress"])
                extra["stress"] = voigt_6_to_full_3x3_stress(s) if s.shape == (6,) else s
            step = int(atoms.info.get("step", k * stride))
            wrapped = atoms.copy()
            wrapped.wrap()
            w.append(step=step, positions=wrapped.get_positions(), unwrapped_positions=unwrapped, cell=cell,
                     potential_energy=energy, kinetic_energy=atoms.get_kinetic_energy(),
                     temperature_K=atoms.get_temperature(), **extra)
    return Path(path)


def unwrap_step(previous_unwrapped: np.ndarray, wrapped: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Continue unwrapped positions (Å) to the next frame: minimum-image displacement from the last one (the
    streaming form of ``common.trajectory.unwrap``, for a writer that sees one frame at a time)."""
    delta = wrapped - previous_unwrapped
    frac = np.linalg.solve(cell.T, delta.T).T
    frac -= np.round(frac)
    return previous_unwrapped + frac @ cell


# ---- ASE io plugin (entry point "ase.ioformats": matscreen-h5) ---------------------------------
def read_matscreen_h5(filename, index=None):
    """ASE reader: ``ase.io.read("run.h5", ":")`` (registered via the ``ase.ioformats`` entry point)."""
    if index is None:
        index = -1
    with TrajectoryReader(filename) as reader:
        frames = reader.atoms(index)
    return frames if isinstance(frames, list) else [frames]
