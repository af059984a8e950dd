"""An ASE calculator as a force field of the batched MD engine, so oracle MD and student MD share one engine.

:class:`CalculatorForceField` satisfies ``models.interface.ForceField``: ``predict(batch)`` sends each
system of the batch to the calculator in turn (one call per system: the calculator builds its own
neighbours) and returns energies (eV), forces (eV/Å) and, when asked, stress (eV/Å³, ASE sign).  A
calculator that computes several structures per call could be given a batched ``predict``; none of the
offline oracles does today.  ``cutoff`` only sizes the engine's Verlet list, which its live breakage
monitors read; it never limits the calculator.
"""
from __future__ import annotations

import numpy as np
import torch

from models.interface import Prediction


class CalculatorForceField:
    """``calculator``: any ASE calculator (energy and forces; stress when the run stores it)."""

    def __init__(self, calculator, cutoff_A: float = 5.0, name: str = "calculator"):
        self.calculator = calculator
        self.cutoff = float(cutoff_A)
        self.name = name
        self.dtype = None          # numbers come back in float64; the engine casts them

    def predict(self, batch, neighbors=None, compute_stress: bool = False) -> Prediction:
        from ase import Atoms
        from ase.calculators.calculator import all_changes

        positions = batch.positions.detach().cpu().numpy().astype(np.float64)
        numbers = batch.numbers.detach().cpu().numpy()
        cells = batch.cell.detach().cpu().numpy().astype(np.float64)
        pbc = batch.pbc.detach().cpu().numpy()
        index = batch.system_index.detach().cpu().numpy()
        energies, forces, stresses = [], [], []
        for s in range(cells.shape[0]):
            mine = index == s
            atoms = Atoms(numbers=numbers[mine], positions=positions[mine], cell=cells[s], pbc=pbc[s])
            wanted = ["energy", "forces", "stress"] if compute_stress else ["energy", "forces"]
            self.calculator.calculate(atoms, wanted, all_changes)      # one calculation for all of them
            results = self.calculator.results
            energy = float(results["energy"])
            f = np.asarray(results["forces"], dtype=np.float64)
            if not np.isfinite(energy) or not np.isfinite(f).all():
                raise RuntimeError(f"{self.name} returned non-finite energy/forces")
            energies.append(energy)
            forces.append(f)
            if compute_stress:
                stresses.append(_full_stress(np.asarray(results["stress"], dtype=np.float64)))
        device = batch.positions.device
        as_tensor = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float64, device=device)  # noqa: E731
        return Prediction(energy=as_tensor(energies), forces=as_tensor(np.concatenate(forces)),
                          stress=as_tensor(np.stack(stresses)) if compute_stress else None)


def _full_stress(stress: np.ndarray) -> np.ndarray:
    """3x3 stress from ASE's Voigt order (xx, yy, zz, yz, xz, xy) or a 3x3 array."""
    if stress.shape == (3, 3):
        return stress
    xx, yy, zz, yz, xz, xy = stress
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
