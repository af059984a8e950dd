"""The force-field interface every model, ensemble and analytic potential implements.

The MD engine, the stability judge and the ASE calculator depend only on this:

    ff.cutoff                      -> float, Å (interaction range; neighbour lists use cutoff + skin)
    ff.predict(batch, neighbors=None, compute_stress=False) -> Prediction

``neighbors`` may be a list built with a larger radius (a Verlet list with skin); the force field
ignores edges beyond its own cutoff.  Outputs are detached tensors on the batch's device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from models.batch import AtomsBatch
from models.graph import NeighborList


@dataclass
class Prediction:
    energy: torch.Tensor                      # [n_systems] eV
    forces: torch.Tensor                      # [n_atoms, 3] eV/Å
    stress: torch.Tensor | None = None        # [n_systems, 3, 3] eV/Å^3, ASE sign: (1/V) dE/d(strain)
    force_std: torch.Tensor | None = None     # [n_atoms] eV/Å, ensemble deviation (None for one model)


@runtime_checkable
class ForceField(Protocol):
    cutoff: float

    def predict(self, batch: AtomsBatch, neighbors: NeighborList | None = None,
                compute_stress: bool = False) -> Prediction: ...


def energy_to_prediction(energy_fn, batch: AtomsBatch, neighbors: NeighborList | None,
                         compute_stress: bool, create_graph: bool = False) -> Prediction:
    """Run ``energy_fn(batch, neighbors, cell) -> energy[n_systems]`` and differentiate it.

    forces = -dE/dpositions; stress = (1/V) dE/d(strain) through a symmetric strain applied to
    positions and cell (ASE sign convention).  Shared by every conservative force field.
    """
    positions = batch.positions.detach().requires_grad_(True)
    cell = batch.cell.detach()
    inputs = [positions]
    if compute_stress:
        strain = torch.zeros_like(cell, requires_grad=True)
        sym = 0.5 * (strain + strain.transpose(1, 2))
        eye = torch.eye(3, dtype=cell.dtype, device=cell.device)
        deform = eye + sym                                            # [S,3,3]
        positions = torch.einsum("ni,nij->nj", positions, deform[batch.system_index])
        cell = torch.bmm(cell, deform)
        inputs.append(strain)
    work = AtomsBatch(positions=positions, numbers=batch.numbers, cell=cell,
                      system_index=batch.system_index, pbc=batch.pbc)
    energy = energy_fn(work, neighbors, cell)
    grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph, allow_unused=True)
    g_pos = grads[0] if grads[0] is not None else torch.zeros_like(batch.positions)
    stress = None
    if compute_stress:
        g_strain = grads[1] if grads[1] is not None else torch.zeros_like(cell)
        volume = torch.linalg.det(batch.cell).abs().view(-1, 1, 1)
        stress = g_strain / volume
        stress = stress if create_graph else stress.detach()
    if not create_graph:
        energy, g_pos = energy.detach(), g_pos.detach()
    return Prediction(energy=energy, forces=-g_pos, stress=stress)
