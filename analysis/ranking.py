"""How sure each place of a ranking is: the probability that a candidate's log10 sigma(300 K) beats a threshold,
and that it is among the top k.

Each candidate's value is read as a normal distribution of log10 sigma(300 K) (log10 mS/cm) with its total
error as the standard deviation, independent of the others'.  What the candidates share (the oracle's own
error, a family model) moves them together and is not in these numbers: they rank candidates *for this
oracle*, as the known values beside them remind.
"""
from __future__ import annotations

import math

import numpy as np

from common.errors import InputError

THRESHOLD_MS_CM = 1.0     # default threshold of P(sigma(300 K) > threshold), mS/cm
TOP_K = 3                 # default k of P(among the top k)


def p_above(value: float, error: float, threshold_log10: float) -> float:
    """P(log10 sigma > ``threshold_log10``) for a normal value; a zero error gives 0 or 1."""
    if error <= 0:
        return float(value > threshold_log10)
    return 0.5 * math.erfc((threshold_log10 - value) / (error * math.sqrt(2.0)))


def p_top_k(values, errors, k: int, draws: int = 20000, seed: int = 0) -> np.ndarray:
    """Per candidate, P(its log10 sigma is among the ``k`` highest), by ``draws`` joint normal draws (fixed
    ``seed``: the same table every time; Monte Carlo error below 0.004).  Every candidate is in the top k when
    there are at most k."""
    v = np.asarray(values, float)
    e = np.asarray(errors, float)
    if v.shape != e.shape or v.ndim != 1 or not (np.isfinite(v).all() and np.isfinite(e).all()) or (e < 0).any():
        raise InputError("p_top_k needs one finite value and one finite, non-negative error per candidate")
    if k < 1:
        raise InputError(f"top k must be at least 1, got {k}")
    if len(v) <= k:
        return np.ones(len(v))
    rng = np.random.default_rng(seed)
    x = v[None, :] + e[None, :] * rng.standard_normal((draws, len(v)))
    place = np.argsort(np.argsort(-x, axis=1, kind="stable"), axis=1)    # 0 = highest in that draw
    return (place < k).mean(axis=0)


def could_be_top_k(values, errors, k: int, z: float = 1.645) -> np.ndarray:
    """Per candidate, whether its upper end (value + ``z`` x error) reaches the ``k``-th highest lower end (value -
    ``z`` x error) among all of them: it could be in the top k.  A candidate without a value or with an
    infinite error (None, nan, inf) is uncertain, never dropped for it: its upper end is +inf and its lower end
    -inf.  With at most k candidates every one could be."""
    if k < 1:
        raise InputError(f"top k must be at least 1, got {k}")
    v = np.array([np.nan if x is None else float(x) for x in values])
    e = np.array([np.inf if x is None else float(x) for x in errors])
    known = np.isfinite(v) & np.isfinite(e)
    upper = np.where(known, v + z * np.where(known, e, 0.0), np.inf)
    lower = np.where(known, v - z * np.where(known, e, 0.0), -np.inf)
    if len(v) <= k:
        return np.ones(len(v), bool)
    kth = np.sort(lower)[::-1][k - 1]
    return upper >= kth
