"""Which frames of an exploration run the oracle should label (active learning, DP-GEN style).

Frames whose ensemble force deviation lies inside the trust band ``[trust_lo, trust_hi)`` are
candidates; when a run that was not stable has none, the first frames above the band are taken, or
else its last frames before it stopped.  Candidates must be geometrically sane (no pair closer than
``closest_A``, nor than the fusion limit) and are kept greedily, in time order, when at least
``min_rmsd_A`` (Å) away from every frame already kept.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.trajectory import Trajectory
from analysis.verdicts import STABLE, Verdict, VerdictThresholds, judge, min_distance_ratios, structure_rdf


def select_for_labelling(traj: Trajectory, verdict: Verdict, thresholds: VerdictThresholds, n_max: int,
                         min_rmsd_A: float, closest_A: float = 0.0) -> list[int]:
    """Indices of stored frames of ``traj`` to label (at most ``n_max``)."""
    if traj.force_deviation is None or n_max < 1:
        return []
    dev = np.asarray(traj.force_deviation, float)
    lo, hi = thresholds.trust_lo_eV_A, thresholds.trust_hi_eV_A
    candidates = list(np.flatnonzero((dev >= lo) & (dev < hi)))
    if not candidates and verdict.status != STABLE:
        candidates = list(np.flatnonzero(dev >= lo))[:n_max] or list(range(max(0, len(dev) - 3), len(dev)))
    ratios = min_distance_ratios(traj.positions[candidates], traj.cells[candidates], traj.numbers) if candidates else []
    sane = [i for i, (ratio, dist, _) in zip(candidates, ratios)
            if ratio >= thresholds.fusion_fraction and dist >= closest_A]
    picked: list[int] = []
    for i in sane:
        if len(picked) >= n_max:
            break
        x = traj.unwrapped[i]
        if all(np.sqrt(((x - traj.unwrapped[j]) ** 2).sum(1).mean()) >= min_rmsd_A for j in picked):
            picked.append(int(i))
    return picked


@dataclass
class ExplorationReport:
    """The judge's answer on one exploration run: its verdict and the frames the oracle should label."""
    verdict: Verdict
    frames: list[int]

    def to_dict(self) -> dict:
        return {"verdict": self.verdict.to_dict(), "frames": list(self.frames)}

    @classmethod
    def from_dict(cls, d: dict) -> "ExplorationReport":
        return cls(Verdict.from_dict(d["verdict"]), [int(i) for i in d["frames"]])


def judge_exploration(explore: Trajectory, reference: Trajectory, thresholds: VerdictThresholds, n_label: int,
                      min_rmsd_A: float, rdf_plot: str | None = None) -> ExplorationReport:
    """Judge an exploration run against the reference run (:func:`analysis.verdicts.judge`) and pick frames.

    Frames to label must keep every pair at least 80 % of the closest pair the reference run ever had.
    ``rdf_plot``: also draw the two RDF windows there (PNG).
    """
    ref_rdf = structure_rdf(reference, thresholds)
    verdict = judge(explore, ref_rdf, thresholds)
    nearest = min(d for _, d, _ in min_distance_ratios(reference.positions, reference.cells, reference.numbers, 4.0))
    closest = 0.8 * nearest if np.isfinite(nearest) else 0.0
    frames = [] if verdict.status == STABLE else select_for_labelling(explore, verdict, thresholds, n_label,
                                                                     min_rmsd_A, closest)
    if rdf_plot:
        from analysis.plots import plot_rdf

        plot_rdf(structure_rdf(explore, thresholds), rdf_plot, reference=ref_rdf)
    return ExplorationReport(verdict, frames)
