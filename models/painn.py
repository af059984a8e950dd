"""PaiNN (Schütt, Unke, Gastegger 2021): equivariant message passing with scalar and vector features.

Scalars s [n_atoms, F] are invariant; vectors v [n_atoms, 3, F] rotate with the structure.
Radial basis sin(n pi r / rc) / r times a cosine cutoff, so messages vanish smoothly at rc (Å).
The energy is a function of the scalars only, hence rotation invariant; forces by autograd.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from models.base import ForceFieldModel, Graph, cosine_cutoff


class _Message(nn.Module):
    def __init__(self, f: int, num_rbf: int):
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(f, f), nn.SiLU(), nn.Linear(f, 3 * f))
        self.filter = nn.Linear(num_rbf, 3 * f)
        self.f = f

    def forward(self, s, v, i, j, edge, unit, first: bool = False):
        """One message pass.  ``edge`` [n_edges, num_rbf + 1]: [rbf fcut, fcut], so that this layer's radial
        filter ``filter(rbf) * fcut`` is ``edge @ [W | b]^T`` (no edge-sized product with fcut or bias add).
        The three channels (ds, dvv, dvs) are split at the atom and weight level, never on edges (an
        edge-sized split costs a concatenation in the backward pass).  ``first``: v is still zero, so its
        gathered term (and its filter) is skipped: exactly the same result, cheaper."""
        weight = torch.cat([self.filter.weight, self.filter.bias.unsqueeze(-1)], dim=-1)    # [3F, num_rbf + 1]
        w_s, w_vv, w_vs = torch.split(weight, self.f)
        h_s, h_vv, h_vs = torch.split(self.phi(s), self.f, dim=-1)                          # [n_atoms, F] each
        ds = h_s[j] * (edge @ w_s.T)
        dv = (h_vs[j] * (edge @ w_vs.T)).unsqueeze(1) * unit.unsqueeze(-1)
        if not first:
            dv = dv + v[j] * (h_vv[j] * (edge @ w_vv.T)).unsqueeze(1)
        s = s.index_add(0, i, ds)
        v = v.index_add(0, i, dv)
        return s, v


class _Update(nn.Module):
    def __init__(self, f: int):
        super().__init__()
        self.U = nn.Linear(f, f, bias=False)
        self.V = nn.Linear(f, f, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * f, f), nn.SiLU(), nn.Linear(f, 3 * f))
        self.f = f

    def forward(self, s, v):
        uv, vv = self.U(v), self.V(v)
        norm = torch.sqrt((vv ** 2).sum(1) + 1e-8)     # eps: differentiable at v = 0
        a = self.mlp(torch.cat([s, norm], dim=-1))
        avv, asv, ass = torch.split(a, self.f, dim=-1)
        s = s + asv * (uv * vv).sum(1) + ass
        v = v + avv.unsqueeze(1) * uv
        return s, v


class PaiNN(ForceFieldModel):
    arch = "painn"

    def __init__(self, elements, cutoff: float = 5.0, hidden_channels: int = 64, num_interactions: int = 3,
                 num_rbf: int = 20, num_layers: int | None = None, core_repulsion: bool = True):
        """``num_layers`` is an alias of ``num_interactions`` (the name CGCNN uses)."""
        super().__init__(elements, cutoff, core_repulsion)
        if num_layers is not None:
            num_interactions = int(num_layers)
        self._hp = dict(cutoff=float(cutoff), hidden_channels=hidden_channels, num_interactions=num_interactions,
                        num_rbf=num_rbf, core_repulsion=bool(core_repulsion))
        f = hidden_channels
        self.embedding = nn.Embedding(len(self.elements), f)
        self.register_buffer("freq", torch.arange(1, num_rbf + 1, dtype=torch.float32) * math.pi / cutoff)
        self.messages = nn.ModuleList(_Message(f, num_rbf) for _ in range(num_interactions))
        self.updates = nn.ModuleList(_Update(f) for _ in range(num_interactions))
        self.head = nn.Sequential(nn.Linear(f, f // 2), nn.SiLU(), nn.Linear(f // 2, 1))

    def hparams(self) -> dict:
        return dict(self._hp)

    def atomic_energy(self, graph: Graph) -> torch.Tensor:
        i, j = graph.edge_index
        r = graph.distances
        unit = graph.vectors / r.unsqueeze(-1)
        fcut = cosine_cutoff(r, self.cutoff).unsqueeze(-1)
        rbf = torch.sin(r.unsqueeze(-1) * self.freq) / r.unsqueeze(-1)
        edge = torch.cat([rbf * fcut, fcut], dim=-1)                                # [n_edges, num_rbf + 1]
        s = self.embedding(graph.species)
        v = torch.zeros(s.shape[0], 3, s.shape[1], dtype=s.dtype, device=s.device)
        for layer, (msg, upd) in enumerate(zip(self.messages, self.updates)):
            s, v = msg(s, v, i, j, edge, unit, first=layer == 0)
            s, v = upd(s, v)
        return self.head(s).squeeze(-1)
