"""Shifted-force Lennard-Jones pair potential implementing the ForceField interface.

An analytic reference for tests and benchmarks of MD and training (energy and force both go
smoothly to zero at the cutoff, so NVE conserves energy well).  Units: eV and Å.
"""
from __future__ import annotations

import torch

from models.batch import AtomsBatch
from models.graph import NeighborList, edge_vectors, neighbor_list
from models.interface import Prediction, energy_to_prediction


class LennardJones:
    """V(r) = 4 eps [(s/r)^12 - (s/r)^6], shifted so that V(rc) = V'(rc) = 0."""

    arch = "lj"

    def __init__(self, epsilon: float = 0.0104, sigma: float = 3.40, cutoff: float = 8.5):
        self.epsilon = float(epsilon)   # eV
        self.sigma = float(sigma)       # Å
        self.cutoff = float(cutoff)     # Å
        self.training_info: dict = {}

    def hparams(self) -> dict:
        return {"epsilon": self.epsilon, "sigma": self.sigma, "cutoff": self.cutoff}

    def eval(self) -> "LennardJones":
        return self

    def to(self, *args, **kwargs) -> "LennardJones":
        return self

    def _pair(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sr6 = (self.sigma / r) ** 6
        v = 4 * self.epsilon * (sr6 * sr6 - sr6)
        dv = 4 * self.epsilon * (-12 * sr6 * sr6 + 6 * sr6) / r
        return v, dv

    def energy(self, batch: AtomsBatch, neighbors: NeighborList | None = None,
               cell: torch.Tensor | None = None) -> torch.Tensor:
        """Total energy per system [n_systems] in eV."""
        nl = neighbors if neighbors is not None else neighbor_list(batch, self.cutoff)
        vec = edge_vectors(batch, nl, cell)
        r = vec.norm(dim=1)
        keep = r < self.cutoff
        r = r[keep]
        rc = torch.tensor(self.cutoff, dtype=r.dtype, device=r.device)
        v, _ = self._pair(r)
        vc, dvc = self._pair(rc)
        pair = v - vc - (r - rc) * dvc
        sys = batch.system_index[nl.edge_index[0][keep]]
        out = torch.zeros(batch.n_systems, dtype=r.dtype, device=r.device)
        return out.index_add(0, sys, 0.5 * pair)   # full list counts each pair twice

    def predict(self, batch: AtomsBatch, neighbors: NeighborList | None = None,
                compute_stress: bool = False) -> Prediction:
        return energy_to_prediction(self.energy, batch, neighbors, compute_stress)


def fit_lennard_jones(frames, seed: int = 0, start: LennardJones | None = None, cutoff: float = 8.5,
                      max_evaluations: int = 30) -> tuple[LennardJones, float]:
    """Fit epsilon (eV) and sigma (Å) to the forces of a bootstrap sample of ``frames``.

    The analytic student of test campaigns: different ``seed`` values give different bootstrap
    samples and starting points, so an ensemble of fits has a force deviation.  Starts from
    ``start`` when given (fine-tuning).  Returns (model, force MAE on the sample in eV/Å).
    """
    import numpy as np
    from scipy.optimize import least_squares

    rng = np.random.default_rng(seed)
    sample = [frames[i] for i in rng.choice(len(frames), size=len(frames), replace=True)]
    batch = AtomsBatch.from_atoms(sample, dtype=torch.float64)
    target = np.concatenate([f.get_forces() for f in sample])
    if start is not None:
        x0 = [start.epsilon, start.sigma]
    else:
        x0 = [0.0104 * rng.uniform(0.5, 1.5), 3.40 * rng.uniform(0.95, 1.05)]

    def residual(p):
        return (LennardJones(p[0], p[1], cutoff).predict(batch).forces.numpy() - target).ravel()

    fit = least_squares(residual, x0, bounds=([1e-5, 1.0], [1.0, 6.0]), max_nfev=max_evaluations)
    return LennardJones(float(fit.x[0]), float(fit.x[1]), cutoff), float(np.abs(fit.fun).mean())
