"""Counting the chemical space without materialising it.

``count_space(arity)`` returns, for all element combinations of a pool (default: all 103
elements), the number of *unique* compositions (combinations x gcd-reduced stoichiometries) and
of *allowed* ones (smact_filter semantics: some one-state-per-element assignment is charge
neutral and passes the Pauling test).  Exact integers; numba, parallel over combinations.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from common.errors import InputError
from chemspace.species import DEFAULT_SET, SpeciesTable, species_table

TABLE_LIMIT_BYTES = 256 * 2**20  # precompute N(q) bitsets only below this size
CHUNK = 1 << 18


@dataclass
class Prepared:
    """Flat arrays of a species table for the kernels."""

    table: SpeciesTable
    pool: np.ndarray  # element positions (Z - 1), sorted
    arity: int
    max_stoich: int
    st_val: np.ndarray
    st_vidx: np.ndarray
    st_off: np.ndarray
    en: np.ndarray
    values: np.ndarray
    neutral: np.ndarray = field(repr=False)
    use_table: bool
    max_q: int
    n_reduced: int


def validate(arity: int, max_stoich: int) -> None:
    """InputError for arity < 2 or max stoichiometry < 1."""
    if int(arity) < 2:
        raise InputError(f"arity must be at least 2 (binary), got {arity}; use --arity 2, 3 or 4")
    if int(max_stoich) < 1:
        raise InputError(f"max stoichiometry must be at least 1, got {max_stoich}; use e.g. --max-stoich 8")
    if int(max_stoich) ** int(arity) > 2**24:
        raise InputError(
            f"max stoichiometry {max_stoich} at arity {arity} gives {int(max_stoich) ** int(arity):,} tuples per "
            "combination; lower --max-stoich or --arity"
        )


_TABLE_CACHE: dict = {}


def prepare(table: SpeciesTable, pool: list[int], arity: int, max_stoich: int) -> Prepared:
    """Arrays for the kernels (the N(q) table is cached per value set, arity and max_stoich)."""
    from chemspace import kernels

    validate(arity, max_stoich)
    values = np.array(table.values() or [0], dtype=np.int64)
    vpos = {int(v): i for i, v in enumerate(values)}
    st_val, st_vidx, st_off = [], [], [0]
    for states in table.states:
        st_val.extend(states)
        st_vidx.extend(vpos[q] for q in states)
        st_off.append(len(st_val))
    en = np.array([np.nan if x is None else x for x in table.pauling], dtype=np.float64)
    words = (max_stoich**arity + 63) // 64
    nbytes = len(values) ** arity * words * 8
    use_table = nbytes <= TABLE_LIMIT_BYTES
    key = (tuple(values.tolist()), arity, max_stoich)
    if use_table:
        if key not in _TABLE_CACHE:
            _TABLE_CACHE.clear()
            _TABLE_CACHE[key] = kernels.neutral_table(values, arity, max_stoich)
        neutral = _TABLE_CACHE[key]
    else:
        neutral = np.zeros((1, 1), dtype=np.uint64)
    sizes = sorted((len(table.states[i]) for i in pool), reverse=True)[:arity]
    max_q = max(1, math.prod(sizes)) if sizes else 1
    _, n_reduced = kernels.reduced_mask(arity, max_stoich)
    return Prepared(
        table=table,
        pool=np.asarray(pool, dtype=np.int64),
        arity=arity,
        max_stoich=max_stoich,
        st_val=np.array(st_val, dtype=np.int64),
        st_vidx=np.array(st_vidx, dtype=np.int64),
        st_off=np.array(st_off, dtype=np.int64),
        en=en,
        values=values,
        neutral=neutral,
        use_table=use_table,
        max_q=max_q,
        n_reduced=int(n_reduced),
    )


def combination_chunks(n_pool: int, arity: int, chunk: int = CHUNK):
    """Yield (combos array, n) chunks of all ``arity``-subsets of range(n_pool), lexicographic."""
    from chemspace import kernels

    if n_pool < arity:
        return
    state = np.arange(arity, dtype=np.int64)
    buf = np.empty((chunk, arity), dtype=np.int64)
    while state[0] >= 0:
        n = kernels.next_combos(state, n_pool, buf)
        if n == 0:
            break
        yield buf, n


@dataclass
class CountResult:
    """Whole-space (or pool) counts for one arity."""

    arity: int
    unique: int
    allowed: int
    seconds: float
    combinations: int
    max_stoich: int = 8
    oxidation_states: str = DEFAULT_SET

    def as_dict(self) -> dict:
        return {"arity": self.arity, "unique": self.unique, "allowed": self.allowed, "seconds": round(self.seconds, 3)}


def count_space(
    arity: int,
    elements: list[str] | None = None,
    max_stoich: int = 8,
    oxidation_states: str = DEFAULT_SET,
    progress: bool = False,
) -> CountResult:
    """Count unique and allowed compositions of ``arity`` elements drawn from ``elements``.

    ``elements=None`` means all 103 elements H..Lr.  Returns exact integers and wall seconds.
    """
    from chemspace import kernels

    t0 = time.perf_counter()
    table = species_table(oxidation_states)
    validate(arity, max_stoich)
    pool = list(range(len(table.symbols))) if elements is None else table.indices(elements)
    if not pool:
        raise InputError("empty element pool; give at least two elements with --elements")
    prep = prepare(table, pool, arity, max_stoich)
    n_comb = math.comb(len(pool), arity)
    allowed = 0
    bar = _bar(progress, n_comb, "combinations")
    for combos, n in combination_chunks(len(pool), arity):
        counts = kernels.count_allowed(
            combos, n, prep.pool, prep.st_val, prep.st_vidx, prep.st_off, prep.en, len(prep.values),
            prep.neutral, prep.use_table, arity, max_stoich, prep.max_q,
        )
        allowed += int(counts.sum())
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.close()
    return CountResult(
        arity=arity,
        unique=n_comb * prep.n_reduced,
        allowed=allowed,
        seconds=time.perf_counter() - t0,
        combinations=n_comb,
        max_stoich=max_stoich,
        oxidation_states=oxidation_states,
    )


def _bar(progress: bool, total: int, unit: str):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=f" {unit}", unit_scale=True, disable=None, leave=False)
