"""The batched MD state (torch-sim's SimState idea): many systems concatenated along the atom axis.

Units: positions Å (kept *unwrapped*, i.e. continuous; wrap only for output), velocities Å/fs,
masses amu, forces eV/Å, energies eV, temperatures K, time fs.  Per-system rows: cell, target
temperature, Nosé–Hoover chain, random seed and step counter.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import numpy as np
import torch
from ase import units

from models.batch import AtomsBatch, SystemSizes

KB_EV_PER_K = float(units.kB)                       # eV/K
# 1 amu·(Å/fs)^2 in eV; a [Å/fs^2] = F [eV/Å] / (m [amu] * AMU_A2_FS2_IN_EV)
AMU_A2_FS2_IN_EV = float(units._amu * (1e-10 / 1e-15) ** 2 / units._e)   # ~103.64


@dataclass
class MDState(SystemSizes):
    positions: torch.Tensor            # [N,3] Å, unwrapped
    velocities: torch.Tensor           # [N,3] Å/fs
    masses: torch.Tensor               # [N] amu
    numbers: torch.Tensor              # [N] long
    cell: torch.Tensor                 # [S,3,3] Å
    pbc: torch.Tensor                  # [S,3] bool
    system_index: torch.Tensor         # [N] long, sorted
    atom_in_system: torch.Tensor       # [N] long, index of the atom within its system
    target_temperature_K: torch.Tensor  # [S]
    seed: torch.Tensor                 # [S] long, per-system random stream
    step: torch.Tensor                 # [S] long, integrator steps done
    nh_eta: torch.Tensor               # [S,M] Nosé–Hoover chain positions (dimensionless)
    nh_veta: torch.Tensor              # [S,M] chain velocities, 1/fs
    forces: torch.Tensor | None = None           # [N,3] eV/Å at ``positions``
    potential_energy: torch.Tensor | None = None  # [S] eV
    stress: torch.Tensor | None = None           # [S,3,3] eV/Å^3

    # -- sizes: n_systems, n_atoms, atoms_per_system from models.batch.SystemSizes ------------------
    @property
    def degrees_of_freedom(self) -> torch.Tensor:
        """[S] 3N - 3 per system (total momentum is removed at start and kept zero)."""
        return (3 * self.atoms_per_system - 3).clamp(min=1).to(self.positions.dtype)

    @property
    def device(self) -> torch.device:
        return self.positions.device

    # -- per-system reductions -------------------------------------------------------------------
    def system_sum(self, per_atom: torch.Tensor) -> torch.Tensor:
        """Sum a per-atom tensor [N,...] over the atoms of each system -> [S,...]."""
        out = torch.zeros((self.n_systems, *per_atom.shape[1:]), dtype=per_atom.dtype, device=per_atom.device)
        return out.index_add(0, self.system_index, per_atom)

    def kinetic_energy(self) -> torch.Tensor:
        """[S] eV."""
        ke_atom = 0.5 * self.masses * (self.velocities ** 2).sum(dim=1) * AMU_A2_FS2_IN_EV
        return self.system_sum(ke_atom)

    def temperature_K(self) -> torch.Tensor:
        """[S] instantaneous temperature, K (3N - 3 degrees of freedom)."""
        return 2.0 * self.kinetic_energy() / (self.degrees_of_freedom * KB_EV_PER_K)

    def com_velocity(self) -> torch.Tensor:
        """[S,3] mass-weighted mean velocity, Å/fs."""
        mv = self.system_sum(self.masses[:, None] * self.velocities)
        return mv / self.system_sum(self.masses)[:, None]

    def wrapped_positions(self) -> torch.Tensor:
        """[N,3] positions wrapped into each system's cell (periodic axes only), Å."""
        cell = self.cell[self.system_index]
        frac = torch.linalg.solve(cell.transpose(1, 2), self.positions.unsqueeze(-1)).squeeze(-1)
        pbc = self.pbc[self.system_index]
        frac = torch.where(pbc, frac - torch.floor(frac), frac)
        return torch.einsum("ni,nij->nj", frac, cell)

    def as_batch(self, dtype: torch.dtype | None = None) -> AtomsBatch:
        batch = AtomsBatch(positions=self.positions, numbers=self.numbers, cell=self.cell,
                           system_index=self.system_index, pbc=self.pbc)
        return batch if dtype is None or dtype == self.positions.dtype else batch.to(dtype=dtype)

    # -- bookkeeping -------------------------------------------------------------------------------
    def replace(self, **changes) -> "MDState":
        return replace(self, **changes)

    def select(self, keep: torch.Tensor) -> "MDState":
        """The sub-state with only the systems where ``keep`` [S] bool is true (re-indexed)."""
        keep = keep.to(self.device)
        atom_keep = keep[self.system_index]
        new_index = torch.cumsum(keep.long(), 0) - 1
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                out[f.name] = None
            elif value.shape[0] == self.n_atoms and f.name not in ("cell",) and self._per_atom(f.name):
                out[f.name] = value[atom_keep]
            else:
                out[f.name] = value[keep]
        out["system_index"] = new_index[self.system_index[atom_keep]]
        return MDState(**out)

    @staticmethod
    def _per_atom(name: str) -> bool:
        return name in {"positions", "velocities", "masses", "numbers", "system_index", "atom_in_system", "forces"}

    def state_dict(self) -> dict:
        return {f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).detach().cpu())
                for f in fields(self)}

    @classmethod
    def from_state_dict(cls, data: dict, device="cpu") -> "MDState":
        return cls(**{k: (None if v is None else v.to(device)) for k, v in data.items()})

    def to(self, device) -> "MDState":
        return MDState.from_state_dict(self.state_dict(), device)

    @classmethod
    def from_atoms(cls, atoms_list: Sequence, temperatures_K: Sequence[float], seeds: Sequence[int],
                   dtype=torch.float64, device="cpu", chain_length: int = 3) -> "MDState":
        """Build from ``ase.Atoms`` (positions, cell, masses); velocities zero (see ``maxwell_boltzmann``)."""
        if hasattr(atoms_list, "get_positions"):
            atoms_list = [atoms_list]
        batch = AtomsBatch.from_atoms(atoms_list, dtype=dtype, device=device)
        n_sys = batch.n_systems
        if len(temperatures_K) != n_sys or len(seeds) != n_sys:
            raise ValueError("need one temperature and one seed per system")
        masses = np.concatenate([a.get_masses() for a in atoms_list])
        counts = batch.atoms_per_system
        starts = torch.cumsum(counts, 0) - counts
        atom_in = torch.arange(batch.n_atoms, device=device) - starts[batch.system_index]
        return cls(
            positions=batch.positions, velocities=torch.zeros_like(batch.positions),
            masses=torch.as_tensor(masses, dtype=dtype, device=device), numbers=batch.numbers,
            cell=batch.cell, pbc=batch.pbc, system_index=batch.system_index, atom_in_system=atom_in,
            target_temperature_K=torch.as_tensor(np.asarray(temperatures_K, float), dtype=dtype, device=device),
            seed=torch.as_tensor(np.asarray(seeds, np.int64), device=device),
            step=torch.zeros(n_sys, dtype=torch.long, device=device),
            nh_eta=torch.zeros(n_sys, chain_length, dtype=dtype, device=device),
            nh_veta=torch.zeros(n_sys, chain_length, dtype=dtype, device=device),
        )
