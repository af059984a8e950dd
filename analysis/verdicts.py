"""The one verdict vocabulary and the one judge of a trajectory (campaign, benchmark, ``analyze``, live MD).

Statuses, worst first (:data:`STATUSES`):

* ``exploded``          non-finite energies/positions, or kinetic temperature above
                        ``max_temperature_factor`` x target (and above ``min_runaway_K``);
* ``atom_fusion``       two atoms closer than ``fusion_fraction`` x the sum of their covalent radii;
* ``framework_drift``   the centre of mass of the non-mobile atoms moved more than ``framework_drift_A``;
* ``lattice_mismatch``  the mean cell lengths differ from the reference's by more than ``lattice_tolerance``;
* ``rdf_mismatch``      the pair-weighted partial-RDF MAE against the reference exceeds both its noise
                        (the reference's own block bootstrap, false-alarm rate ``false_alarm_rate``) and
                        the tolerance ``rdf_mae`` (:func:`analysis.checks.check_structure`);
* ``dynamics_mismatch`` D of the mobile species differs from the reference's significantly and by more
                        than ``dynamics_log10_tolerance``, or the framework moves more than the
                        reference's (:func:`analysis.checks.check_dynamics`);
* ``uncertain``         the student is less accurate on its own MD than on the reference's frames
                        (oracle-labelled audit frames, beyond ``accuracy_log10_tolerance``:
                        :func:`analysis.checks.check_accuracy`), or its ensemble force deviation exceeds
                        the trust level on significantly more frames than ``1 - accurate_fraction``
                        (only with an ensemble's deviation);
* ``inconclusive``      nothing failed, but a check against the reference could not be decided: the
                        noise of the windows given is larger than the tolerance (run longer);
* ``stable``            every check passed, each one shown to hold within its tolerance.

The trust level: ``trust_lo_eV_A`` when configured; otherwise derived from the same ensemble's
deviation on the reference's own frames (its ``accurate_fraction`` quantile: the student is as sure of
its own MD as of the reference's), with ``trust_hi = trust_band_ratio x trust_lo``.

The MD engine's live monitors (``md.monitors``) stop a system with the first three; the judge
honours that stop (``Trajectory.live_verdict``) and otherwise re-checks the arrays.  Every verdict
carries its evidence numbers (metric, noise floor, threshold, windows) and the step of failure (None
when the trajectory did not break).  Distances Å, temperatures K, deviations eV/Å.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np
import vesin
from ase.data import atomic_masses, atomic_numbers

from analysis import checks
from analysis.checks import BlockRDF
from analysis.rdf import RDFResult, rdf
from common.geometry import closest_pair
from common.trajectory import Trajectory
from common.config import param
from common.errors import InputError

from common.vocabulary import (ATOM_FUSION, BROKEN, DYNAMICS_MISMATCH, EXPLODED, FRAMEWORK_DRIFT,  # noqa: F401
                               INCONCLUSIVE, LATTICE_MISMATCH, RDF_MISMATCH, STABLE, STATUSES, UNCERTAIN,
                               BreakageRules, jsonable)


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
class VerdictThresholds(BreakageRules):
    """Every number the judge compares with: the breakage rules (also the live monitors',
    ``md.monitors.MonitorConfig``) and the checks against the reference."""
    false_alarm_rate: float = param(0.05, "false-alarm rate of each check against the reference (a perfect "
                                    "student is called a mismatch this often)", gt=0, lt=0.5)
    rdf_mae: float = param(0.09, "tolerance of the pair-weighted partial-RDF MAE against the reference: above it "
                           "and above the reference's own noise is rdf_mismatch (docs/checks.md)", gt=0)
    rdf_block_fs: float = param(200.0, "time block of the RDF noise bootstrap: frames closer than this are not "
                                "independent", unit="fs", gt=0)
    rdf_skip_frames: int = param(2, "first stored frames left out of both RDF windows", ge=0)
    lattice_tolerance: float = param(0.01, "relative difference of the mean cell lengths that is lattice_mismatch",
                                     gt=0)
    dynamics_log10_tolerance: float = param(0.3, "|log10 D_student / D_reference| allowed at the reference "
                                            "temperature (0.3: a factor 2)", gt=0)
    framework_log10_tolerance: float = param(0.3, "framework MSD may exceed the reference's by this (log10)", gt=0)
    min_msd_A2: float = param(10.0, "mobile-ion MSD a run must reach for its D to count; below: too_short",
                              unit="Å^2", gt=0)
    accuracy_log10_tolerance: float = param(0.1, "the student's mean atomic force error on its own MD (oracle "
                                            "audit labels) may exceed its error on the reference's held-out "
                                            "frames by this (log10; 0.1: 26 %); beyond it and beyond noise: "
                                            "uncertain", gt=0)
    trust_lo_eV_A: float | None = param(None, "ensemble force deviation below this is accurate; null = derived "
                                        "each round from the ensemble's deviation on the reference's held-out "
                                        "frames (its accurate_fraction quantile)", unit="eV/Å", gt=0)
    trust_hi_eV_A: float | None = param(None, "deviation at or above this is failed; null = trust_band_ratio x "
                                        "trust_lo", unit="eV/Å", gt=0)
    trust_band_ratio: float = param(3.0, "trust_hi / trust_lo when the levels are derived", gt=1)
    accurate_fraction: float = param(0.9, "fraction of accurate frames a run needs (fewer, beyond binomial "
                                     "noise: uncertain, label and retrain)", gt=0, le=1)

    def __post_init__(self):
        super().__post_init__()
        lo, hi = self.trust_lo_eV_A, self.trust_hi_eV_A
        if (lo is None) != (hi is None):
            raise InputError("trust_hi_eV_A: give both trust levels or neither (null: derived from the reference)")
        if lo is not None and hi <= lo:
            raise InputError(f"trust_hi_eV_A: must exceed trust_lo_eV_A ({lo}), got {hi}")
    def trust_levels(self, reference_deviation=None) -> tuple[float, float] | None:
        """(lo, hi) in eV/Å: configured, else derived from the ensemble's deviation on the reference frames
        (None when neither is available)."""
        if self.trust_lo_eV_A is not None:
            return self.trust_lo_eV_A, self.trust_hi_eV_A
        if reference_deviation is None or len(reference_deviation) == 0:
            return None
        lo = float(np.quantile(np.asarray(reference_deviation, float), self.accurate_fraction))
        return lo, self.trust_band_ratio * lo

    def failure_error(self, reference_error=None) -> float | None:
        """The true max atomic force error (eV/Å) at which a frame has failed, for validating the trust band
        (``analysis.calibration``): ``trust_hi`` when the levels are configured; when derived, the same
        construction on the error's own scale: ``trust_band_ratio`` x its ``accurate_fraction`` quantile on the
        reference's held-out frames (None when neither is available)."""
        if self.trust_lo_eV_A is not None:
            return self.trust_hi_eV_A
        if reference_error is None or len(reference_error) == 0:
            return None
        return self.trust_band_ratio * float(np.quantile(np.asarray(reference_error, float), self.accurate_fraction))

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
    """Per frame: smallest r_ij / (r_cov,i + r_cov,j), its distance (Å) and pair name (``common.geometry``)."""
    calc = vesin.NeighborList(cutoff=r_max_A, full_list=False)             # one for every frame
    return [closest_pair(numbers, pos, cell, True, r_max_A, calc)[:3] for pos, cell in zip(positions, cells)]


@dataclass
class Reference:
    """What runs are judged against, computed once: the reference trajectory, its RDF blocks, and the
    student ensemble's force deviation (for derived trust levels) and true mean atomic force error (for the
    accuracy check) on its held-out frames (None when unknown)."""
    traj: Trajectory
    rdf: BlockRDF
    deviation: np.ndarray | None = None
    error: np.ndarray | None = None
    transit_error: np.ndarray | None = None    # per held-out frame, on its ions in transit (NaN: none)


def block_frames(traj: Trajectory, thresholds: VerdictThresholds) -> int:
    return max(1, int(round(thresholds.rdf_block_fs / traj.dt_fs)))


def reference_profile(traj: Trajectory, thresholds: VerdictThresholds = VerdictThresholds(),
                      deviation=None, error=None, transit_error=None) -> Reference:
    """:class:`Reference` of a reference trajectory (RDF blocks after ``rdf_skip_frames``)."""
    def array(x):
        return None if x is None else np.asarray(x, float)

    return Reference(traj, structure_rdf(traj, thresholds), array(deviation), array(error), array(transit_error))


def structure_rdf(traj: Trajectory, thresholds: VerdictThresholds = VerdictThresholds()) -> BlockRDF:
    """The RDF window the judge compares (every stored frame after the equilibration and at least
    ``rdf_skip_frames``), in time blocks."""
    return checks.block_rdf(traj, block_frames(traj, thresholds), max(thresholds.rdf_skip_frames, traj.discard_frames))


def window_rdf(blocks: BlockRDF) -> RDFResult:
    """The window's mean partial g(r) as an :class:`RDFResult` (for plots)."""
    partial = dict(zip(blocks.names, blocks.mean))
    total = sum(w * g for w, g in zip(blocks.weights, blocks.mean))
    return RDFResult(r_A=blocks.r_A, g_total=total, partial=partial, n_frames=blocks.window_frames,
                     r_max_A=float(blocks.r_A[-1] + 0.5 * (blocks.r_A[1] - blocks.r_A[0])))


def deviation_fractions(deviation: np.ndarray, lo: float, hi: float) -> dict:
    """Fractions of frames below the trust band (accurate), inside it (selected) and above it (failed)."""
    dev = np.asarray(deviation, float)
    n = max(len(dev), 1)
    return {"accurate_fraction": float((dev < lo).sum() / n),
            "selected_fraction": float(((dev >= lo) & (dev < hi)).sum() / n),
            "failed_fraction": float((dev >= hi).sum() / n) if len(dev) else 1.0,
            "trust_lo_eV_A": lo, "trust_hi_eV_A": hi}


def too_uncertain(accurate: float, n_frames: int, block: int, th: VerdictThresholds) -> bool:
    """More inaccurate frames than ``1 - accurate_fraction`` beyond binomial noise (frames in blocks of
    ``block`` count as one independent draw), at the false-alarm rate: for configured trust levels."""
    p0 = th.accurate_fraction
    n_eff = max(1.0, n_frames / max(block, 1))
    return accurate < p0 - checks.z_one_sided(th.false_alarm_rate) * np.sqrt(p0 * (1 - p0) / n_eff)


def integrated_autocorrelation_time(x, window: float = 5.0) -> float:
    """Integrated autocorrelation time of a series, in frames (1 + 2 Σ ρ_k, summed up to the first lag
    ``m >= window * τ``: Sokal's automatic window).  Underestimates correlations slower than the series
    can show."""
    x = np.asarray(x, float)
    x = x - x.mean()
    n = len(x)
    if n < 3 or not np.any(x):
        return 1.0
    f = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[:n]
    acf = acf / acf[0]
    tau = 1.0
    for m in range(1, n):
        tau = 1.0 + 2.0 * float(acf[1:m + 1].sum())
        if m >= window * tau:
            break
    return max(tau, 1.0)


def less_certain_than_reference(run_deviation, reference_deviation, block: int, th: VerdictThresholds,
                                n_permutations: int = 2000, seed: int = 0) -> bool:
    """For derived trust levels: is the run's ensemble deviation (eV/Å) larger than on the reference's
    held-out frames, beyond noise, at the false-alarm rate?

    The statistic is the run's share of frames below the reference's ``accurate_fraction`` quantile (the
    derived ``trust_lo``).  That quantile is itself noisy (a few ps of reference), so a binomial test on the
    run alone raises false alarms (28 % at a nominal 5 % on 2.2 ps against 12 ps, tests/test_checks.py).
    Instead a block permutation test: time blocks of ``block`` frames, or twice the run's integrated
    autocorrelation time of log deviation when longer (whole blocks only), are exchangeable
    between the two runs when the distributions are the same; the run is too uncertain when fewer than
    ``false_alarm_rate`` of the block reassignments give a share as low as the observed one (fixed seed:
    the same inputs give the same verdict)."""
    run = np.asarray(run_deviation, float)
    ref = np.asarray(reference_deviation, float)
    block = max(int(block), int(np.ceil(2 * integrated_autocorrelation_time(np.log(run)))), 1)
    n_run, n_ref = len(run) // block, len(ref) // block
    if n_run < 1 or n_ref < 1:
        return False
    blocks = np.concatenate([ref[:n_ref * block].reshape(n_ref, block), run[:n_run * block].reshape(n_run, block)])

    def share(ref_blocks, run_blocks):
        lo = np.quantile(ref_blocks.reshape(ref_blocks.shape[0], -1), th.accurate_fraction, axis=1)
        return (run_blocks.reshape(run_blocks.shape[0], -1) < lo[:, None]).mean(axis=1)

    observed = share(blocks[None, :n_ref], blocks[None, n_ref:])[0]
    order = np.argsort(np.random.default_rng(seed).random((n_permutations, len(blocks))), axis=1)
    shuffled = blocks[order]                                   # [n_permutations, n_blocks, block]
    null = share(shuffled[:, :n_ref], shuffled[:, n_ref:])
    return bool(np.mean(null <= observed) < th.false_alarm_rate)


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
    closest = min(ratios, key=lambda r: r[0])           # one pair in one frame: its ratio, distance and names
    ev.update(min_distance_ratio=float(closest[0]), min_distance_A=float(closest[1]), pair=closest[2])
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


def same_temperature(traj: Trajectory, reference: Trajectory) -> bool:
    """Both at one target temperature (or either unknown: the caller paired them on purpose)."""
    a, b = traj.temperature_K, reference.temperature_K
    return a is None or b is None or abs(a - b) < 1e-6


def _broken_replica(runs: list[Trajectory], th: VerdictThresholds, ev: dict) -> Verdict | None:
    """The worst breakage of any replica (the engine's live stop or the arrays), with the replica's index
    when there are several; otherwise ``ev`` gains the closest pair over all replicas (relative to its
    covalent-radius sum: the ratio, its distance in Å and its elements) and the largest framework drift."""
    broken, seen = [], []
    for k, traj in enumerate(runs):
        own = dict(ev)
        live = traj.live_verdict or {}
        v = (Verdict(live["status"], live.get("failure_step"), {**own, **(live.get("evidence") or {})})
             if live.get("status") in BROKEN else _broken(traj, th, own))
        if v is not None:
            if len(runs) > 1:
                v.evidence.update(replica=k, replicas=len(runs))
            broken.append(v)
        seen.append(own)
    if broken:
        return worst(broken)
    closest = min(seen, key=lambda e: e["min_distance_ratio"])
    ev.update({key: closest[key] for key in ("min_distance_ratio", "min_distance_A", "pair")})
    ev["framework_drift_A"] = max(e["framework_drift_A"] for e in seen)
    return None


def judge(traj, reference: Reference | None = None,
          thresholds: VerdictThresholds = VerdictThresholds(), audit_error=None, audit_transit=None,
          same_material: bool = True) -> Verdict:
    """Judge a run, or several replicas of one run (same system, temperature and protocol), as one: the
    first failing check of :data:`STATUSES` wins.

    ``traj``: a :class:`Trajectory` or a sequence of replicas.  Replicas are independent samples of the
    same model: any broken replica breaks the model (the worst one, named by ``replica``); the RDF window
    pools their blocks and D combines their D with their scatter (:func:`analysis.checks.check_dynamics`),
    so the checks against the reference gain their statistics.
    ``reference``: :func:`reference_profile` of the reference run (computed once, reused for every run
    judged against it).  Structure is compared at any temperature only when the run is at the reference's
    temperature; so is the dynamics.  The ensemble check runs when every run has ``force_deviation`` and
    trust levels are known.  ``audit_error``: the student's mean atomic force error (eV/Å, against oracle
    labels) on frames spread over the runs; with the reference's (``reference.error``) it is the accuracy
    check (:func:`analysis.checks.check_accuracy`): a student significantly less accurate on its own MD is
    ``uncertain`` whatever its deviation says.  ``audit_transit``: per audited frame, the error on its ions in
    transit (:mod:`analysis.transit`); with the reference's (``reference.transit_error``) it joins the
    accuracy check.  ``same_material`` False: the reference is another material's (a tier-1 candidate has no
    oracle MD of its own): its errors are the accuracy check's baseline, and structure and dynamics are not
    compared, nor is the ensemble's deviation (its trust levels were calibrated on the other material): the
    audits decide (the evidence's ``not_compared`` says so).  The evidence's ``checks`` lists the checks that
    ran and, for each that did not, why (:func:`ran_and_not_run`).
    """
    th = thresholds
    runs = checks.replicas_of(traj)
    if any(len(t.numbers) != len(runs[0].numbers) or not np.array_equal(t.numbers, runs[0].numbers)
           or t.temperature_K != runs[0].temperature_K for t in runs[1:]):
        raise InputError("replicas judged together must be one system at one temperature; judge the others apart")
    ev: dict = {"n_frames": int(sum(len(t) for t in runs))}
    if len(runs) > 1:
        ev["replicas"] = len(runs)
    levels = th.trust_levels(reference.deviation if reference is not None else None) if same_material else None
    with_deviation = all(t.force_deviation is not None for t in runs)
    deviation = np.concatenate([np.asarray(t.force_deviation, float) for t in runs]) if with_deviation else None
    if deviation is not None and levels is not None:
        ev.update(deviation_fractions(deviation, *levels))
    compare = same_material and reference is not None and same_temperature(runs[0], reference.traj)
    ev["checks"] = ran_and_not_run(runs, reference, same_material, compare, audit_error, deviation, levels)
    if not same_material:
        ev["not_compared"] = ["structure and dynamics: no oracle MD of this material (tier 1)",
                              "ensemble deviation: its trust levels are another material's; the oracle's audits "
                              "of this run decide (accuracy)"]
    structure = None
    if compare and all(np.isfinite(t.positions).all() for t in runs):   # evidence even for a broken run
        window = checks.pool_blocks([structure_rdf(t, th) for t in runs])
        structure = checks.check_structure(window, reference.rdf, th.rdf_mae, th.false_alarm_rate, th.lattice_tolerance)
        ev.update(structure.evidence())
    accuracy = None
    if audit_error is not None and reference is not None and reference.error is not None:   # evidence for any verdict
        accuracy = checks.check_accuracy(audit_error, reference.error, block_frames(reference.traj, th),
                                         th.accuracy_log10_tolerance, th.false_alarm_rate, audit_transit,
                                         reference.transit_error)
        ev.update(accuracy.evidence())
    broken = _broken_replica(runs, th, ev)
    if broken is not None:
        return broken
    open_checks = []
    if structure is not None:
        if structure.lattice_mismatch:
            return Verdict(LATTICE_MISMATCH, None, ev)
        if structure.status == checks.MISMATCH:
            return Verdict(RDF_MISMATCH, None, ev)
        if structure.status == checks.INCONCLUSIVE:
            open_checks.append(f"structure: {structure.reason}")
    if compare:
        dynamics = _dynamics(runs, reference.traj, th)
        ev.update(dynamics)
        if dynamics["dynamics_status"] == checks.MISMATCH:
            return Verdict(DYNAMICS_MISMATCH, None, ev)
        if dynamics["dynamics_status"] == checks.INCONCLUSIVE:
            open_checks.append(f"dynamics: {dynamics['dynamics_reason']}")
    if accuracy is not None:
        if accuracy.status == checks.MISMATCH:
            return Verdict(UNCERTAIN, None, ev)
        if accuracy.status == checks.INCONCLUSIVE:
            open_checks.append(f"accuracy: {accuracy.reason}")
    derived = th.trust_lo_eV_A is None and reference is not None and reference.deviation is not None
    if "accurate_fraction" in ev and (
            less_certain_than_reference(deviation, reference.deviation, block_frames(runs[0], th), th)
            if derived else too_uncertain(ev["accurate_fraction"], len(deviation), block_frames(runs[0], th), th)):
        return Verdict(UNCERTAIN, None, {**ev, "accurate_fraction_needed": th.accurate_fraction})
    if open_checks:
        return Verdict(INCONCLUSIVE, None, {**ev, "inconclusive": open_checks})
    return Verdict(STABLE, None, ev)


def ran_and_not_run(runs: list[Trajectory], reference: Reference | None, same_material: bool, compare: bool,
                    audit_error, deviation, levels) -> dict:
    """``{"ran": [check, ...], "not_run": {check: why}}`` for :func:`judge`'s checks: breakage always; structure
    and dynamics against a reference of the same material at the same temperature; accuracy with audited
    errors and the reference's; deviation with the ensemble's deviation and trust levels."""
    why: dict[str, str] = {}
    if reference is None:
        why["structure"] = why["dynamics"] = "no reference given"
    elif not same_material:
        why["structure"] = why["dynamics"] = "the reference is another material's (tier 1)"
    elif not compare:
        why["structure"] = why["dynamics"] = (f"the reference is at {reference.traj.temperature_K:g} K and the run "
                                              f"at {runs[0].temperature_K:g} K")
    if audit_error is None:
        why["accuracy"] = "no oracle audit of this run"
    elif reference is None or reference.error is None:
        why["accuracy"] = "no force error of this model on the reference"
    if deviation is None:
        why["deviation"] = "the run has no ensemble force deviation (one model)"
    elif not same_material:
        why["deviation"] = "its trust levels are another material's (tier 1)"
    elif levels is None:
        why["deviation"] = "no trust levels (no reference deviation, none set)"
    ran = [c for c in ("breakage", "structure", "dynamics", "accuracy", "deviation") if c not in why]
    return {"ran": ran, "not_run": why}


def _dynamics(runs: list[Trajectory], reference: Trajectory, th: VerdictThresholds) -> dict:
    """The dynamics check's evidence (inconclusive with a reason when a run is too short to fit at all)."""
    from analysis.diffusion import MIN_FIT_FRAMES

    shortest = min(runs, key=lambda t: len(t.production()))
    short = [name for name, t in (("student", shortest), ("reference", reference))
             if len(t.production()) < MIN_FIT_FRAMES]
    if short:
        return {"dynamics_status": checks.INCONCLUSIVE,
                "dynamics_reason": f"the {' and '.join(short)} run has fewer than {MIN_FIT_FRAMES} production "
                                   "frames: no D to compare (run longer)"}
    species = th.mobile_species[0]
    return checks.check_dynamics(runs, reference, species, th.dynamics_log10_tolerance, th.false_alarm_rate,
                                 th.min_msd_A2, th.framework_log10_tolerance).evidence()


def judge_runs(runs: list, reference: Trajectory, thresholds: VerdictThresholds = VerdictThresholds()
               ) -> list[Verdict]:
    """Judge several runs of one material, each a trajectory or a list of replicas judged as one: those at the
    reference's temperature against it (structure and dynamics), the others for breakage only (an RDF at
    another temperature is no evidence of a wrong structure)."""
    ref = reference_profile(reference, thresholds)
    return [judge(run, ref, thresholds) for run in runs]


SUMMARY_KEYS = ("rdf_mae", "rdf_noise_floor", "rdf_critical", "rdf_tolerance", "rdf_status", "student_D_cm2_s",
                "student_D_err_cm2_s", "reference_D_cm2_s", "reference_D_err_cm2_s", "log10_ratio", "log10_ratio_err",
                "tolerance_log10", "dynamics_status", "temperature_K", "framework_status", "own_error_eV_A",
                "reference_error_eV_A", "error_log10_ratio", "error_log10_ratio_err", "accuracy_status")


def check_summary(verdict: Verdict) -> dict:
    """The checks a result shows, from one verdict: the RDF against the reference's noise, D against the
    reference's, the force error on its own MD against the reference's (the campaign's and benchmark's rows)."""
    ev = verdict.evidence
    return {"verdict": verdict.status, **{k: ev[k] for k in SUMMARY_KEYS if k in ev}}
