"""An ASE Calculator around any ForceField (a model, an Ensemble or a checkpoint path).

Implements energy (eV), free_energy, forces (eV/Å) and stress (eV/Å³, ASE Voigt order
xx, yy, zz, yz, xz, xy); ensembles also put ``force_std`` (eV/Å per atom) in ``results``.
Works with ASE's MD integrators and optimisers.
"""
from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from models.batch import AtomsBatch


class MLFFCalculator(Calculator):
    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model, device: str = "cpu", dtype=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
            from models.checkpoint import load_model

            model = load_model(model, device=device, dtype=dtype)
        self.model = model
        first = model.models[0] if hasattr(model, "models") else model
        self._dtype = first.param_dtype
        self._device = first.reference_energies.device

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        want_stress = "stress" in properties and bool(np.all(self.atoms.pbc))
        batch = AtomsBatch.from_atoms(self.atoms, dtype=self._dtype, device=self._device)
        pred = self.model.predict(batch, compute_stress=want_stress)
        energy = float(pred.energy[0])
        self.results = {"energy": energy, "free_energy": energy,
                        "forces": pred.forces.detach().cpu().double().numpy()}
        if want_stress:
            s = pred.stress[0].detach().cpu().double().numpy()
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        if pred.force_std is not None:
            self.results["force_std"] = pred.force_std.detach().cpu().double().numpy()
