"""SchNet (Schütt et al. 2017) on periodic graphs, built from torch-geometric's SchNet blocks.

Reuses ``GaussianSmearing``, ``InteractionBlock`` (continuous-filter convolution with a cosine
cutoff, so messages vanish smoothly at the cutoff) and ``ShiftedSoftplus``; the neighbour search
is ours (periodic, any cell), replacing torch-geometric's ``interaction_graph`` hook.
"""
from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn.models.schnet import GaussianSmearing, InteractionBlock, ShiftedSoftplus

from models.base import ForceFieldModel, Graph


class SchNet(ForceFieldModel):
    arch = "schnet"

    def __init__(self, elements, cutoff: float = 5.0, hidden_channels: int = 64, num_filters: int = 64,
                 num_interactions: int = 3, num_gaussians: int = 32, core_repulsion: bool = True):
        super().__init__(elements, cutoff, core_repulsion)
        self._hp = dict(cutoff=float(cutoff), hidden_channels=hidden_channels, num_filters=num_filters,
                        num_interactions=num_interactions, num_gaussians=num_gaussians,
                        core_repulsion=bool(core_repulsion))
        self.embedding = nn.Embedding(len(self.elements), hidden_channels)
        self.distance_expansion = GaussianSmearing(0.0, cutoff, num_gaussians)
        self.interactions = nn.ModuleList(
            InteractionBlock(hidden_channels, num_gaussians, num_filters, cutoff) for _ in range(num_interactions))
        self.head = nn.Sequential(nn.Linear(hidden_channels, hidden_channels // 2), ShiftedSoftplus(),
                                  nn.Linear(hidden_channels // 2, 1))

    def hparams(self) -> dict:
        return dict(self._hp)

    def atomic_energy(self, graph: Graph) -> torch.Tensor:
        h = self.embedding(graph.species)
        rbf = self.distance_expansion(graph.distances)
        # torch-geometric message passing flows edge_index[0] (source) -> edge_index[1] (target):
        # messages go from the neighbour j to the centre i.
        flow = graph.edge_index.flip(0)
        for block in self.interactions:
            h = h + block(h, flow, graph.distances, rbf)
        return self.head(h).squeeze(-1)
