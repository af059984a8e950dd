"""The base class every GNN force field shares: element table, reference energies, cutoff masking.

A model maps a periodic graph to per-atom energies.  The total energy of system s is

    E_s = sum_{i in s} ( e0[Z_i] + scale * nn_i + shift ) + sum_{pairs in s} S(r) ZBL(r)      (eV)

where ``e0`` are per-element reference energies fitted by least squares on the training set
(``fit_reference_energies``) and ``nn_i`` is the network output (dimensionless); the network
learns only the residual.  The last term (``core_repulsion``, on by default) is the universal
Ziegler–Biersack–Littmark screened nuclear repulsion S(r) ZBL(r), switched off smoothly over a quarter of
the pair's covalent-radius sum r_cov, ending at ``core_off`` (Å, per element pair).  ``core_off`` starts at
0.75 r_cov and training moves it out to the closest approach of that pair in the training data
(:meth:`ForceFieldModel.fit_core_off`, at most 1.1 r_cov): the prior is exactly zero wherever data exist and
takes over where the network has never seen the pair, as the inner cutoff of ACE potentials does.  A student
without it is free to be soft there: the demo's went S-S 1.5 Å in its own MD, where the oracle never went
below 2.2 Å.  Forces (eV/Å) and stress (eV/Å³) come from autograd through
:func:`models.interface.energy_to_prediction`, so every model is energy conserving.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from common.errors import InputError
from models.batch import AtomsBatch
from models.graph import NeighborList, edge_vectors, neighbor_list
from models.interface import Prediction, energy_to_prediction

MAX_Z = 119
ZBL_A = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_B = (3.19980, 0.94229, 0.40290, 0.20162)
COULOMB_EV_A = 14.399645            # e^2 / (4 pi eps0) in eV Å
CORE_ON, CORE_OFF = 0.5, 0.75       # switch of the core repulsion before training, fractions of the covalent-radius sum
CORE_WIDTH = CORE_OFF - CORE_ON     # width of the switch (fraction of the covalent-radius sum), wherever it ends
CORE_OFF_MAX = 1.1                  # training moves the switch's end out to the data, at most this far (x r_cov)


@dataclass
class Graph:
    """What an architecture sees: edges already masked to the model cutoff."""
    species: torch.Tensor        # [n_atoms] long, row in the model's element table
    edge_index: torch.Tensor     # [2, n_edges] (centre i, neighbour j)
    vectors: torch.Tensor        # [n_edges, 3] Å, r_ij = x_j - x_i + shift·cell
    distances: torch.Tensor      # [n_edges] Å
    shifts: torch.Tensor         # [n_edges, 3] integer image offsets (float dtype)
    system_index: torch.Tensor   # [n_atoms]
    n_atoms: int
    n_systems: int


def cosine_cutoff(r: torch.Tensor, cutoff: float) -> torch.Tensor:
    """0.5 (cos(pi r / rc) + 1) for r < rc, else 0: value and slope vanish at rc."""
    return 0.5 * (torch.cos(r * math.pi / cutoff) + 1.0) * (r < cutoff).to(r.dtype)


def symbol(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[int(z)] if 0 < int(z) < len(chemical_symbols) else f"Z={int(z)}"


class ForceFieldModel(nn.Module):
    """Shared interface: ``cutoff`` (Å), ``elements`` (atomic numbers), ``energy``, ``predict``.

    Subclasses set ``arch`` and implement ``atomic_energy(graph) -> [n_atoms]`` (dimensionless)
    and ``hparams()`` (the keyword arguments that rebuild them, besides ``elements``).
    """

    arch = "base"

    def __init__(self, elements, cutoff: float, core_repulsion: bool = True):
        super().__init__()
        elements = sorted({int(z) for z in elements})
        if not elements:
            raise InputError("a model needs at least one element; pass the elements of the training set")
        self.cutoff = float(cutoff)
        self.core_repulsion = bool(core_repulsion)
        self.elements = elements
        self.register_buffer("z_to_index", self._index_table(elements), persistent=False)
        self._set_core_tables()
        self.register_buffer("core_off", self.default_core_off())                 # Å, [E, E]: end of the core switch
        self.register_buffer("reference_energies", torch.zeros(len(elements)))   # eV per atom
        self.register_buffer("energy_scale", torch.ones(()))                     # eV
        self.register_buffer("energy_shift", torch.zeros(()))                    # eV per atom

    # ----------------------------------------------------------------- element table
    def _set_core_tables(self) -> None:
        """Atomic number and covalent radius (Å) per element-table row, for :meth:`core_energy` (not saved:
        they follow from ``elements``)."""
        from ase.data import covalent_radii

        device = self.z_to_index.device          # float64 here; cast to the graph's dtype where used
        self.register_buffer("core_z", torch.as_tensor(self.elements, dtype=torch.float64, device=device),
                             persistent=False)
        self.register_buffer("core_radius", torch.as_tensor(np.asarray(covalent_radii)[self.elements],
                                                            dtype=torch.float64, device=device), persistent=False)

    def default_core_off(self) -> torch.Tensor:
        """[E, E] end of the core switch before training (Å): ``CORE_OFF`` x the pairs' covalent-radius sums."""
        r = self.core_radius
        return (CORE_OFF * (r[:, None] + r[None, :])).to(self.z_to_index.device)

    def fit_core_off(self, closest: dict[tuple[int, int], float], fine_tune: bool = False) -> None:
        """End the core switch of each element pair at its closest approach in the training data (Å; pairs
        from :func:`models.graph.closest_pairs`), within [``CORE_OFF``, ``CORE_OFF_MAX``] x r_cov: the prior is
        then zero on every training frame.  ``fine_tune``: only ever move it in (towards the new data), so
        frames the model was trained on stay outside it; pairs absent from ``closest`` keep their value."""
        r_cov = self.core_radius[:, None] + self.core_radius[None, :]
        table = self.core_off.clone()
        row = {z: k for k, z in enumerate(self.elements)}
        for (za, zb), dist in closest.items():
            if za not in row or zb not in row:
                continue
            a, b = row[za], row[zb]
            lo, hi = CORE_OFF * float(r_cov[a, b]), CORE_OFF_MAX * float(r_cov[a, b])
            value = min(float(table[a, b]), dist) if fine_tune else dist
            table[a, b] = table[b, a] = min(max(value, lo), hi)
        self.core_off = table

    def core_off_table(self) -> dict[str, float]:
        """``{"Li-S": Å, ...}``: where the core repulsion of each element pair ends."""
        return {f"{symbol(za)}-{symbol(zb)}": float(self.core_off[a, b])
                for a, za in enumerate(self.elements) for b, zb in enumerate(self.elements) if b >= a}

    def upgrade_state_dict(self, state: dict) -> dict:
        """A state dict without ``core_off`` (an older checkpoint): such models were trained with the switch
        ending at ``CORE_OFF`` x r_cov for every pair, which is what they get back."""
        return state if "core_off" in state else {**state, "core_off": self.default_core_off()}

    @staticmethod
    def _index_table(elements) -> torch.Tensor:
        table = torch.full((MAX_Z,), -1, dtype=torch.long)
        table[torch.as_tensor(elements, dtype=torch.long)] = torch.arange(len(elements))
        return table

    def species(self, numbers: torch.Tensor) -> torch.Tensor:
        """Rows in the element table for atomic ``numbers``; InputError naming unknown elements."""
        idx = self.z_to_index.to(numbers.device)[numbers.clamp(0, MAX_Z - 1)]
        if bool((idx < 0).any()):
            unknown = sorted({symbol(z) for z in numbers[idx < 0].tolist()})
            known = ", ".join(symbol(z) for z in self.elements)
            raise InputError(f"element(s) {', '.join(unknown)} unknown to this {self.arch} model "
                             f"(trained on {known}); fine-tune it on data containing them (matscreen train --init)")
        return idx

    def grow_elements(self, new_elements, seed: int = 0) -> list[int]:
        """Add elements to the table; every element embedding gains rows, existing rows are kept.

        New rows are drawn with ``seed`` (the caller's global torch RNG is left as it was).
        Returns the atomic numbers that were added.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return self._grow_elements(new_elements)

    def _grow_elements(self, new_elements) -> list[int]:
        added = sorted({int(z) for z in new_elements} - set(self.elements))
        if not added:
            return []
        old = list(self.elements)
        merged = sorted(old + added)
        order = [merged.index(z) for z in old]          # where each old row goes
        new_rows = [merged.index(z) for z in added]
        for module in list(self.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.Embedding) and child.num_embeddings == len(old):
                    emb = nn.Embedding(len(merged), child.embedding_dim).to(child.weight.device, child.weight.dtype)
                    with torch.no_grad():
                        std = float(child.weight.std()) if child.weight.numel() > 1 else 1.0
                        emb.weight.normal_(0.0, std)
                        emb.weight[order] = child.weight
                    setattr(module, name, emb)
        ref = torch.zeros(len(merged), dtype=self.reference_energies.dtype, device=self.reference_energies.device)
        ref[order] = self.reference_energies
        ref[new_rows] = self.reference_energies.mean() if len(old) else 0.0
        self.reference_energies = ref
        old_off = self.core_off
        self.elements = merged
        self.z_to_index = self._index_table(merged).to(self.z_to_index.device)
        self._set_core_tables()
        off = self.default_core_off().to(old_off.dtype)
        idx = torch.as_tensor(order, device=off.device)
        off[idx[:, None], idx[None, :]] = old_off
        self.core_off = off
        return added

    # ----------------------------------------------------------------- energies
    def build_graph(self, batch: AtomsBatch, neighbors: NeighborList | None = None,
                    cell: torch.Tensor | None = None) -> Graph:
        nl = neighbors if neighbors is not None else neighbor_list(batch, self.cutoff)
        vec = edge_vectors(batch, nl, cell)
        keep = (vec.detach() ** 2).sum(-1) < self.cutoff ** 2
        if not bool(keep.all()):
            vec = vec[keep]
            edge_index, shifts = nl.edge_index[:, keep], nl.shifts[keep]
        else:
            edge_index, shifts = nl.edge_index, nl.shifts
        return Graph(
            species=self.species(batch.numbers),
            edge_index=edge_index,
            vectors=vec,
            distances=vec.norm(dim=-1),
            shifts=shifts,
            system_index=batch.system_index,
            n_atoms=batch.n_atoms,
            n_systems=batch.n_systems,
        )

    def atomic_energy(self, graph: Graph) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def hparams(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def core_energy(self, graph: Graph) -> torch.Tensor:
        """[n_atoms] switched ZBL repulsion (eV), half of each pair's energy on each atom; a pair's switch ends at
        its ``core_off`` (Å) and starts ``CORE_WIDTH`` x r_cov before."""
        z_of, radius_of = self.core_z.to(graph.distances.dtype), self.core_radius.to(graph.distances.dtype)
        i, j = graph.edge_index
        zi, zj = z_of[graph.species[i]], z_of[graph.species[j]]
        r_cov = radius_of[graph.species[i]] + radius_of[graph.species[j]]
        r_off = self.core_off.to(graph.distances.dtype)[graph.species[i], graph.species[j]]
        r_on = r_off - CORE_WIDTH * r_cov
        near = graph.distances < r_off
        out = torch.zeros(graph.n_atoms, dtype=graph.distances.dtype, device=graph.distances.device)
        if not bool(near.any()):
            return out
        r, zi, zj, r_on, r_off = graph.distances[near], zi[near], zj[near], r_on[near], r_off[near]
        x = r * (zi ** 0.23 + zj ** 0.23) / 0.46850            # r / a_ZBL, a = 0.8854 a0 / (Zi^.23 + Zj^.23)
        phi = sum(a * torch.exp(-b * x) for a, b in zip(ZBL_A, ZBL_B))
        t = ((r - r_on) / (r_off - r_on)).clamp(0.0, 1.0)
        switch = 0.5 * (1.0 + torch.cos(math.pi * t))          # 1 below r_on, 0 from r_off, smooth
        pair = COULOMB_EV_A * zi * zj / r * phi * switch       # every pair appears as i->j and j->i
        return out.index_add(0, i[near], 0.5 * pair)

    @property
    def param_dtype(self) -> torch.dtype:
        return self.reference_energies.dtype

    def energy(self, batch: AtomsBatch, neighbors: NeighborList | None = None,
               cell: torch.Tensor | None = None) -> torch.Tensor:
        """Total energy per system [n_systems] (eV); differentiable w.r.t. positions and ``cell``."""
        graph = self.build_graph(batch, neighbors, cell)
        nn_out = self.atomic_energy(graph)
        e_atom = nn_out * self.energy_scale + self.energy_shift + self.reference_energies[graph.species]
        if self.core_repulsion:
            e_atom = e_atom + self.core_energy(graph)
        out = torch.zeros(graph.n_systems, dtype=e_atom.dtype, device=e_atom.device)
        return out.index_add(0, graph.system_index, e_atom)

    def predict(self, batch: AtomsBatch, neighbors: NeighborList | None = None,
                compute_stress: bool = False, create_graph: bool = False) -> Prediction:
        """ForceField protocol: energy (eV), forces (eV/Å), optional stress (eV/Å³); one forward pass."""
        batch = batch.to(device=self.reference_energies.device, dtype=self.param_dtype)
        if neighbors is not None and neighbors.shifts.dtype != self.param_dtype:
            neighbors = NeighborList(neighbors.edge_index.to(batch.device),
                                     neighbors.shifts.to(device=batch.device, dtype=self.param_dtype),
                                     neighbors.cutoff)
        if create_graph:
            return energy_to_prediction(self.energy, batch, neighbors, compute_stress, create_graph=True)
        with torch.enable_grad():
            return energy_to_prediction(self.energy, batch, neighbors, compute_stress)

    def predict_atoms(self, atoms_list, compute_stress: bool = False) -> Prediction:
        """Convenience: predict for ``ase.Atoms`` (or a list of them) in one batch."""
        batch = AtomsBatch.from_atoms(atoms_list, dtype=self.param_dtype, device=self.reference_energies.device)
        return self.predict(batch, compute_stress=compute_stress)

    # ----------------------------------------------------------------- normalisation
    def set_normalisation(self, reference_energies: dict[int, float], scale: float, shift: float = 0.0) -> None:
        """Set per-element e0 (eV/atom), network output scale (eV) and shift (eV/atom)."""
        ref = torch.zeros_like(self.reference_energies)
        for z, e in reference_energies.items():
            if int(z) in self.elements:
                ref[self.elements.index(int(z))] = float(e)
        self.reference_energies = ref
        self.energy_scale = torch.full_like(self.energy_scale, float(scale))
        self.energy_shift = torch.full_like(self.energy_shift, float(shift))

    def normalisation(self) -> dict:
        return {
            "reference_energies_eV": {int(z): float(e) for z, e in zip(self.elements, self.reference_energies.tolist())},
            "energy_scale_eV": float(self.energy_scale),
            "energy_shift_eV_atom": float(self.energy_shift),
        }


def composition(frames, elements) -> tuple[np.ndarray, np.ndarray]:
    """([F, E] atoms of each element per frame, [F] energies in eV) of labelled frames."""
    col = {int(z): k for k, z in enumerate(elements)}
    counts = np.zeros((len(frames), len(elements)))
    energies = np.zeros(len(frames))
    for f, atoms in enumerate(frames):
        for z, n in zip(*np.unique(atoms.numbers, return_counts=True)):
            counts[f, col[int(z)]] = n
        energies[f] = atoms.get_potential_energy()
    return counts, energies


def fit_reference_energies(frames, elements=None) -> dict[int, float]:
    """Least-squares per-element energies e0 (eV/atom) so that E ≈ sum_i e0[Z_i] (numpy lstsq).

    With collinear compositions (e.g. one stoichiometry) lstsq returns the minimum-norm solution,
    which still reproduces the mean energy per formula.
    """
    elements = sorted({int(z) for a in frames for z in a.numbers}) if elements is None else list(elements)
    counts, energies = composition(frames, elements)
    sol, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return {int(z): float(sol[k]) for k, z in enumerate(elements)}
