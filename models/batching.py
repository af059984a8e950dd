"""Training batches: one labelled frame as a graph item, items collated into a batch, and the batch plan of an
epoch (seeded, by frames or by atom count, sharded over data-parallel ranks).  Used by in-memory training
(``models.training``) and streamed training (``models.streaming``) alike.  Å, eV, eV/Å, eV/Å³.
"""
from __future__ import annotations

import numpy as np
import torch

from models.batch import AtomsBatch
from models.data import frame_labels
from models.graph import NeighborList, neighbor_list


def graph_item(positions, numbers, cell, pbc, energy: float, forces, stress, cutoff: float) -> dict:
    """One frame as training tensors (float64) with its neighbour list at ``cutoff`` (Å); stress NaN if none."""
    b = AtomsBatch(positions=torch.as_tensor(np.asarray(positions, float)).reshape(-1, 3),
                   numbers=torch.as_tensor(np.asarray(numbers), dtype=torch.long),
                   cell=torch.as_tensor(np.asarray(cell, float)).reshape(1, 3, 3),
                   system_index=torch.zeros(len(numbers), dtype=torch.long),
                   pbc=torch.as_tensor(np.asarray(pbc, bool)).reshape(1, 3))
    nl = neighbor_list(b, cutoff)
    return {"positions": b.positions, "numbers": b.numbers, "cell": b.cell, "pbc": b.pbc,
            "edge_index": nl.edge_index, "shifts": nl.shifts, "energy": float(energy),
            "forces": torch.as_tensor(np.asarray(forces, float)),
            "stress": (torch.full((3, 3), float("nan"), dtype=torch.float64) if stress is None
                       else torch.as_tensor(np.asarray(stress, float)))}


def atoms_item(atoms, cutoff: float) -> dict:
    lab = frame_labels(atoms)
    return graph_item(atoms.get_positions(), atoms.numbers, atoms.cell[:], atoms.pbc, lab["energy"], lab["forces"],
                      lab["stress"], cutoff)


def collate_items(items: list[dict], cutoff: float, dtype=torch.float32, device="cpu"):
    """AtomsBatch, NeighborList, energies [S] eV, forces [N,3] eV/Å, stress [S,3,3] eV/Å³ (NaN: none)."""
    counts = [len(it["numbers"]) for it in items]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    batch = AtomsBatch(
        positions=torch.cat([it["positions"] for it in items]).to(device, dtype),
        numbers=torch.cat([it["numbers"] for it in items]).to(device),
        cell=torch.cat([it["cell"] for it in items]).to(device, dtype),
        system_index=torch.repeat_interleave(torch.arange(len(items)), torch.as_tensor(counts)).to(device),
        pbc=torch.cat([it["pbc"] for it in items]).to(device),
    )
    nl = NeighborList(
        edge_index=torch.cat([it["edge_index"] + int(o) for it, o in zip(items, offsets)], dim=1).to(device),
        shifts=torch.cat([it["shifts"] for it in items]).to(device, dtype),
        cutoff=cutoff,
    )
    energy = torch.tensor([it["energy"] for it in items], dtype=dtype, device=device)
    forces = torch.cat([it["forces"] for it in items]).to(device, dtype)
    stress = torch.stack([it["stress"] for it in items]).to(device, dtype)
    return batch, nl, energy, forces, stress


def batch_order(n: int, batch_size: int, shuffle: bool = False, seed: int = 0, n_atoms=None,
                max_atoms: int | None = None) -> list[np.ndarray]:
    """Frame indices of every batch of an epoch: a seeded shuffle, then ``batch_size`` frames per batch, fewer
    (with ``max_atoms``) where they would hold more than ``max_atoms`` atoms (a larger frame is a batch alone), so
    memory is bounded by atoms whatever the cell size, and small and large cells mix."""
    order = np.arange(n)
    if shuffle:
        np.random.default_rng(seed).shuffle(order)
    if max_atoms is None or n_atoms is None:
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    out, current, atoms = [], [], 0
    for k in order:
        a = int(n_atoms[k])
        if current and (atoms + a > max_atoms or len(current) >= batch_size):
            out.append(np.array(current))
            current, atoms = [], 0
        current.append(k)
        atoms += a
    if current:
        out.append(np.array(current))
    return out


def rank_world() -> tuple[int, int]:
    """(rank, world size) of data-parallel training (``torch.distributed``), (0, 1) otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def epoch_plan(n: int, batch_size: int, shuffle: bool, seed: int, n_atoms=None, max_atoms: int | None = None,
               start: int = 0, shard: bool = True) -> list[np.ndarray]:
    """This process's batches of an epoch from global batch ``start`` on: every rank cuts the same global
    batches (:func:`batch_order`) and takes its contiguous share of each (all of it when not sharded)."""
    rank, world = rank_world() if shard else (0, 1)
    plan = [np.array_split(b, world)[rank] for b in batch_order(n, batch_size, shuffle, seed, n_atoms, max_atoms)[start:]]
    return [p for p in plan if len(p)]
