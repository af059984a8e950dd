"""``Predictor``: a ForceField from a model, an Ensemble or a checkpoint path, on a chosen device.

The batched hot path of the MD engine: one forward pass over the whole AtomsBatch (all systems
concatenated), energies [n_systems] eV, forces [n_atoms,3] eV/Å, stress [n_systems,3,3] eV/Å³,
returned on the caller's device.
"""
from __future__ import annotations

from models.batch import AtomsBatch
from models.graph import NeighborList
from models.interface import Prediction


class Predictor:
    def __init__(self, model, device: str = "cpu", dtype=None):
        if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
            from models.checkpoint import load_model

            model = load_model(model, device=device, dtype=dtype)
        else:
            if dtype is not None:
                from models.registry import resolve_dtype

                model = model.to(dtype=resolve_dtype(dtype))
            model = model.to(device)
        self.model = model.eval()
        self.cutoff = float(model.cutoff)
        first = model.models[0] if hasattr(model, "models") else model
        self.device, self.dtype = first.reference_energies.device, first.param_dtype

    @property
    def elements(self) -> list[int]:
        return list(self.model.elements)

    def predict(self, batch: AtomsBatch, neighbors: NeighborList | None = None,
                compute_stress: bool = False) -> Prediction:
        out_device, out_dtype = batch.device, batch.dtype
        work = batch.to(device=self.device, dtype=self.dtype)
        if neighbors is not None:
            neighbors = NeighborList(neighbors.edge_index.to(self.device),
                                     neighbors.shifts.to(self.device, self.dtype), neighbors.cutoff)
        p = self.model.predict(work, neighbors, compute_stress)
        cast = lambda t: None if t is None else t.to(device=out_device, dtype=out_dtype)  # noqa: E731
        return Prediction(energy=cast(p.energy), forces=cast(p.forces), stress=cast(p.stress),
                          force_std=cast(p.force_std))
