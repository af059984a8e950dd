"""Mobile ions between sites: the frames and atoms where a hop is under way.

An ion is *in transit* at stored frame ``i`` when its mean position over the ``window_fs`` after the frame
lies at least ``threshold_A`` (Å) from its mean position over the ``window_fs`` before it: it left one site
and is reaching another.  Hop barriers set Ea, so the oracle's audits over-represent such frames
(:func:`analysis.selection.audit_frames`) and the accuracy check compares the student's force error on
ions in transit with its error on the reference's ions in transit (:func:`analysis.checks.check_accuracy`).
"""
from __future__ import annotations

import numpy as np

from common.trajectory import Trajectory

TRANSIT_WINDOW_FS = 200.0      # fs averaged on each side of a frame: longer than a vibration, shorter than a stay
TRANSIT_THRESHOLD_A = 1.5      # Å between the two means: about half a Li-Li site distance in sulfides


def transit_mask(traj: Trajectory, species=("Li",), window_fs: float = TRANSIT_WINDOW_FS,
                 threshold_A: float = TRANSIT_THRESHOLD_A) -> np.ndarray:
    """[F, N] bool: atom ``a`` of ``species`` in transit at stored frame ``i`` (False for other species;
    at the run's ends the windows shrink to the frames there, at least one on each side; the first and
    last frames are never in transit)."""
    from ase.data import atomic_numbers

    zs = [atomic_numbers[s] for s in ([species] if isinstance(species, str) else species)]
    mobile = np.isin(traj.numbers, zs)
    f = len(traj)
    out = np.zeros((f, len(traj.numbers)), bool)
    if f < 3 or not mobile.any():
        return out
    w = max(1, int(round(window_fs / traj.dt_fs)))
    u = traj.unwrapped[:, mobile]
    c = np.concatenate([np.zeros((1,) + u.shape[1:]), np.cumsum(u, axis=0)])
    i = np.arange(1, f - 1)
    lo, hi = np.maximum(0, i - w), np.minimum(f, i + 1 + w)
    before = (c[i] - c[lo]) / (i - lo)[:, None, None]
    after = (c[hi] - c[i + 1]) / (hi - i - 1)[:, None, None]
    out[1:-1, mobile] = np.linalg.norm(after - before, axis=2) >= threshold_A
    return out
