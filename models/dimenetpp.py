"""DimeNet++ (Gasteiger et al. 2020) on periodic graphs, built from torch-geometric's DimeNet blocks.

Reuses ``BesselBasisLayer``, ``Envelope``, ``EmbeddingBlock``, ``InteractionPPBlock`` and
``OutputPPBlock``.  ``SphericalBasis`` computes the same functions as torch-geometric's
``SphericalBasisLayer`` numerically (scipy Bessel zeros, recurrences) because that layer derives
them with sympy, which takes ~20 s per model construction; a test checks they agree.  Triplets and angles are computed here from the differentiable periodic edge
vectors (the study's code took angles from detached positions, so its forces were not -dE/dx).
A triplet k->j->i pairs edge (j->i) with edge (k->j) and excludes only the exact reverse edge
(k = i with the opposite image shift): in small cells an atom neighbours its own images, which
are genuine triplet partners.  The polynomial envelope makes the energy smooth at the cutoff (Å).
"""
from __future__ import annotations

import torch
from torch import nn
import numpy as np
from torch_geometric.nn.models.dimenet import (BesselBasisLayer, EmbeddingBlock, Envelope, InteractionPPBlock,
                                               OutputPPBlock)
from torch_geometric.nn.resolver import activation_resolver

from models.base import ForceFieldModel, Graph


def periodic_triplets(edge_index: torch.Tensor, shifts: torch.Tensor, n_atoms: int):
    """(idx_kj, idx_ji): edge pairs where edge kj's centre is edge ji's neighbour, minus reverse edges.

    Edges follow models.graph: edge e has centre ``edge_index[0, e]`` and neighbour ``edge_index[1, e]``.
    For DimeNet, edge e is the message j->i with i = centre, j = neighbour.  Fully vectorised.
    """
    centre, nbr = edge_index
    n_edges = centre.numel()
    order = torch.argsort(centre, stable=True)
    deg = torch.bincount(centre, minlength=n_atoms)
    start = torch.cumsum(deg, 0) - deg
    n_per = deg[nbr]                                             # candidates for each edge ji
    idx_ji = torch.repeat_interleave(torch.arange(n_edges, device=centre.device), n_per)
    first = torch.repeat_interleave(start[nbr], n_per)
    local = torch.arange(idx_ji.numel(), device=centre.device) - torch.repeat_interleave(torch.cumsum(n_per, 0) - n_per, n_per)
    idx_kj = order[first + local]
    reverse = (nbr[idx_kj] == centre[idx_ji]) & ((shifts[idx_kj] + shifts[idx_ji]).abs().sum(-1) < 0.5)
    keep = ~reverse
    return idx_kj[keep], idx_ji[keep]


def spherical_bessel_zeros(num_spherical: int, num_radial: int) -> np.ndarray:
    """zeros[l, n]: the first ``num_radial`` positive zeros of j_l, l < ``num_spherical`` (interlacing)."""
    from scipy.optimize import brentq
    from scipy.special import spherical_jn

    n_total = num_radial + num_spherical
    zeros = np.zeros((num_spherical, n_total))
    zeros[0] = np.arange(1, n_total + 1) * np.pi
    for l in range(1, num_spherical):
        prev = zeros[l - 1]
        for n in range(n_total - l):
            zeros[l, n] = brentq(lambda x: spherical_jn(l, x), prev[n], prev[n + 1])
    return zeros[:, :num_radial]


def spherical_jn_torch(lmax: int, x: torch.Tensor) -> list[torch.Tensor]:
    """[j_0(x), ..., j_lmax(x)] by upward recurrence (x > 0)."""
    s, c = torch.sin(x), torch.cos(x)
    out = [s / x]
    if lmax >= 1:
        out.append(s / x ** 2 - c / x)
    for l in range(1, lmax):
        out.append((2 * l + 1) / x * out[l] - out[l - 1])
    return out


def legendre_torch(lmax: int, c: torch.Tensor) -> list[torch.Tensor]:
    """[P_0(c), ..., P_lmax(c)] by Bonnet's recurrence."""
    out = [torch.ones_like(c)]
    if lmax >= 1:
        out.append(c)
    for l in range(1, lmax):
        out.append(((2 * l + 1) * c * out[l] - l * out[l - 1]) / (l + 1))
    return out


class SphericalBasis(nn.Module):
    """DimeNet's 2D basis a_{ln}(d_kj, angle) = N_ln j_l(z_ln d/rc) u(d/rc) * Y_l^0(angle).

    Same functions, ordering and normalisation as torch-geometric's ``SphericalBasisLayer``
    (N_ln = sqrt(2) / |j_{l+1}(z_ln)|, Y_l^0 = sqrt((2l+1)/4pi) P_l(cos angle), u the envelope).
    The Bessel recurrence runs in float64 per edge (accuracy); the per-triplet products use the input dtype.
    """

    def __init__(self, num_spherical: int, num_radial: int, cutoff: float = 5.0, envelope_exponent: int = 5):
        super().__init__()
        from scipy.special import spherical_jn

        self.num_spherical, self.num_radial, self.cutoff = num_spherical, num_radial, cutoff
        self.envelope = Envelope(envelope_exponent)
        z = spherical_bessel_zeros(num_spherical, num_radial)
        norm = np.array([[np.sqrt(2.0) / abs(spherical_jn(l + 1, z[l, n])) for n in range(num_radial)]
                         for l in range(num_spherical)])
        ylm = np.sqrt((2 * np.arange(num_spherical) + 1) / (4 * np.pi))
        self.register_buffer("zeros", torch.as_tensor(z, dtype=torch.float64), persistent=False)
        self.register_buffer("norm", torch.as_tensor(norm, dtype=torch.float64), persistent=False)
        self.register_buffer("ylm", torch.as_tensor(ylm, dtype=torch.float64), persistent=False)

    def _apply(self, fn, recurse=True):
        # keep the float64 tables float64 when the model is cast to float32
        z, n, y = self.zeros, self.norm, self.ylm
        out = super()._apply(fn, recurse)
        dev = self.zeros.device
        self.zeros, self.norm, self.ylm = z.to(dev), n.to(dev), y.to(dev)
        return out

    def forward(self, dist: torch.Tensor, angle: torch.Tensor, idx_kj: torch.Tensor) -> torch.Tensor:
        dtype = dist.dtype
        x = (dist.double() / self.cutoff)
        arg = x.unsqueeze(-1) * self.zeros.reshape(1, -1)                  # [E, L*N]
        lmax = self.num_spherical - 1
        jl = spherical_jn_torch(lmax, arg.view(-1, self.num_spherical, self.num_radial))
        rbf = torch.stack([jl[l][:, l, :] for l in range(self.num_spherical)], dim=1) * self.norm
        rbf = (self.envelope(x).unsqueeze(-1).unsqueeze(-1) * rbf).to(dtype)        # [E, L, N]
        cbf = torch.stack(legendre_torch(lmax, torch.cos(angle)), dim=1) * self.ylm.to(dtype)   # [T, L]
        out = rbf[idx_kj] * cbf.unsqueeze(-1)                                      # per triplet, input dtype
        return out.reshape(-1, self.num_spherical * self.num_radial)


class DimeNetPP(ForceFieldModel):
    arch = "dimenetpp"

    def __init__(self, elements, cutoff: float = 5.0, hidden_channels: int = 64, num_blocks: int = 3,
                 int_emb_size: int = 32, basis_emb_size: int = 8, out_emb_channels: int = 128,
                 num_spherical: int = 7, num_radial: int = 6, envelope_exponent: int = 5,
                 num_before_skip: int = 1, num_after_skip: int = 2, num_output_layers: int = 3,
                 core_repulsion: bool = True):
        super().__init__(elements, cutoff, core_repulsion)
        self._hp = dict(cutoff=float(cutoff), hidden_channels=hidden_channels, num_blocks=num_blocks,
                        int_emb_size=int_emb_size, basis_emb_size=basis_emb_size,
                        out_emb_channels=out_emb_channels, num_spherical=num_spherical, num_radial=num_radial,
                        envelope_exponent=envelope_exponent, num_before_skip=num_before_skip,
                        num_after_skip=num_after_skip, num_output_layers=num_output_layers,
                        core_repulsion=bool(core_repulsion))
        act = activation_resolver("swish")
        self.rbf = BesselBasisLayer(num_radial, cutoff, envelope_exponent)
        self.sbf = SphericalBasis(num_spherical, num_radial, cutoff, envelope_exponent)
        self.emb = EmbeddingBlock(num_radial, hidden_channels, act)
        # element table instead of torch-geometric's 95 atomic numbers (grows on fine-tuning)
        self.emb.emb = nn.Embedding(len(self.elements), hidden_channels)
        nn.init.uniform_(self.emb.emb.weight, -3 ** 0.5, 3 ** 0.5)
        # 'glorot_orthogonal' output init: the output must depend on the weights from the start
        self.output_blocks = nn.ModuleList(
            OutputPPBlock(num_radial, hidden_channels, out_emb_channels, 1, num_output_layers, act,
                          output_initializer="glorot_orthogonal") for _ in range(num_blocks + 1))
        self.interaction_blocks = nn.ModuleList(
            InteractionPPBlock(hidden_channels, int_emb_size, basis_emb_size, num_spherical, num_radial,
                               num_before_skip, num_after_skip, act) for _ in range(num_blocks))

    def hparams(self) -> dict:
        return dict(self._hp)

    def atomic_energy(self, graph: Graph) -> torch.Tensor:
        centre, nbr = graph.edge_index
        idx_kj, idx_ji = periodic_triplets(graph.edge_index, graph.shifts, graph.n_atoms)
        # angle at j between j->i and j->k, from differentiable edge vectors (r_ji = x_j - x_i + shift)
        to_i = -graph.vectors[idx_ji]
        to_k = graph.vectors[idx_kj]
        a = (to_i * to_k).sum(-1)
        b = torch.linalg.cross(to_i, to_k, dim=-1).norm(dim=-1)
        angle = torch.atan2(b, a)
        dist = graph.distances
        rbf = self.rbf(dist)
        sbf = self.sbf(dist, angle, idx_kj)
        x = self.emb(graph.species, rbf, centre, nbr)
        out = self.output_blocks[0](x, rbf, centre, num_nodes=graph.n_atoms)
        for block, head in zip(self.interaction_blocks, self.output_blocks[1:]):
            x = block(x, rbf, sbf, idx_kj, idx_ji)
            out = out + head(x, rbf, centre, num_nodes=graph.n_atoms)
        return out.squeeze(-1)
