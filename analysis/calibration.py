"""Calibration of the ensemble's force deviation against the oracle's true force error.

Each labelling round (and each reference run) gives frames where both are known: the ensemble's max
atomic force deviation d and the max atomic force error e against the oracle (eV/Å).  The report says
how well d ranks e (Spearman ρ), how much e exceeds d (ratio quantiles), and, for the trust band in use,
how often a frame the band calls accurate (d < lo) is in fact failed (e >= hi): ``missed_failures``.
The band is validated when that fraction is at most the false-alarm rate.
"""
from __future__ import annotations

import math

import numpy as np


def calibrate(deviation, error, levels: tuple[float, float] | None = None, alpha: float = 0.05) -> dict:
    """The calibration report of paired per-frame ``deviation`` and ``error`` (eV/Å; NaN errors skipped)."""
    d = np.asarray(deviation, float)
    e = np.asarray(error, float)
    keep = np.isfinite(d) & np.isfinite(e)
    d, e = d[keep], e[keep]
    out: dict = {"n_frames": int(len(d))}
    if len(d) == 0:
        return out
    ratio = e / np.maximum(d, 1e-12)
    out.update(deviation_median_eV_A=float(np.median(d)), error_median_eV_A=float(np.median(e)),
               error_to_deviation_median=float(np.median(ratio)),
               error_to_deviation_q90=float(np.quantile(ratio, 0.9)))
    if len(d) >= 3:
        from scipy.stats import spearmanr

        rho = spearmanr(d, e).statistic
        out["spearman"] = float(rho) if math.isfinite(rho) else None
    if levels is not None:
        lo, hi = levels
        calm = d < lo
        missed = float((e[calm] >= hi).mean()) if calm.any() else 0.0
        out.update(trust_lo_eV_A=lo, trust_hi_eV_A=hi, frames_below_lo=int(calm.sum()), missed_failures=missed,
                   trust_levels_valid=bool(missed <= alpha))
    return out
