"""CGCNN (Xie & Grossman 2018) as a force field, built from torch-geometric's ``CGConv``.

Edge features are Gaussian-expanded distances; every message is multiplied by a cosine cutoff
(a smooth envelope the original lacks), so the energy is continuous when atoms cross the cutoff
(Å).  Batch normalisation is off: it would make one structure's energy depend on its batch.
"""
from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn.conv import CGConv
from torch_geometric.nn.models.schnet import GaussianSmearing

from models.base import ForceFieldModel, Graph, cosine_cutoff


class SmoothCGConv(CGConv):
    """``CGConv`` whose messages are scaled by a per-edge weight (the cutoff envelope).

    The weight travels as the last column of ``edge_attr`` (CGConv's generated ``propagate``
    accepts only x and edge_attr).
    """

    def forward(self, x, edge_index, edge_attr, edge_weight):  # type: ignore[override]
        return super().forward(x, edge_index, torch.cat([edge_attr, edge_weight.unsqueeze(-1)], dim=-1))

    def message(self, x_i, x_j, edge_attr):  # type: ignore[override]
        return super().message(x_i, x_j, edge_attr[:, :-1]) * edge_attr[:, -1:]


class CGCNN(ForceFieldModel):
    arch = "cgcnn"

    def __init__(self, elements, cutoff: float = 5.0, hidden_channels: int = 64, num_layers: int = 3,
                 num_gaussians: int = 32, core_repulsion: bool = True):
        super().__init__(elements, cutoff, core_repulsion)
        self._hp = dict(cutoff=float(cutoff), hidden_channels=hidden_channels, num_layers=num_layers,
                        num_gaussians=num_gaussians, core_repulsion=bool(core_repulsion))
        self.embedding = nn.Embedding(len(self.elements), hidden_channels)
        self.distance_expansion = GaussianSmearing(0.0, cutoff, num_gaussians)
        self.convs = nn.ModuleList(SmoothCGConv(hidden_channels, dim=num_gaussians, aggr="add", batch_norm=False)
                                   for _ in range(num_layers))
        self.head = nn.Sequential(nn.Linear(hidden_channels, hidden_channels), nn.Softplus(),
                                  nn.Linear(hidden_channels, 1))

    def hparams(self) -> dict:
        return dict(self._hp)

    def atomic_energy(self, graph: Graph) -> torch.Tensor:
        h = self.embedding(graph.species)
        edge_attr = self.distance_expansion(graph.distances)
        weight = cosine_cutoff(graph.distances, self.cutoff)
        flow = graph.edge_index.flip(0)      # messages from neighbour j (source) to centre i (target)
        for conv in self.convs:
            h = conv(h, flow, edge_attr, weight)
        return self.head(h).squeeze(-1)
