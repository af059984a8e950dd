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

    def __init__(self, epsilon: float = 0.0104, sigma: float = 3.40, cutoff: float = 8.5):
        self.epsilon = float(epsilon)   # eV
        self.sigma = float(sigma)       # Å
        self.cutoff = float(cutoff)     # Å

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
