"""The test world of the campaign tests: a Lennard-Jones one (fast and deterministic).

An LJ oracle (ASE), analytic LJ students fitted to the labels, 32- and 27-atom cells of Li with Ar as the
non-diffusing "framework" species, and a Na-Kr cell that shares no element with them.
"""
from __future__ import annotations

from pathlib import Path


def write_structures(d: Path) -> dict:
    """The cells as extxyz files in ``d``: {"Li": 32-atom Li-Ar fcc, "Li27": 27-atom Li-Ar sc, "Na": Na-Kr sc}."""
    from ase.build import bulk
    from ase.io import write

    fcc = bulk("Li", "fcc", a=5.26, cubic=True).repeat(2)          # 32 atoms, LJ-argon-like solid/liquid
    sc = bulk("Li", "sc", a=3.75).repeat(3)                         # 27 atoms
    for atoms in (fcc, sc):                                         # Ar: the non-diffusing "framework" species
        atoms.symbols[::2] = "Ar"
    na = sc.copy()                                                  # shares no element with the Li-Ar cells
    na.symbols[::2], na.symbols[1::2] = "Kr", "Na"
    write(d / "li32.extxyz", fcc)
    write(d / "li27.extxyz", sc)
    write(d / "na27.extxyz", na)
    return {"Li": str(d / "li32.extxyz"), "Li27": str(d / "li27.extxyz"), "Na": str(d / "na27.extxyz")}


# a hot LJ fluid: 12 ps of reference and exploration decide the structure and dynamics checks at the
# default stability rules (an exact student then converges); production runs 5 ps per temperature
LJ_PROTOCOL = {"timestep_fs": 5.0, "stride": 5, "thermostat": "langevin"}
CONCLUSIVE_MD = {"temperatures_K": [1200.0, 1500.0, 1800.0], "steps": 1000, "equilibration_steps": 40,
                 "protocol": LJ_PROTOCOL, "reference_temperature_K": 1500.0, "reference_steps": 2400}


def lj_spec(name: str, structures: dict, **over) -> dict:
    """A campaign spec of the LJ world; ``over`` updates sections (a dict) or replaces keys."""
    spec = {
        "name": name, "seed": 3,
        "oracle": {"name": "lj"},
        "candidates": {"formulas": ["Li"], "structures": {"Li": structures["Li"]}},
        "models": {"architectures": ["lj"], "size": 2},
        # 0.3 ps of a cold LJ solid: every check against the reference is inconclusive (the candidate ends
        # `inconclusive`, production and transport still run); CONCLUSIVE_MD decides them
        "md": {"temperatures_K": [250.0, 375.0, 500.0], "steps": 160, "equilibration_steps": 20,
               "protocol": LJ_PROTOCOL, "reference_temperature_K": 375.0, "reference_steps": 60},
        "active_learning": {"max_rounds": 1, "labels_per_round": 3, "initial_labels": 8},
        "resources": {"cpus_per_md_worker": 0.5, "cpus_per_oracle": 0.5, "cpus_per_trainer": 0.5,
                      "queue_size": 1, "max_restarts": 2, "max_task_retries": 2},
    }
    for section, values in over.items():
        if isinstance(values, dict):
            spec.setdefault(section, {}).update(values)
        else:
            spec[section] = values
    md = spec["md"]
    # the slope check off unless a test asks: over this world's temperatures (far above 300 K) it is carried
    # x16 to 300 K, and its oracle MD would lengthen every campaign test
    spec.setdefault("precision", {}).setdefault("slope_check_temperature_K", None)
    if "budget_ps" not in spec.get("precision", {}):     # one chunk at each temperature but the reference's
        chunk_ps = md["steps"] * md["protocol"]["timestep_fs"] / 1000.0
        spec.setdefault("precision", {})["budget_ps"] = chunk_ps * max(1, len(md["temperatures_K"]) - 1)
    return spec


def cold_lj():
    """Oracle factory: LJ argon whose forces are 1.5x on frames read back from MD colder than 1000 K
    (instantaneous): the truth below 1000 K is not what students trained at the reference temperature learned,
    i.e. a student wrong at low temperature only.  Oracle MD itself (no frame temperature) is plain LJ."""
    from ase.calculators.lj import LennardJones

    class ColdLJ(LennardJones):
        def calculate(self, atoms=None, properties=("energy",), system_changes=None):
            super().calculate(atoms, properties, system_changes or ["positions", "numbers", "cell", "pbc"])
            if atoms is not None and atoms.info.get("temperature_K", float("inf")) < 1000.0:
                self.results["forces"] = 1.5 * self.results["forces"]

    return ColdLJ(epsilon=0.0104, sigma=3.40, rc=8.5, smooth=True)


def flaky_lj():
    """Oracle factory (``oracle.name: tests/lj_world.py:flaky_lj``): LJ argon that fails, like a non-converged
    SCF, on frames of 27-atom cells taken from MD.  This file imports only ASE, so Ray workers can load it."""
    from ase.calculators.lj import LennardJones

    class FlakyLJ(LennardJones):
        def calculate(self, atoms=None, properties=("energy",), system_changes=None):
            if atoms is not None and len(atoms) == 27 and "step" in atoms.info:
                raise RuntimeError("SCF did not converge")
            return super().calculate(atoms, properties, system_changes or ["positions", "numbers", "cell", "pbc"])

    return FlakyLJ(epsilon=0.0104, sigma=3.40, rc=8.5, smooth=True)


def stiff27_lj():
    """Oracle factory: LJ argon twice as deep (epsilon x 2) in 27-atom cells: a material whose truth differs from
    the 32-atom cells' though it shares their elements (a family student trained on those is wrong for it)."""
    from ase.calculators.lj import LennardJones

    class Stiff27(LennardJones):
        def calculate(self, atoms=None, properties=("energy",), system_changes=None):
            self.parameters.epsilon = 0.0208 if atoms is not None and len(atoms) == 27 else 0.0104
            super().calculate(atoms, properties, system_changes or ["positions", "numbers", "cell", "pbc"])

    return Stiff27(epsilon=0.0104, sigma=3.40, rc=8.5, smooth=True)
