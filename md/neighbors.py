"""Verlet neighbour list: built with cutoff + skin, reused until an atom moved more than skin/2.

Lists are kept per system and rebuilt only for the systems that need it (so a system's list,
and hence its forces, do not depend on what else is in the batch).  The force field masks
edges longer than its own cutoff.  Distances in Å.
"""
from __future__ import annotations

import torch

from models.batch import AtomsBatch
from models.graph import NeighborList, neighbor_list


class VerletList:
    def __init__(self, cutoff: float, skin: float = 1.0):
        if skin < 0:
            raise ValueError("skin must be >= 0")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.n_builds = 0                    # system-list builds, for diagnostics
        self._pieces: list[tuple[torch.Tensor, torch.Tensor]] = []   # per system: local (i,j) [2,E], shifts [E,3]
        self._ref_positions: torch.Tensor | None = None
        self._combined: NeighborList | None = None
        self._counts: torch.Tensor | None = None

    def reset(self) -> None:
        self._pieces, self._ref_positions, self._combined, self._counts = [], None, None, None

    def _build_system(self, batch: AtomsBatch, s: int, start: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        sub = AtomsBatch(positions=batch.positions[start:start + n], numbers=batch.numbers[start:start + n],
                         cell=batch.cell[s:s + 1], system_index=torch.zeros(n, dtype=torch.long, device=batch.device),
                         pbc=batch.pbc[s:s + 1])
        nl = neighbor_list(sub, self.cutoff + self.skin)
        self.n_builds += 1
        return nl.edge_index, nl.shifts

    def update(self, batch: AtomsBatch) -> NeighborList:
        """The list for ``batch``'s current positions (rebuilding stale systems only)."""
        counts = batch.atoms_per_system
        starts = (torch.cumsum(counts, 0) - counts).tolist()
        sizes = counts.tolist()
        if (self._ref_positions is None or self._counts is None or len(self._pieces) != batch.n_systems
                or not torch.equal(self._counts, counts)):
            stale = list(range(batch.n_systems))
            self._pieces = [None] * batch.n_systems
            self._ref_positions = batch.positions.detach().clone()
            self._counts = counts.clone()
        else:
            moved = (batch.positions.detach() - self._ref_positions).norm(dim=1)
            worst = torch.zeros(batch.n_systems, dtype=moved.dtype, device=moved.device)
            worst = worst.scatter_reduce(0, batch.system_index, moved, "amax", include_self=True)
            stale = torch.nonzero(worst > 0.5 * self.skin).flatten().tolist()
        if stale:
            ref = self._ref_positions.clone()
            for s in stale:
                self._pieces[s] = self._build_system(batch, s, starts[s], sizes[s])
                ref[starts[s]:starts[s] + sizes[s]] = batch.positions[starts[s]:starts[s] + sizes[s]].detach()
            self._ref_positions = ref
            self._combined = None
        if self._combined is None:
            edges = [p[0] + starts[s] for s, p in enumerate(self._pieces)]
            shifts = [p[1] for p in self._pieces]
            self._combined = NeighborList(edge_index=torch.cat(edges, 1), shifts=torch.cat(shifts, 0),
                                          cutoff=self.cutoff + self.skin)
        return self._combined

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the systems where ``keep`` [S] is true (after MDState.select)."""
        if self._counts is None:
            return
        keep_list = keep.tolist()
        atom_keep = torch.repeat_interleave(keep.to(self._counts.device), self._counts)
        self._pieces = [p for p, k in zip(self._pieces, keep_list) if k]
        self._ref_positions = self._ref_positions[atom_keep.to(self._ref_positions.device)]
        self._counts = self._counts[keep.to(self._counts.device)]
        self._combined = None

    def state_dict(self) -> dict:
        return {"cutoff": self.cutoff, "skin": self.skin, "n_builds": self.n_builds,
                "pieces": [(e.cpu(), s.cpu()) for e, s in self._pieces] if self._pieces else [],
                "ref_positions": None if self._ref_positions is None else self._ref_positions.cpu(),
                "counts": None if self._counts is None else self._counts.cpu()}

    def load_state_dict(self, data: dict, device="cpu") -> None:
        self.cutoff, self.skin, self.n_builds = data["cutoff"], data["skin"], data["n_builds"]
        self._pieces = [(e.to(device), s.to(device)) for e, s in data["pieces"]]
        self._ref_positions = None if data["ref_positions"] is None else data["ref_positions"].to(device)
        self._counts = None if data["counts"] is None else data["counts"].to(device)
        self._combined = None
