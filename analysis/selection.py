"""Which frames of an exploration run the oracle should label (active learning, DP-GEN style).

Frames whose ensemble force deviation lies inside the trust band ``[trust_lo, trust_hi)`` (configured, or
derived from the deviation on the reference's frames: ``VerdictThresholds.trust_levels``) are
candidates; when a run that failed a check has none, its least certain frames are taken (most distinct
frames without a deviation).  A stable or inconclusive run gets no labels (more labels cannot decide a
check whose runs are too short).  Candidates must be geometrically sane (no pair closer than
``closest_A``, nor than the fusion limit) and are kept greedily, in order, when at least
``min_rmsd_A`` (Å) away from every frame already kept.  Replicas of an exploration run are judged as one
and their frames are picked in turn (:func:`interleave`), one list of frame indices per replica.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from analysis.checks import replicas_of
from common.trajectory import Trajectory
from analysis.verdicts import (INCONCLUSIVE, STABLE, Verdict, VerdictThresholds, judge, min_distance_ratios, reference_profile,
                               structure_rdf, window_rdf)


def select_for_labelling(traj: Trajectory, verdict: Verdict, levels: tuple[float, float] | None, n_max: int,
                         min_rmsd_A: float, closest_A: float = 0.0,
                         fusion_fraction: float = VerdictThresholds.fusion_fraction, exclude=()) -> list[int]:
    """Indices of stored frames of ``traj`` to label (at most ``n_max``); ``levels``: the trust band (eV/Å);
    ``exclude``: frames already labelled (never picked).

    Without a deviation or trust levels, the most distinct frames of a run that was not stable are taken.
    """
    if n_max < 1 or verdict.status in (STABLE, INCONCLUSIVE):    # labels cannot fix a run that is too short
        return []
    done = {int(i) for i in exclude}
    if traj.force_deviation is None or levels is None:
        candidates = [i for i in range(len(traj)) if i not in done]
        return _distinct(traj, _sane(traj, candidates, fusion_fraction, closest_A), n_max, min_rmsd_A)
    dev = np.asarray(traj.force_deviation, float)
    lo, hi = levels
    candidates = [int(i) for i in np.flatnonzero((dev >= lo) & (dev < hi)) if int(i) not in done]
    if not candidates:            # confident but wrong, or beyond the band: the least certain frames first
        candidates = [int(i) for i in np.argsort(-dev, kind="stable") if int(i) not in done]
    return _distinct(traj, _sane(traj, candidates, fusion_fraction, closest_A), n_max, min_rmsd_A)


def _sane(traj: Trajectory, candidates: list[int], fusion_fraction: float, closest_A: float) -> list[int]:
    ratios = min_distance_ratios(traj.positions[candidates], traj.cells[candidates], traj.numbers) if candidates else []
    return [i for i, (ratio, dist, _) in zip(candidates, ratios) if ratio >= fusion_fraction and dist >= closest_A]


def _distinct(traj: Trajectory, sane: list[int], n_max: int, min_rmsd_A: float) -> list[int]:
    """Greedy, in time order: frames at least ``min_rmsd_A`` from every frame kept."""
    picked: list[int] = []
    for i in sane:
        if len(picked) >= n_max:
            break
        x = traj.unwrapped[i]
        if all(np.sqrt(((x - traj.unwrapped[j]) ** 2).sum(1).mean()) >= min_rmsd_A for j in picked):
            picked.append(int(i))
    return picked


def audit_frames(runs, n: int, n_transit: int = 0, species=("Li",)) -> list[list[int]]:
    """``n`` stored frame indices spread evenly over the production parts of ``runs`` (a trajectory or its
    replicas; per replica, after its equilibration, ending at its last frame), whatever their deviation: the
    oracle labels them to measure the student's true error on its own MD
    (:func:`analysis.checks.check_accuracy`).  ``n_transit`` more: the frames with the most ions of
    ``species`` in transit (:func:`analysis.transit.transit_mask`; hop barriers set Ea), at least a transit
    window from every frame taken.  One sorted list per replica: the first ``n % replicas`` replicas get one
    spread frame more (the same for ``n_transit``); fewer when a run has fewer frames."""
    runs = replicas_of(runs)

    def shares(m):
        return [m // len(runs) + (1 if k < m % len(runs) else 0) for k in range(len(runs))]

    spread = [_spread(traj, m) for traj, m in zip(runs, shares(n))]
    if n_transit < 1:
        return spread
    return [sorted(f + _in_transit(traj, m, f, species)) for traj, m, f in zip(runs, shares(n_transit), spread)]


def _in_transit(traj: Trajectory, n: int, taken: list[int], species) -> list[int]:
    """At most ``n`` production frames with the most ions in transit (ties: the earlier), none within a
    transit window of a frame in ``taken`` or of one another; frames without an ion in transit never."""
    from analysis.transit import TRANSIT_WINDOW_FS, transit_mask

    if n < 1:
        return []
    count = transit_mask(traj, species).sum(1)
    gap = max(1, int(round(TRANSIT_WINDOW_FS / traj.dt_fs)))
    first = min(traj.discard_frames, len(traj) - 1)
    kept, near = [], list(taken)
    for i in np.argsort(-count[first:], kind="stable") + first:
        if len(kept) >= n or count[i] == 0:
            break
        if all(abs(int(i) - j) >= gap for j in near):
            kept.append(int(i))
            near.append(int(i))
    return kept


def _spread(traj: Trajectory, n: int) -> list[int]:
    first = min(traj.discard_frames, len(traj) - 1)
    span = len(traj) - first
    if n < 1 or span < 1:
        return []
    return sorted({first + int(round((k + 1) * span / n)) - 1 for k in range(min(n, span))})


@dataclass
class ExplorationReport:
    """The judge's answer on an exploration run (or its replicas): the verdict and the frames the oracle
    should label, one list of stored frame indices per replica."""
    verdict: Verdict
    frames: list[list[int]]

    @property
    def n_frames(self) -> int:
        return sum(len(f) for f in self.frames)

    def to_dict(self) -> dict:
        return {"verdict": self.verdict.to_dict(), "frames": [list(f) for f in self.frames]}

    @classmethod
    def from_dict(cls, d: dict) -> "ExplorationReport":
        return cls(Verdict.from_dict(d["verdict"]), [[int(i) for i in f] for f in d["frames"]])


def interleave(per_run: list[list[int]], n_max: int) -> list[list[int]]:
    """At most ``n_max`` frames over the replicas, taken in turn from each replica's list (in its order), so
    the labels spread over every replica that has candidates and a short list leaves its share to the others."""
    out = [[] for _ in per_run]
    taken, depth = 0, 0
    while taken < n_max and any(depth < len(f) for f in per_run):
        for k, frames in enumerate(per_run):
            if depth < len(frames) and taken < n_max:
                out[k].append(frames[depth])
                taken += 1
        depth += 1
    return [sorted(f) for f in out]


def judge_exploration(explore, reference: Trajectory, thresholds: VerdictThresholds, n_label: int,
                      min_rmsd_A: float, rdf_plot: str | None = None, reference_deviation=None,
                      reference_error=None, audit: dict | None = None, reference_transit=None,
                      same_material: bool = True) -> ExplorationReport:
    """Judge an exploration run, or its replicas as one (:func:`analysis.verdicts.judge`), against the
    reference run, and pick at most ``n_label`` frames over the replicas (:func:`interleave`).

    ``reference_deviation`` / ``reference_error``: the same ensemble's force deviation / mean atomic force
    error on the reference's held-out frames (derived trust levels / the accuracy check).  ``audit``:
    ``{"frames": per replica, stored frame indices already labelled by the oracle (:func:`audit_frames`),
    "mean_error_eV_A": the ensemble's error on them, replica after replica, "transit_error_eV_A": on their ions
    in transit}``; those frames are not picked again.  ``reference_transit``: the ensemble's error on the ions
    in transit of the reference's held-out frames (the accuracy check's transit comparison).  Frames to label
    must keep every pair at least 80 % of the closest pair the reference run ever had.  ``same_material`` False:
    the reference is another material's (a tier-1 candidate's accuracy baseline): structure and dynamics are not
    compared with it (:func:`analysis.verdicts.judge`).
    ``rdf_plot``: also draw the student's pooled RDF window and the reference's there (PNG).
    """
    from analysis.checks import pool_blocks

    runs = replicas_of(explore)
    ref = reference_profile(reference, thresholds, reference_deviation, reference_error, reference_transit)
    span_fs = max(len(t) * t.dt_fs for t in runs)
    if span_fs < 0.9 * len(reference) * reference.dt_fs:
        # a run shorter than the reference (a production chunk) is compared with the reference's structure
        # over the same time since the start: like with like, whatever the start's relaxation does
        ref = replace(ref, rdf=structure_rdf(reference.until(int(np.ceil(span_fs / reference.dt_fs))), thresholds))
    verdict = judge(runs, ref, thresholds, audit and audit["mean_error_eV_A"], audit and audit.get("transit_error_eV_A"),
                    same_material)
    nearest = min(d for _, d, _ in min_distance_ratios(reference.positions, reference.cells, reference.numbers, 4.0))
    closest = 0.8 * nearest if np.isfinite(nearest) else 0.0
    levels = thresholds.trust_levels(ref.deviation)
    done = (audit or {}).get("frames") or [[] for _ in runs]
    per_run = [select_for_labelling(t, verdict, levels, n_label, min_rmsd_A, closest, thresholds.fusion_fraction,
                                    exclude=done[k]) for k, t in enumerate(runs)]
    if rdf_plot:
        from analysis.plots import plot_rdf

        window = pool_blocks([structure_rdf(t, thresholds) for t in runs])
        plot_rdf(window_rdf(window), rdf_plot, reference=window_rdf(ref.rdf))
    return ExplorationReport(verdict, interleave(per_run, n_label))
