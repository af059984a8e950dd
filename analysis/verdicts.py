"""Stability verdicts for a trajectory: stable / lattice_mismatch / atom_fusion / exploded / framework_drift.

Each verdict carries its evidence numbers and the step of failure (None when stable).  Checks,
first failing one wins: non-finite values or temperature runaway (exploded), a pair closer than
``fusion_fraction`` x the sum of covalent radii (atom_fusion), framework centre-of-mass drift
beyond ``framework_drift_A`` (framework_drift), partial-RDF MAE against a reference above
``rdf_mae_threshold`` (lattice_mismatch).  Distances Å, temperatures K.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import vesin
from ase.data import atomic_masses, atomic_numbers, chemical_symbols, covalent_radii

from analysis.rdf import STABLE_RDF_MAE, RDFResult, rdf, rdf_mae


@dataclass
class Verdict:
    status: str                       # stable | lattice_mismatch | atom_fusion | exploded | framework_drift
    failure_step: int | None = None
    evidence: dict = field(default_factory=dict)

    @property
    def stable(self) -> bool:
        return self.status == "stable"


@dataclass(frozen=True)
class VerdictThresholds:
    fusion_fraction: float = 0.5
    max_temperature_factor: float = 3.0
    min_runaway_K: float = 1000.0
    framework_drift_A: float = 3.0
    rdf_mae_threshold: float = STABLE_RDF_MAE
    mobile_species: tuple[str, ...] = ("Li",)


def min_distance_ratios(positions: np.ndarray, cells: np.ndarray, numbers: np.ndarray, r_max_A: float = 3.0):
    """Per frame: smallest r_ij / (r_cov,i + r_cov,j), its distance (Å) and pair name."""
    radii = np.asarray(covalent_radii)[numbers]
    calc = vesin.NeighborList(cutoff=r_max_A, full_list=False)
    out = []
    for pos, cell in zip(positions, cells):
        i, j, d = calc.compute(points=pos, box=cell, periodic=True, quantities="ijd")
        if len(d) == 0:
            out.append((np.inf, np.inf, ""))
            continue
        ratio = d / (radii[i] + radii[j])
        k = int(np.argmin(ratio))
        out.append((float(ratio[k]), float(d[k]), f"{chemical_symbols[numbers[i[k]]]}-{chemical_symbols[numbers[j[k]]]}"))
    return out


def judge(positions, unwrapped, cells, numbers, steps, temperatures_K=None, potential_energy=None,
          target_temperature_K: float | None = None, reference: RDFResult | None = None,
          thresholds: VerdictThresholds = VerdictThresholds()) -> Verdict:
    """Judge one trajectory from its arrays ([F,N,3] wrapped and unwrapped positions Å, [F,3,3] cells)."""
    positions, unwrapped, cells = (np.asarray(a, float) for a in (positions, unwrapped, cells))
    numbers, steps = np.asarray(numbers), np.asarray(steps)
    ev: dict = {"n_frames": int(len(steps))}
    finite = np.isfinite(positions).all(axis=(1, 2))
    if potential_energy is not None:
        finite &= np.isfinite(np.asarray(potential_energy, float))
    if temperatures_K is not None:
        temps = np.asarray(temperatures_K, float)
        finite &= np.isfinite(temps)
        if target_temperature_K is not None and np.isfinite(target_temperature_K):
            limit = max(thresholds.max_temperature_factor * target_temperature_K, thresholds.min_runaway_K)
            hot = np.nonzero(temps > limit)[0]
            if hot.size:
                return Verdict("exploded", int(steps[hot[0]]),
                               {**ev, "temperature_K": float(temps[hot[0]]), "temperature_limit_K": limit})
    if not finite.all():
        k = int(np.argmin(finite))
        return Verdict("exploded", int(steps[k]), {**ev, "nonfinite": True})
    ratios = min_distance_ratios(positions, cells, numbers)
    fused = [k for k, (ratio, _, _) in enumerate(ratios) if ratio < thresholds.fusion_fraction]
    ev["min_distance_ratio"] = float(min(r[0] for r in ratios))
    if fused:
        k = fused[0]
        return Verdict("atom_fusion", int(steps[k]), {**ev, "min_distance_ratio": ratios[k][0],
                                                      "min_distance_A": ratios[k][1], "pair": ratios[k][2],
                                                      "fusion_fraction": thresholds.fusion_fraction})
    mobile = np.isin(numbers, [atomic_numbers[s] for s in thresholds.mobile_species])
    frame = ~mobile if (~mobile).any() else np.ones_like(mobile)
    m = atomic_masses[numbers][frame]
    com = (unwrapped[:, frame] * m[None, :, None]).sum(1) / m.sum()
    drift = np.linalg.norm(com - com[0], axis=1)
    ev["framework_drift_A"] = float(drift.max())
    over = np.nonzero(drift > thresholds.framework_drift_A)[0]
    if over.size:
        return Verdict("framework_drift", int(steps[over[0]]),
                       {**ev, "framework_drift_limit_A": thresholds.framework_drift_A})
    if reference is not None:
        mine = rdf(positions, cells, numbers, r_max_A=reference.r_max_A, n_bins=len(reference.r_A))
        mae = rdf_mae(mine, reference)
        ev["rdf_mae"] = mae
        ev["rdf_mae_threshold"] = thresholds.rdf_mae_threshold
        if mae >= thresholds.rdf_mae_threshold:
            return Verdict("lattice_mismatch", None, ev)
    return Verdict("stable", None, ev)
