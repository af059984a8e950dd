"""One system's MD trajectory as plain arrays: the single input of every analysis (judge, RDF, transport).

``md.trajectory.load_trajectory(path)`` fills it from a trajectory file, once per step; analyses
never open files themselves.  Units: Å, fs, K, eV, eV/Å.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from common.errors import InputError


@dataclass
class Trajectory:
    numbers: np.ndarray                   # [N] atomic numbers
    positions: np.ndarray                 # [F,N,3] Å, wrapped into the cell
    unwrapped: np.ndarray                 # [F,N,3] Å, continuous
    cells: np.ndarray                     # [F,3,3] Å, rows = lattice vectors
    steps: np.ndarray                     # [F] integrator step of each frame
    dt_fs: float                          # time between stored frames (fs)
    temperature_K: float | None = None    # target temperature (K), None when unknown
    temperatures_K: np.ndarray | None = None      # [F] instantaneous (K)
    potential_energy: np.ndarray | None = None    # [F] eV
    force_deviation: np.ndarray | None = None     # [F] max atomic ensemble force deviation (eV/Å)
    live_verdict: dict | None = None      # the MD engine's own stop: {status, failure_step, evidence}
    discard_fs: float = 0.0               # equilibration the producer asks analyses to drop (fs)
    path: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.steps)
        if n == 0:
            raise InputError(f"trajectory {self.path or '(in memory)'} has no frames; rerun the MD")
        if self.dt_fs is None or not np.isfinite(self.dt_fs) or self.dt_fs <= 0:
            raise InputError(f"time between frames must be positive, got {self.dt_fs} fs; pass --dt-fs")

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def discard_frames(self) -> int:
        """Stored frames covered by ``discard_fs``."""
        return int(np.ceil(self.discard_fs / self.dt_fs - 1e-9))

    def frames(self, start: int) -> "Trajectory":
        """The same trajectory from stored frame ``start`` on (per-frame arrays sliced)."""
        cut = lambda a: None if a is None else a[start:]  # noqa: E731
        return replace(self, positions=self.positions[start:], unwrapped=self.unwrapped[start:],
                       cells=self.cells[start:], steps=self.steps[start:], temperatures_K=cut(self.temperatures_K),
                       potential_energy=cut(self.potential_energy), force_deviation=cut(self.force_deviation),
                       discard_fs=0.0)

    def until(self, n: int) -> "Trajectory":
        """The first ``n`` stored frames (per-frame arrays sliced; the equilibration kept)."""
        cut = lambda a: None if a is None else a[:n]  # noqa: E731
        return replace(self, positions=self.positions[:n], unwrapped=self.unwrapped[:n], cells=self.cells[:n],
                       steps=self.steps[:n], temperatures_K=cut(self.temperatures_K),
                       potential_energy=cut(self.potential_energy), force_deviation=cut(self.force_deviation))

    def production(self) -> "Trajectory":
        """The frames after the equilibration (``discard_fs``)."""
        return self.frames(min(self.discard_frames, len(self) - 1))

    @property
    def volume_A3(self) -> float:
        return float(abs(np.linalg.det(self.cells[-1])))


def unwrap(wrapped: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Continuous positions [F,N,3] (Å) from wrapped frames (minimum image between frames)."""
    wrapped = np.asarray(wrapped, dtype=float)
    cells = np.asarray(cells, dtype=float)
    if cells.ndim == 2:
        cells = np.broadcast_to(cells, (len(wrapped), 3, 3))
    same = bool(np.all(cells == cells[0]))
    if same:                                                    # constant cell: one 2-D matmul
        inv = np.linalg.inv(cells[0])
        frac = wrapped @ inv
    else:
        inv = np.linalg.inv(cells)
        frac = np.matmul(wrapped, inv)
    dfrac = np.diff(frac, axis=0)
    dfrac -= np.round(dfrac)
    frac_unwrapped = np.concatenate([frac[:1], frac[:1] + np.cumsum(dfrac, axis=0)])
    return frac_unwrapped @ cells[0] if same else np.matmul(frac_unwrapped, cells)
