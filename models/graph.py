"""Periodic neighbour lists (vesin) and differentiable edge vectors.

Convention for every model and the MD engine:
    edge_index[0] = i (centre atom), edge_index[1] = j (neighbour atom), global atom indices;
    r_ij = positions[j] - positions[i] + shifts[e] @ cell[system_index[i]]     (Å)
Lists are *full* (both i->j and j->i), include every periodic image within the cutoff for any
cell shape (also cells thinner than the cutoff), and are never truncated to a max neighbour count.
A list built with ``cutoff + skin`` can be reused while atoms move less than skin/2; models mask
edges longer than their own cutoff, so the energy stays a smooth function of positions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import vesin

from models.batch import AtomsBatch


@dataclass
class NeighborList:
    edge_index: torch.Tensor   # [2, n_edges] long
    shifts: torch.Tensor       # [n_edges, 3] integer image offsets, stored in the batch's float dtype
    cutoff: float              # Å, radius the list was built with (may include a skin)

    @property
    def n_edges(self) -> int:
        return int(self.edge_index.shape[1])


def neighbor_list(batch: AtomsBatch, cutoff: float) -> NeighborList:
    """All pairs closer than ``cutoff`` (Å) in every system of ``batch``, periodic images included.

    The search runs on the CPU with vesin, one call per system (only when the list is (re)built).
    """
    if cutoff <= 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    pos = batch.positions.detach().cpu().double().numpy()
    cell = batch.cell.detach().cpu().double().numpy()
    pbc = batch.pbc.cpu().numpy()
    counts = batch.atoms_per_system.cpu().numpy()
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    calc = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    ii, jj, ss = [], [], []
    for s, (start, n) in enumerate(zip(offsets, counts)):
        if n == 0:
            continue
        periodic = bool(pbc[s].all())
        if pbc[s].any() and not periodic:
            raise ValueError("mixed periodicity is not supported: use pbc=True or pbc=False for all axes")
        box = cell[s] if periodic else np.zeros((3, 3))
        i, j, S = vesin_compute(calc, pos[start:start + n], box, periodic)
        ii.append(i + start)
        jj.append(j + start)
        ss.append(S)
    if ii:
        i = np.concatenate(ii)
        j = np.concatenate(jj)
        S = np.concatenate(ss)
    else:
        i = j = np.zeros(0, dtype=np.int64)
        S = np.zeros((0, 3))
    dev = batch.device
    return NeighborList(
        edge_index=torch.as_tensor(np.stack([i, j]).astype(np.int64), device=dev),
        shifts=torch.as_tensor(S, dtype=batch.dtype, device=dev),
        cutoff=float(cutoff),
    )


def vesin_compute(calc: vesin.NeighborList, positions: np.ndarray, box: np.ndarray, periodic: bool):
    """One vesin call returning (i, j, integer shifts) for a single system."""
    i, j, S = calc.compute(points=positions, box=box, periodic=periodic, quantities="ijS")
    return i.astype(np.int64), j.astype(np.int64), S.astype(np.float64)


def edge_vectors(batch: AtomsBatch, nl: NeighborList, cell: torch.Tensor | None = None) -> torch.Tensor:
    """r_ij (Å) for every edge, differentiable w.r.t. ``batch.positions`` and ``cell``.

    Pass a ``cell`` that requires grad (e.g. strained by a displacement) to get stress by autograd.
    """
    cell = batch.cell if cell is None else cell
    i, j = nl.edge_index
    sys_i = batch.system_index[i]
    shift_cart = torch.einsum("ek,ekl->el", nl.shifts, cell[sys_i])
    return batch.positions[j] - batch.positions[i] + shift_cart


def closest_pairs(systems, cutoff: float) -> dict[tuple[int, int], float]:
    """The smallest distance (Å) of each element pair ``(Za, Zb)`` (Za <= Zb) closer than ``cutoff`` in any of
    ``systems``: ``(numbers, positions [Å], cell [Å], pbc)`` tuples, periodic images included (vesin).
    Pairs never closer than ``cutoff`` are absent."""
    calc = vesin.NeighborList(cutoff=float(cutoff), full_list=False)
    out: dict[tuple[int, int], float] = {}
    for numbers, positions, cell, pbc in systems:
        numbers = np.asarray(numbers, dtype=np.int64)
        periodic = bool(np.all(pbc))
        box = np.asarray(cell, float).reshape(3, 3) if periodic else np.zeros((3, 3))
        i, j, d = calc.compute(points=np.asarray(positions, float).reshape(-1, 3), box=box, periodic=periodic,
                               quantities="ijd")
        if not len(d):
            continue
        lo, hi = np.minimum(numbers[i], numbers[j]), np.maximum(numbers[i], numbers[j])
        key = lo * 1000 + hi
        order = np.lexsort((d, key))                     # by pair, then distance: the first of each pair is its minimum
        key, d = key[order], d[order]
        first = np.r_[True, key[1:] != key[:-1]]
        for k, dist in zip(key[first], d[first]):
            pair = (int(k // 1000), int(k % 1000))
            out[pair] = min(out.get(pair, math.inf), float(dist))
    return out
