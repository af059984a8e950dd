"""Calibration of the ensemble's force deviation against the oracle's true force error.

Each labelling round (and each reference run) gives frames where both are known: the ensemble's max
atomic force deviation d and the max atomic force error e against the oracle (eV/Å).  The report says:

* how well d ranks e (Spearman ρ) and how much e exceeds d (quantiles of e/d);
* ``error_bound_factor`` c: the split-conformal (1 - α) quantile of e/d, so that e <= c·d holds on at
  least 1 - α of new frames exchangeable with these (``error_bound`` = c·d is the deviation read as an
  error bar, in eV/Å).  Given the factor of another set of frames (``bound_factor``: the reference's
  held-out block), ``bound_coverage`` is the share of these frames with e <= c·d and ``bound_holds``
  says whether it is not significantly (one-sided binomial, at α) below 1 - α: the deviation's
  calibration on the oracle's frames carries over to the frames the student explored itself;
* for a trust band (lo, hi): how often a frame the band calls accurate (d < lo) has in fact failed,
  i.e. a true error at or above ``failure_error_eV_A`` (``missed_failures``), and what share of the
  failed frames the band flags (d >= lo, ``failures_caught``).  The band is valid when
  ``missed_failures`` is at most α.

The failure level is in error units.  With configured levels it is ``hi`` (DP-GEN's reading: the
deviation stands for the error).  With levels derived from the reference (``VerdictThresholds.
trust_levels``: lo is a quantile of the deviation on the held-out block) it is ``trust_band_ratio`` x
the same quantile of the true error there (:func:`calibrate_reference`): deviation and error each on
their own scale, so that a student whose deviation understates its error by a constant factor is not
called invalid for that alone (the conformal factor reports the factor), while a student that is
confidently wrong on some frames is.
"""
from __future__ import annotations

import math

import numpy as np


def conformal_factor(deviation, error, alpha: float = 0.05) -> float | None:
    """The split-conformal (1 - ``alpha``) quantile of error/deviation (None: too few frames, fewer than
    1/alpha - 1)."""
    ratio = np.sort(_ratio(np.asarray(deviation, float), np.asarray(error, float)))
    n = len(ratio)
    rank = math.ceil((n + 1) * (1 - alpha))
    return float(ratio[rank - 1]) if 0 < rank <= n else None


def calibrate(deviation, error, levels: tuple[float, float] | None = None, alpha: float = 0.05,
              failure_error_eV_A: float | None = None, bound_factor: float | None = None) -> dict:
    """The calibration report of paired per-frame ``deviation`` and ``error`` (eV/Å; NaN pairs skipped).

    ``levels``: the trust band (lo, hi) in deviation units; ``failure_error_eV_A``: the true error that is a
    failed frame (default hi: configured levels); ``bound_factor``: an error-bound factor fitted elsewhere
    (:func:`conformal_factor` of the reference's held-out block) whose coverage on these frames is tested.
    """
    d = np.asarray(deviation, float)
    e = np.asarray(error, float)
    keep = np.isfinite(d) & np.isfinite(e)
    d, e = d[keep], e[keep]
    out: dict = {"n_frames": int(len(d))}
    if len(d) == 0:
        return out
    ratio = _ratio(d, e)
    out.update(deviation_median_eV_A=float(np.median(d)), error_median_eV_A=float(np.median(e)),
               error_to_deviation_median=float(np.median(ratio)),
               error_to_deviation_q90=float(np.quantile(ratio, 0.9)),
               error_bound_factor=conformal_factor(d, e, alpha))
    if len(d) >= 3:
        from scipy.stats import spearmanr

        rho = spearmanr(d, e).statistic
        out["spearman"] = float(rho) if math.isfinite(rho) else None
    if bound_factor is not None:
        from scipy.stats import binom

        inside = int((e <= bound_factor * d).sum())
        out.update(bound_factor=float(bound_factor), bound_coverage=inside / len(d),
                   bound_holds=bool(binom.cdf(inside, len(d), 1 - alpha) > alpha))
    if levels is not None:
        out.update(_band(d, e, levels, levels[1] if failure_error_eV_A is None else failure_error_eV_A, alpha))
    return out


def calibrate_reference(deviation, error, thresholds) -> dict:
    """The calibration on the reference's held-out block, with the trust band of ``thresholds``
    (``analysis.verdicts.VerdictThresholds``) and its failure level.

    Derived levels are validated out of sample: each half of the block (in time) derives lo and the failure
    level that the other half is tested against, and the two halves' missed failures are pooled; the levels
    reported (and used by the judge) are those of the whole block.
    """
    d = np.asarray(deviation, float)
    e = np.asarray(error, float)
    keep = np.isfinite(d) & np.isfinite(e)
    alpha = thresholds.false_alarm_rate
    levels = thresholds.trust_levels(d[keep])
    out = calibrate(d, e, levels, alpha, thresholds.failure_error(e[keep]) if levels else None)
    if levels is None or thresholds.trust_lo_eV_A is not None or keep.sum() < 4:
        return out
    d, e = d[keep], e[keep]
    half = len(d) // 2
    calm = failed = 0
    for fit, test in ((slice(0, half), slice(half, None)), (slice(half, None), slice(0, half))):
        below = d[test] < thresholds.trust_levels(d[fit])[0]
        calm += int(below.sum())
        failed += int((e[test][below] >= thresholds.failure_error(e[fit])).sum())
    missed = failed / calm if calm else 0.0
    out.update(frames_below_lo=calm, missed_failures=missed, trust_levels_valid=bool(missed <= alpha),
               missed_failures_method="cross-fitted halves")
    return out


def _band(d: np.ndarray, e: np.ndarray, levels: tuple[float, float], failure: float, alpha: float) -> dict:
    lo, hi = levels
    calm, failed = d < lo, e >= failure
    missed = float(failed[calm].mean()) if calm.any() else 0.0
    return {"trust_lo_eV_A": float(lo), "trust_hi_eV_A": float(hi), "failure_error_eV_A": float(failure),
            "frames_below_lo": int(calm.sum()), "missed_failures": missed,
            "failures_caught": float((~calm[failed]).mean()) if failed.any() else None,
            "trust_levels_valid": bool(missed <= alpha)}


def _ratio(d: np.ndarray, e: np.ndarray) -> np.ndarray:
    keep = np.isfinite(d) & np.isfinite(e)
    return e[keep] / np.maximum(d[keep], 1e-12)
