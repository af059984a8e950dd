"""Closest approaches relative to covalent radii: the one rule of atom fusion and of too-short distances.

A pair i-j is measured by r_ij / (r_cov,i + r_cov,j) (ASE's covalent radii); periodic images count
(vesin).  The live MD monitors apply the same rule on the device (``md.monitors``).  Distances Å.
"""
from __future__ import annotations

import numpy as np
import vesin
from ase.data import chemical_symbols, covalent_radii


def pair_ratios(numbers, positions, cell, pbc=True, r_max_A: float = 3.0, calculator=None):
    """Every pair closer than ``r_max_A`` (each once): ``(i, j, d [Å], ratio to the covalent-radius sum)``.
    ``calculator``: a ``vesin.NeighborList`` with that cutoff to reuse over many frames."""
    numbers = np.asarray(numbers, dtype=np.int64)
    periodic = bool(np.all(pbc))
    box = np.asarray(cell, float).reshape(3, 3) if periodic else np.zeros((3, 3))
    calculator = calculator or vesin.NeighborList(cutoff=float(r_max_A), full_list=False)
    i, j, d = calculator.compute(
        points=np.asarray(positions, float).reshape(-1, 3), box=box, periodic=periodic, quantities="ijd")
    radii = np.asarray(covalent_radii)[numbers]
    return i, j, d, d / (radii[i] + radii[j])


def closest_pair(numbers, positions, cell, pbc=True, r_max_A: float = 3.0,
                 calculator=None) -> tuple[float, float, str, int, int]:
    """The pair with the smallest ratio: ``(ratio, distance Å, "A-B", i, j)``; ``(inf, inf, "", -1, -1)`` when no
    pair is closer than ``r_max_A``."""
    i, j, d, ratio = pair_ratios(numbers, positions, cell, pbc, r_max_A, calculator)
    if len(d) == 0:
        return np.inf, np.inf, "", -1, -1
    k = int(np.argmin(ratio))
    numbers = np.asarray(numbers)
    return (float(ratio[k]), float(d[k]), f"{chemical_symbols[numbers[i[k]]]}-{chemical_symbols[numbers[j[k]]]}",
            int(i[k]), int(j[k]))


def min_distance(numbers, positions, cell, pbc=True, r_max_A: float = 4.0) -> float | None:
    """The smallest interatomic distance (Å) below ``r_max_A``, None when there is none."""
    _, _, d, _ = pair_ratios(numbers, positions, cell, pbc, r_max_A)
    return float(d.min()) if len(d) else None
