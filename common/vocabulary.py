"""The verdict vocabulary (statuses, worst first) and the breakage rules every stage shares.

The live MD monitors (``md.monitors``) stop a system with the first three statuses; the judge
(``analysis.verdicts``) uses all of them.  Distances Å, temperatures K.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.data import atomic_numbers

from common.config import check_fields, param
from common.errors import InputError

EXPLODED, ATOM_FUSION, FRAMEWORK_DRIFT = "exploded", "atom_fusion", "framework_drift"
LATTICE_MISMATCH, RDF_MISMATCH, DYNAMICS_MISMATCH = "lattice_mismatch", "rdf_mismatch", "dynamics_mismatch"
UNCERTAIN, INCONCLUSIVE, STABLE = "uncertain", "inconclusive", "stable"
STATUSES = (EXPLODED, ATOM_FUSION, FRAMEWORK_DRIFT, LATTICE_MISMATCH, RDF_MISMATCH, DYNAMICS_MISMATCH, UNCERTAIN,
            INCONCLUSIVE, STABLE)   # worst first
BROKEN = (EXPLODED, ATOM_FUSION, FRAMEWORK_DRIFT)        # the trajectory itself is unphysical


@dataclass(frozen=True)
class BreakageRules:
    """When a trajectory itself is unphysical: the numbers of ``exploded``, ``atom_fusion`` and
    ``framework_drift``, checked live by the MD engine and again by the judge."""
    fusion_fraction: float = param(0.5, "a pair closer than this fraction of the sum of covalent radii is atom "
                                   "fusion", gt=0)
    max_temperature_factor: float = param(3.0, "kinetic T above factor x target (and above min_runaway_K) is an "
                                          "explosion", gt=0)
    min_runaway_K: float = param(1000.0, "never call a run exploded below this kinetic temperature", unit="K", ge=0)
    framework_drift_A: float = param(3.0, "framework (non-mobile) centre-of-mass drift beyond this is "
                                     "framework_drift", unit="Å", gt=0)
    mobile_species: tuple[str, ...] = param(("Li",), "the mobile species; every other element is the framework")

    def __post_init__(self):
        check_fields(self)
        unknown = [s for s in self.mobile_species if s not in atomic_numbers]
        if unknown:
            raise InputError(f"mobile_species: {unknown} are not chemical symbols; give e.g. Li")


def jsonable(obj):
    """JSON-safe copy (numpy scalars and arrays to Python)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# how a candidate ends (the ledger's ``reason``; the campaign's results table)
CONVERGED, BUDGET_SPENT, ORACLE_FAILING, NO_STRUCTURE, ERROR = (
    "converged", "budget_spent", "oracle_failing", "no_structure", "error")
REASONS = (CONVERGED, INCONCLUSIVE, BUDGET_SPENT, ORACLE_FAILING, NO_STRUCTURE, ERROR)
FINISHED_WELL = (CONVERGED, INCONCLUSIVE)       # numbers reported (inconclusive: flagged)
JUDGED_USABLE = (STABLE, INCONCLUSIVE)          # a verdict whose run goes on to production
