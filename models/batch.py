"""A batch of periodic atomic systems concatenated along the atom axis (torch-sim's state idea).

Units: positions and cell in Å.  ``cell[s]`` rows are the lattice vectors of system ``s``.
Atoms of one system are contiguous and ``system_index`` is sorted.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch


class SystemSizes:
    """Sizes of anything holding ``positions`` [n_atoms, 3], ``cell`` [n_systems, 3, 3] and a sorted
    ``system_index`` (an AtomsBatch, md's batched state)."""

    @property
    def n_systems(self) -> int:
        return int(self.cell.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def atoms_per_system(self) -> torch.Tensor:
        """[n_systems] long: atom count of each system."""
        return torch.bincount(self.system_index, minlength=self.n_systems)


@dataclass
class AtomsBatch(SystemSizes):
    positions: torch.Tensor      # [n_atoms, 3] Å
    numbers: torch.Tensor        # [n_atoms] long, atomic numbers
    cell: torch.Tensor           # [n_systems, 3, 3] Å, rows = lattice vectors
    system_index: torch.Tensor   # [n_atoms] long, which system each atom belongs to (sorted)
    pbc: torch.Tensor            # [n_systems, 3] bool

    @property
    def device(self) -> torch.device:
        return self.positions.device

    @property
    def dtype(self) -> torch.dtype:
        return self.positions.dtype

    def to(self, device=None, dtype=None) -> "AtomsBatch":
        """Move to ``device`` and cast float tensors to ``dtype``."""
        fdt = dtype or self.positions.dtype
        return AtomsBatch(
            positions=self.positions.to(device=device, dtype=fdt),
            numbers=self.numbers.to(device=device),
            cell=self.cell.to(device=device, dtype=fdt),
            system_index=self.system_index.to(device=device),
            pbc=self.pbc.to(device=device),
        )

    def with_positions(self, positions: torch.Tensor) -> "AtomsBatch":
        return replace(self, positions=positions)

    @classmethod
    def from_atoms(cls, atoms_list: Sequence, dtype=torch.float32, device="cpu") -> "AtomsBatch":
        """Build from a sequence of ``ase.Atoms`` (or a single one)."""
        if hasattr(atoms_list, "get_positions"):
            atoms_list = [atoms_list]
        if len(atoms_list) == 0:
            raise ValueError("AtomsBatch.from_atoms got no structures")
        pos = np.concatenate([a.get_positions() for a in atoms_list])
        num = np.concatenate([a.get_atomic_numbers() for a in atoms_list])
        cell = np.stack([np.asarray(a.cell[:], dtype=float) for a in atoms_list])
        sys_idx = np.concatenate([np.full(len(a), k) for k, a in enumerate(atoms_list)])
        pbc = np.stack([np.asarray(a.pbc, dtype=bool) for a in atoms_list])
        return cls(
            positions=torch.as_tensor(pos, dtype=dtype, device=device),
            numbers=torch.as_tensor(num, dtype=torch.long, device=device),
            cell=torch.as_tensor(cell, dtype=dtype, device=device),
            system_index=torch.as_tensor(sys_idx, dtype=torch.long, device=device),
            pbc=torch.as_tensor(pbc, dtype=torch.bool, device=device),
        )

    def to_atoms(self) -> list:
        """Split back into a list of ``ase.Atoms`` (positions, numbers, cell, pbc only)."""
        from ase import Atoms

        pos = self.positions.detach().cpu().numpy()
        num = self.numbers.cpu().numpy()
        cell = self.cell.detach().cpu().numpy()
        pbc = self.pbc.cpu().numpy()
        counts = self.atoms_per_system.cpu().numpy()
        out, start = [], 0
        for s, n in enumerate(counts):
            out.append(Atoms(numbers=num[start:start + n], positions=pos[start:start + n], cell=cell[s], pbc=pbc[s]))
            start += n
        return out
