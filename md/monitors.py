"""Live stability monitors, evaluated for every system of a batch at once.

A system fails with the first verdict that fires: ``exploded`` (non-finite energy or forces,
or temperature runaway), ``atom_fusion`` (two atoms closer than a fraction of the sum of their
covalent radii), ``framework_drift`` (centre of mass of the non-mobile atoms moved too far).
The words and the numbers are the judge's (``analysis.verdicts``): one vocabulary, one set of
thresholds.  Distances Å, temperatures K.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from ase.data import chemical_symbols, covalent_radii, atomic_numbers

from common import vocabulary as verdicts
from common.config import param
from common.vocabulary import BreakageRules
from md.state import MDState
from models.graph import NeighborList, edge_vectors

OK, EXPLODED, ATOM_FUSION, FRAMEWORK_DRIFT = 0, 1, 2, 3
VERDICT_NAMES = {OK: verdicts.STABLE, EXPLODED: verdicts.EXPLODED, ATOM_FUSION: verdicts.ATOM_FUSION,
                 FRAMEWORK_DRIFT: verdicts.FRAMEWORK_DRIFT}


@dataclass(frozen=True)
class MonitorConfig(BreakageRules):
    """The judge's breakage rules checked live, every ``check_every`` steps (non-finite values every step)."""
    check_every: int = param(10, "steps between live checks", gt=0)


@dataclass
class MonitorResult:
    code: torch.Tensor                      # [S] long: OK / EXPLODED / ATOM_FUSION / FRAMEWORK_DRIFT
    evidence: list[dict] = field(default_factory=list)   # per system (only filled for failures)


def covalent_radius_table(device, dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(covalent_radii), dtype=dtype, device=device)


def framework_mask(state: MDState, mobile_species=("Li",)) -> torch.Tensor:
    """[N] bool: atoms that belong to the framework (not a mobile species)."""
    mobile = torch.as_tensor([atomic_numbers[s] for s in mobile_species], device=state.device)
    return ~torch.isin(state.numbers, mobile)


def framework_com(state: MDState, mobile_species=("Li",)) -> torch.Tensor:
    """[S,3] mass-weighted centre of mass of each system's framework atoms (unwrapped), Å."""
    w = state.masses * framework_mask(state, mobile_species).to(state.masses.dtype)
    num = state.system_sum(w[:, None] * state.positions)
    den = state.system_sum(w).clamp(min=1e-12)[:, None]
    return num / den


def nonfinite(state: MDState) -> torch.Tensor:
    """[S] bool: energy or any force of the system is NaN/inf."""
    bad_atom = ~torch.isfinite(state.forces).all(dim=1)
    bad = state.system_sum(bad_atom.to(state.positions.dtype)) > 0
    if state.potential_energy is not None:
        bad = bad | ~torch.isfinite(state.potential_energy)
    return bad


def min_distance_ratio(state: MDState, neighbors: NeighborList) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[S] smallest r_ij / (r_cov,i + r_cov,j) of each system (the rule of ``common.geometry``, on the device),
    and every edge's distance (Å) and ratio."""
    r = edge_vectors(state.as_batch(), neighbors).norm(dim=1)
    i, j = neighbors.edge_index
    radii = covalent_radius_table(state.device, r.dtype)
    ratio = r / (radii[state.numbers[i]] + radii[state.numbers[j]])
    sys = state.system_index[i]
    best = torch.full((state.n_systems,), float("inf"), dtype=r.dtype, device=r.device)
    best = best.scatter_reduce(0, sys, ratio, "amin", include_self=True)
    return best, r, ratio


def check(state: MDState, neighbors: NeighborList, reference_com: torch.Tensor, config: MonitorConfig) -> MonitorResult:
    """Run every check; returns a code per system and evidence numbers for failing systems."""
    n = state.n_systems
    code = torch.zeros(n, dtype=torch.long, device=state.device)
    temp = state.temperature_K()
    bad = nonfinite(state) | ~torch.isfinite(temp)
    limit = torch.clamp(config.max_temperature_factor * state.target_temperature_K, min=config.min_runaway_K)
    hot = temp > limit
    ratio, edge_r, edge_ratio = min_distance_ratio(state, neighbors)
    fused = ratio < config.fusion_fraction
    drift = (framework_com(state, config.mobile_species) - reference_com).norm(dim=1)
    drifted = drift > config.framework_drift_A
    code = torch.where(drifted, FRAMEWORK_DRIFT, code)
    code = torch.where(fused, ATOM_FUSION, code)
    code = torch.where(bad | hot, EXPLODED, code)
    evidence: list[dict] = [{} for _ in range(n)]
    failing = torch.nonzero(code != OK).flatten().tolist()
    if failing:
        temp_c, ratio_c, drift_c = temp.cpu(), ratio.cpu(), drift.cpu()
        for s in failing:
            ev = {"temperature_K": float(temp_c[s]), "target_temperature_K": float(state.target_temperature_K[s]),
                  "min_distance_ratio": float(ratio_c[s]), "framework_drift_A": float(drift_c[s]),
                  "nonfinite": bool(bad[s])}
            if bool(fused[s]):
                ev.update(_closest_pair(state, neighbors, edge_r, edge_ratio, s))
                ev["fusion_fraction"] = config.fusion_fraction
            out_code = int(code[s])
            if out_code == EXPLODED and not bool(bad[s]):
                ev["temperature_limit_K"] = float(limit[s])
            if out_code == FRAMEWORK_DRIFT:
                ev["framework_drift_limit_A"] = config.framework_drift_A
            evidence[s] = ev
    return MonitorResult(code=code, evidence=evidence)


def _closest_pair(state: MDState, neighbors: NeighborList, r: torch.Tensor, edge_ratio: torch.Tensor, s: int) -> dict:
    """Evidence of system ``s``'s closest pair: its distance (Å), elements and atoms."""
    i, j = neighbors.edge_index
    mask = state.system_index[i] == s
    if not bool(mask.any()):
        return {}
    ratio = torch.where(mask, edge_ratio, torch.full_like(edge_ratio, float("inf")))
    e = int(torch.argmin(ratio))
    zi, zj = int(state.numbers[i[e]]), int(state.numbers[j[e]])
    return {"min_distance_A": float(r[e]), "pair": f"{chemical_symbols[zi]}-{chemical_symbols[zj]}",
            "atoms": [int(state.atom_in_system[i[e]]), int(state.atom_in_system[j[e]])]}
