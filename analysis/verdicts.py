"""The one verdict vocabulary and the one judge of a trajectory (campaign, benchmark, ``analyze``, live MD).

Statuses, worst first (:data:`STATUSES`):

* ``exploded``        non-finite energies/positions, or kinetic temperature above
                      ``max_temperature_factor`` x target (and above ``min_runaway_K``);
* ``atom_fusion``     two atoms closer than ``fusion_fraction`` x the sum of their covalent radii;
* ``framework_drift`` the centre of mass of the non-mobile atoms moved more than ``framework_drift_A``;
* ``rdf_mismatch``    partial-RDF MAE against the reference at or above ``rdf_mae``;
* ``uncertain``       stable, but fewer than ``accurate_fraction`` of the frames have an ensemble
                      force deviation below ``trust_lo_eV_A`` (only with an ensemble's deviation);
* ``stable``          every check that could be made passed.

The MD engine's live monitors (``md.monitors``) stop a system with the first three; the judge
honours that stop (``Trajectory.live_verdict``) and otherwise re-checks the arrays.  Every verdict
carries its evidence numbers and the step of failure (None when the trajectory did not break).
Distances Å, temperatures K, deviations eV/Å.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np
import vesin
from ase.data import atomic_masses, atomic_numbers, chemical_symbols, covalent_radii

from analysis.rdf import STABLE_RDF_MAE, RDFResult, rdf, rdf_mae
from analysis.trajectory import Trajectory
from common.errors import InputError

EXPLODED, ATOM_FUSION, FRAMEWORK_DRIFT = "exploded", "atom_fusion", "framework_drift"
RDF_MISMATCH, UNCERTAIN, STABLE = "rdf_mismatch", "uncertain", "stable"
STATUSES = (EXPLODED, ATOM_FUSION, FRAMEWORK_DRIFT, RDF_MISMATCH, UNCERTAIN, STABLE)   # worst first
BROKEN = (EXPLODED, ATOM_FUSION, FRAMEWORK_DRIFT)        # the trajectory itself is unphysical


@dataclass
class Verdict:
    status: str                       # one of STATUSES
    failure_step: int | None = None
    evidence: dict = field(default_factory=dict)

    @property
    def stable(self) -> bool:
        return self.status == STABLE

    @property
    def broken(self) -> bool:
        return self.status in BROKEN

    def to_dict(self) -> dict:
        return {"status": self.status, "failure_step": self.failure_step, "evidence": jsonable(self.evidence)}

    @classmethod
    def from_dict(cls, d: dict) -> "Verdict":
        return cls(d["status"], d.get("failure_step"), dict(d.get("evidence") or {}))


@dataclass(frozen=True)
class VerdictThresholds:
    """Every number the judge compares with (also the live monitors': see ``md.monitors.MonitorConfig``)."""
    fusion_fraction: float = 0.5          # r_ij < fraction x (r_cov,i + r_cov,j) is fusion
    max_temperature_factor: float = 3.0
    min_runaway_K: float = 1000.0
    framework_drift_A: float = 3.0
    rdf_mae: float = STABLE_RDF_MAE       # the study's threshold
    rdf_skip_frames: int = 2              # first stored frames left out of both RDF windows
    mobile_species: tuple[str, ...] = ("Li",)
    trust_lo_eV_A: float = 0.05           # ensemble deviation below this: accurate frame
    trust_hi_eV_A: float = 0.15           # at or above this: failed frame; between: to be labelled
    accurate_fraction: float = 0.9        # accurate frames needed for a stable (trusted) run

    def __post_init__(self):
        if self.trust_hi_eV_A <= self.trust_lo_eV_A:
            raise InputError(f"trust_hi_eV_A ({self.trust_hi_eV_A}) must exceed trust_lo_eV_A ({self.trust_lo_eV_A})")
        unknown = [s for s in self.mobile_species if s not in atomic_numbers]
        if unknown:
            raise InputError(f"mobile species {unknown} are not chemical symbols; give e.g. Li")

    def to_dict(self) -> dict:
        return {**asdict(self), "mobile_species": list(self.mobile_species)}

    @classmethod
    def from_dict(cls, d: dict) -> "VerdictThresholds":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"unknown verdict threshold(s) {unknown}; valid: {', '.join(sorted(names))}")
        d = dict(d)
        if "mobile_species" in d:
            d["mobile_species"] = tuple(d["mobile_species"])
        return cls(**d)


def worst(verdicts: list[Verdict]) -> Verdict:
    """The worst of several verdicts (e.g. every replica and temperature of one model on one material)."""
    if not verdicts:
        raise InputError("no verdicts to combine")
    return min(verdicts, key=lambda v: STATUSES.index(v.status))


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


def structure_rdf(traj: Trajectory, thresholds: VerdictThresholds = VerdictThresholds()) -> RDFResult:
    """The RDF window the judge compares: every stored frame after ``rdf_skip_frames`` (at least one)."""
    start = min(thresholds.rdf_skip_frames, len(traj) - 1)
    return rdf(traj.positions[start:], traj.cells[start:], traj.numbers)


def deviation_fractions(deviation: np.ndarray, thresholds: VerdictThresholds) -> dict:
    """Fractions of frames below the trust band (accurate), inside it (selected) and above it (failed)."""
    dev = np.asarray(deviation, float)
    n = max(len(dev), 1)
    lo, hi = thresholds.trust_lo_eV_A, thresholds.trust_hi_eV_A
    return {"accurate_fraction": float((dev < lo).sum() / n),
            "selected_fraction": float(((dev >= lo) & (dev < hi)).sum() / n),
            "failed_fraction": float((dev >= hi).sum() / n) if len(dev) else 1.0}


def _broken(traj: Trajectory, th: VerdictThresholds, ev: dict) -> Verdict | None:
    """exploded / atom_fusion / framework_drift from the arrays (None when none fires)."""
    steps = np.asarray(traj.steps)
    finite = np.isfinite(traj.positions).all(axis=(1, 2))
    if traj.potential_energy is not None:
        finite &= np.isfinite(np.asarray(traj.potential_energy, float))
    if traj.temperatures_K is not None:
        temps = np.asarray(traj.temperatures_K, float)
        finite &= np.isfinite(temps)
        target = traj.temperature_K
        if target is not None and np.isfinite(target):
            limit = max(th.max_temperature_factor * target, th.min_runaway_K)
            hot = np.nonzero(temps > limit)[0]
            if hot.size:
                return Verdict(EXPLODED, int(steps[hot[0]]),
                               {**ev, "temperature_K": float(temps[hot[0]]), "temperature_limit_K": limit})
    if not finite.all():
        k = int(np.argmin(finite))
        return Verdict(EXPLODED, int(steps[k]), {**ev, "nonfinite": True})
    ratios = min_distance_ratios(traj.positions, traj.cells, traj.numbers)
    ev["min_distance_ratio"] = float(min(r[0] for r in ratios))
    ev["min_distance_A"] = float(min(r[1] for r in ratios))
    fused = [k for k, (ratio, _, _) in enumerate(ratios) if ratio < th.fusion_fraction]
    if fused:
        k = fused[0]
        return Verdict(ATOM_FUSION, int(steps[k]), {**ev, "min_distance_ratio": ratios[k][0],
                                                    "min_distance_A": ratios[k][1], "pair": ratios[k][2],
                                                    "fusion_fraction": th.fusion_fraction})
    numbers = np.asarray(traj.numbers)
    mobile = np.isin(numbers, [atomic_numbers[s] for s in th.mobile_species])
    frame = ~mobile if (~mobile).any() else np.ones_like(mobile)
    m = atomic_masses[numbers][frame]
    com = (traj.unwrapped[:, frame] * m[None, :, None]).sum(1) / m.sum()
    drift = np.linalg.norm(com - com[0], axis=1)
    ev["framework_drift_A"] = float(drift.max())
    over = np.nonzero(drift > th.framework_drift_A)[0]
    if over.size:
        return Verdict(FRAMEWORK_DRIFT, int(steps[over[0]]), {**ev, "framework_drift_limit_A": th.framework_drift_A})
    return None


def judge(traj: Trajectory, reference: RDFResult | None = None,
          thresholds: VerdictThresholds = VerdictThresholds()) -> Verdict:
    """Judge one trajectory: the first failing check of :data:`STATUSES` wins.

    ``reference``: the reference's :func:`structure_rdf` (computed once, reused for every run judged
    against it).  The ensemble check runs when ``traj.force_deviation`` is present.
    """
    th = thresholds
    ev: dict = {"n_frames": int(len(traj))}
    if traj.force_deviation is not None:
        ev.update(deviation_fractions(traj.force_deviation, th))
    if reference is not None and np.isfinite(traj.positions).all():   # evidence even for a broken run
        ev.update(rdf_mae=rdf_mae(structure_rdf(traj, th), reference), rdf_mae_threshold=th.rdf_mae)
    live = traj.live_verdict or {}
    if live.get("status") in BROKEN:
        return Verdict(live["status"], live.get("failure_step"), {**ev, **(live.get("evidence") or {})})
    broken = _broken(traj, th, ev)
    if broken is not None:
        return broken
    if "rdf_mae" in ev and ev["rdf_mae"] >= th.rdf_mae:
        return Verdict(RDF_MISMATCH, None, ev)
    if traj.force_deviation is not None and ev["accurate_fraction"] < th.accurate_fraction:
        return Verdict(UNCERTAIN, None, {**ev, "accurate_fraction_needed": th.accurate_fraction})
    return Verdict(STABLE, None, ev)


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


def judge_runs(runs: list[Trajectory], reference: Trajectory, thresholds: VerdictThresholds = VerdictThresholds()
               ) -> list[Verdict]:
    """Judge several runs of one material: those at the reference's temperature against its RDF, the others
    for breakage only (an RDF at another temperature is no evidence of a wrong structure)."""
    ref_rdf = structure_rdf(reference, thresholds)
    same_t = lambda t: t is not None and reference.temperature_K is not None and abs(t - reference.temperature_K) < 1e-6  # noqa: E731
    return [judge(run, ref_rdf if same_t(run.temperature_K) else None, thresholds) for run in runs]
