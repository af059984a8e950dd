"""Radial distribution functions of periodic trajectories (total and element-pair partials).

All periodic images within ``r_max`` are counted (vesin), so g(r) is correct even when r_max
exceeds half the cell width.  Distances Å.  g_ab(r) = V n_ab(r) / (N_a (N_b - δ_ab) ΔV_shell),
averaged over frames, where n_ab counts ordered pairs (i in a, j in b).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import vesin
from ase.data import chemical_symbols

@dataclass
class RDFResult:
    r_A: np.ndarray                       # [n_bins] bin centres, Å
    g_total: np.ndarray                   # [n_bins]
    partial: dict[str, np.ndarray] = field(default_factory=dict)   # "Li-S" -> [n_bins] (symbols sorted)
    n_frames: int = 0
    r_max_A: float = 0.0                  # upper edge of the last bin, Å


def pair_name(za: int, zb: int) -> str:
    a, b = sorted((chemical_symbols[int(za)], chemical_symbols[int(zb)]))
    return f"{a}-{b}"


def rdf(positions: np.ndarray, cells: np.ndarray, numbers: np.ndarray, r_max_A: float = 6.0,
        n_bins: int = 120) -> RDFResult:
    """g(r) from frames ``positions`` [F,N,3] (Å) in ``cells`` [F,3,3] (or one [3,3])."""
    positions = np.asarray(positions, dtype=float)
    if positions.ndim == 2:
        positions = positions[None]
    cells = np.asarray(cells, dtype=float)
    if cells.ndim == 2:
        cells = np.broadcast_to(cells, (len(positions), 3, 3))
    numbers = np.asarray(numbers)
    n = len(numbers)
    species = np.unique(numbers)
    sp_index = np.searchsorted(species, numbers)
    n_sp = len(species)
    counts_sp = np.bincount(sp_index, minlength=n_sp)
    edges = np.linspace(0.0, r_max_A, n_bins + 1)
    hist = np.zeros((n_sp, n_sp, n_bins))
    volume = 0.0
    calc = vesin.NeighborList(cutoff=float(r_max_A), full_list=True)
    for pos, cell in zip(positions, cells):
        i, j, d = calc.compute(points=pos, box=cell, periodic=True, quantities="ijd")
        b = np.minimum((d / r_max_A * n_bins).astype(np.int64), n_bins - 1)
        flat = (sp_index[i] * n_sp + sp_index[j]) * n_bins + b
        hist += np.bincount(flat, minlength=n_sp * n_sp * n_bins).reshape(n_sp, n_sp, n_bins)
        volume += abs(np.linalg.det(cell))
    n_frames = len(positions)
    volume /= max(n_frames, 1)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    r = 0.5 * (edges[1:] + edges[:-1])
    total_pairs = n * (n - 1)
    g_total = volume * hist.sum((0, 1)) / (n_frames * total_pairs * shell) if total_pairs else np.zeros(n_bins)
    partial = {}
    for a in range(n_sp):
        for c in range(a, n_sp):
            pairs = counts_sp[a] * (counts_sp[c] - (a == c))
            if pairs == 0:
                continue
            counts = hist[a, c] if a == c else 0.5 * (hist[a, c] + hist[c, a])
            partial[pair_name(species[a], species[c])] = volume * counts / (n_frames * pairs * shell)
    return RDFResult(r_A=r, g_total=g_total, partial=partial, n_frames=n_frames, r_max_A=float(r_max_A))
