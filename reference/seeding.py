"""The first oracle labels of a candidate without oracle MD (a funnel's tier 1): its structure and rattled copies.

A candidate from substitution into a prototype has no trajectory yet.  Before its student runs, the oracle
labels the substituted structure itself and copies of it with every atom displaced by an independent normal
deviate of ``rattle_A`` per Cartesian component (Å): forces away from the minimum, the harmonic part of the
potential energy surface the student's MD will sample first.
"""
from __future__ import annotations

import numpy as np

from common.errors import InputError


def seed_frames(atoms, n: int, rattle_A: float, seed: int = 0) -> list:
    """``n`` frames: ``atoms`` as given, then ``n - 1`` copies rattled by N(0, ``rattle_A``) Å per component
    (``seed`` fixes them).  Each frame's ``info['seed_frame']`` is its index."""
    if n < 1:
        raise InputError(f"seed frames: n must be at least 1, got {n}")
    if rattle_A <= 0:
        raise InputError(f"seed frames: rattle_A must be positive (Å), got {rattle_A}")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        frame = atoms.copy()
        frame.calc = None
        if i:
            frame.positions = frame.positions + rng.normal(0.0, rattle_A, size=frame.positions.shape)
        frame.info["seed_frame"] = i
        out.append(frame)
    return out
