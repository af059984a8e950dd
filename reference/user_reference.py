"""A user's own trajectory (their AIMD) as a candidate's reference, instead of oracle MD run by the campaign.

:func:`import_reference` reads the file once (any format :mod:`common.formats` reads), checks it is the
candidate's material, and writes it as the service's HDF5 trajectory, so the judge, the dynamics check
and the calibration read it like an oracle run.  The first labels of the candidate (the store shard r0)
come from it in one of two ways, never mixed:

* ``labels_oracle`` given (the level of theory of the file, e.g. ``vasp-pbe``): the file's own energies
  and forces, stored under that name.  The candidate then trains on that oracle's frames only; new
  labels would need that level of theory, so the campaign labels more only when its own oracle has the
  same name (``can_label``).
* otherwise: the campaign's oracle labels evenly spaced frames of the file (the file's energies, if any,
  are not used for training); the loop labels as usual.

The result is a :class:`reference.reference_md.ReferenceRun` whose metadata records the source path, its
SHA-256, the format, the time between frames and the temperature.  Units: fs, K, eV, Å.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.config import check_fields, param
from common.errors import InputError

KEYS = ("path", "temperature_K", "dt_fs", "format", "topology")
KIND = "user-reference"     # ReferenceRun.metadata["kind"] of a user's trajectory, and its label source


@dataclass(frozen=True)
class UserReference:
    """One spec entry of ``reference_data.trajectories``."""
    path: str = param(help="the trajectory: any format `matscreen analyze` reads")
    temperature_K: float = param(help="the temperature its thermostat held", unit="K", gt=0)
    dt_fs: float | None = param(None, "time between stored frames; null = the file's own", unit="fs", gt=0)
    format: str | None = param(None, "ASE format name; null = from the file name")
    topology: str | None = param(None, "LAMMPS data file of a dump")

    def __post_init__(self):
        check_fields(self)

    def to_dict(self) -> dict:
        return asdict(self)


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def label_indices(n_frames: int, discard_frames: int, n_labels: int, holdout_fraction: float = 0.0) -> list[int]:
    """``n_labels`` evenly spaced frame indices after the equilibration and before the held-out calibration
    block (``reference.reference_md.calibration_block``; fewer when the run is short)."""
    from reference.reference_md import calibration_block

    start = min(discard_frames, n_frames - 1)
    stop = max(start, calibration_block(n_frames, discard_frames, holdout_fraction) - 1)
    return sorted({int(i) for i in np.linspace(start, stop, max(1, n_labels)).round()})


def import_reference(source: UserReference, structure, trajectory_path: str | os.PathLike, *, discard_fs: float,
                     store, shard: str, n_labels: int, oracle=None, labels_oracle: str | None = None,
                     run_id: str | None = None, holdout_fraction: float = 0.0):
    """Write ``source`` as the candidate's reference trajectory and its first labels (see the module docstring).

    ``structure``: the candidate's ``ase.Atoms`` (the file must hold the same composition); ``store``: a
    ``reference.store.LabelStore``; ``oracle``: the campaign's ``reference.oracles.Oracle`` (labels the
    frames when ``labels_oracle`` is None); ``holdout_fraction``: the final part after the equilibration that is
    never labelled (the calibration block, recorded in the trajectory's protocol).  Returns a ``ReferenceRun``.
    """
    from ase.data import chemical_symbols

    from common.formats import file_dt_and_temperature, read_checked, time_between_frames
    from md.trajectory import read_atoms, write_atoms
    from reference.oracles import label_into_store
    from reference.reference_md import ReferenceRun

    path = Path(source.path)
    frames, fmt = read_checked(path, source.format, source.topology)
    file_dt, file_t = file_dt_and_temperature(path, fmt, frames)
    dt = time_between_frames(path, file_dt, source.dt_fs)
    if file_t is not None and abs(file_t - source.temperature_K) > 1e-6 * file_t:
        raise InputError(f"{path.name} says it ran at {file_t:g} K, the spec says {source.temperature_K:g} K; "
                         "fix reference_data.trajectories.<candidate>.temperature_K")
    have, want = np.sort(frames[0].numbers), np.sort(structure.numbers)
    if not np.array_equal(have, want):
        formula = lambda z: "".join(f"{chemical_symbols[e]}{int((z == e).sum())}" for e in np.unique(z))  # noqa: E731
        raise InputError(f"{path.name} holds {formula(have)}, the candidate's cell is {formula(want)}; give a "
                         "trajectory of the candidate's own cell")
    sha = sha256_of(path)
    first = frames[0]
    has_forces = first.calc is not None and first.calc.results.get("forces") is not None
    if labels_oracle is not None and not has_forces:
        raise InputError(f"{path.name} has no forces, so it cannot supply labels of {labels_oracle}; remove "
                         "reference_data.oracle to have the campaign's oracle label its frames")
    meta = {"kind": KIND, "source": str(path.resolve()), "sha256": sha, "format": fmt, "dt_fs": dt,
            "temperature_K": source.temperature_K, "duration_fs": dt * (len(frames) - 1),
            "protocol": {"temperature_K": source.temperature_K, "discard_fs": float(discard_fs),
                         "holdout_fraction": float(holdout_fraction)},
            "has_forces": bool(has_forces), "labels_by": labels_oracle or "campaign oracle",
            # the file's forces measure the student's true error only when they are of the oracle it learns
            "calibration_forces": bool(has_forces and labels_oracle is not None)}
    for k, atoms in enumerate(frames):
        atoms.info["step"] = k
    write_atoms(trajectory_path, frames, timestep_fs=dt, stride=1, temperature_K=source.temperature_K, metadata=meta)
    idx = label_indices(len(frames), int(np.ceil(discard_fs / dt - 1e-9)), n_labels, holdout_fraction)
    picked = read_atoms(trajectory_path, idx)
    if labels_oracle is not None:
        for i, atoms in zip(idx, picked):
            atoms.info = {"oracle": labels_oracle, "source": f"aimd:{path.name}", "temperature_K": source.temperature_K,
                          "run_id": run_id or "", "frame": int(i)}
        stored, n_labelled, name = str(store.write_shard(shard, picked, run_id=run_id)), len(picked), labels_oracle
        can_label = oracle is not None and oracle.name == labels_oracle
    else:
        for atoms in picked:
            atoms.calc = None
        result = label_into_store(oracle, picked, store, shard, KIND, source.temperature_K, run_id)
        stored, n_labelled, name, can_label = result.shard, result.n_labels, oracle.name, True
    energies = [a.calc.results["energy"] for a in (frames[0], frames[-1])] if first.calc is not None and \
        frames[-1].calc is not None and "energy" in first.calc.results else None
    meta["can_label"] = can_label
    return ReferenceRun(run_id=run_id or f"user-{sha[:8]}", oracle=name, trajectory=str(trajectory_path),
                        steps=len(frames) - 1, frames=len(frames), labelled_frames=n_labelled, mean_temperature_K=None,
                        max_temperature_K=None, potential_energy_eV=energies, min_distance_A=None, simulated_ps=0.0,
                        shard=stored, error=None, metadata=meta)
