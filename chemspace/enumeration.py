"""Streaming enumeration of compositions to Parquet (bounded memory, progress bar).

Rows (one per composition, the *composition table* of docs/ARTIFACTS.md):

``formula`` (str, canonical formula), ``key`` (str, canonical composition key: the join key),
``arity`` (int8), ``elements`` (list<str>, Z order), ``amounts`` (list<int16>, reduced, aligned
with ``elements``), ``oxidation_states`` (list<list<int8>>: every one-state-per-element
assignment that is charge neutral and passes the Pauling test, aligned with ``elements``; empty
when not allowed) and ``allowed`` (bool).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from common.errors import InputError
from chemspace.counting import combination_chunks, prepare, validate
from chemspace.species import DEFAULT_SET, SpeciesTable, species_table
from chemspace.composition import formula_rank

ROWS_PER_BATCH = 1_000_000


def schema():
    """Arrow schema of the composition table."""
    import pyarrow as pa

    return pa.schema(
        [
            ("formula", pa.string()),
            ("key", pa.string()),
            ("arity", pa.int8()),
            ("elements", pa.list_(pa.string())),
            ("amounts", pa.list_(pa.int16())),
            ("oxidation_states", pa.list_(pa.list_(pa.int8()))),
            ("allowed", pa.bool_()),
        ]
    )


def parse_arity(arity) -> list[int]:
    """3 -> [3]; "2-4" -> [2, 3, 4]; "2,4" -> [2, 4]; [2, 3] -> [2, 3]."""
    if isinstance(arity, int):
        out = [arity]
    elif isinstance(arity, (list, tuple)):
        out = [int(a) for a in arity]
    else:
        text = str(arity).strip()
        try:
            if "-" in text[1:]:
                lo, hi = text.split("-", 1)
                out = list(range(int(lo), int(hi) + 1))
            else:
                out = [int(a) for a in text.split(",") if a.strip()]
        except ValueError:
            raise InputError(f"cannot read arity {arity!r}; use e.g. --arity 3, --arity 2-4 or --arity 2,3") from None
    if not out:
        raise InputError(f"empty arity {arity!r}; use e.g. --arity 3 or --arity 2-4")
    for a in out:
        if a < 2:
            raise InputError(f"arity must be at least 2 (binary), got {a}; use --arity 2, 3 or 4")
    return sorted(set(out))


def split_symbols(value) -> list[str]:
    """"Li,P, S" or ["Li", "P"] -> ["Li", "P", "S"]."""
    if value is None:
        return []
    if isinstance(value, str):
        return [s.strip() for s in value.replace(" ", ",").split(",") if s.strip()]
    return [str(s).strip() for s in value]


def restrict_anions(table: SpeciesTable, anions: list[int]) -> SpeciesTable:
    """Copy of ``table`` where only ``anions`` take negative states (and no positive ones)."""
    aset = set(anions)
    states = tuple(
        tuple(q for q in s if q <= 0) if i in aset else tuple(q for q in s if q >= 0)
        for i, s in enumerate(table.states)
    )
    return dataclasses.replace(table, name=f"{table.name}+anions", states=states)


@dataclass
class EnumerationSpec:
    """What to enumerate (the CLI's options)."""

    elements: list[str] | None = None  # pool; None = all 103 elements
    arity: list[int] = dataclasses.field(default_factory=lambda: [3])
    must_contain: list[str] = dataclasses.field(default_factory=list)
    anions: list[str] = dataclasses.field(default_factory=list)
    max_stoich: int = 8
    oxidation_states: str = DEFAULT_SET
    include_disallowed: bool = False


@dataclass
class EnumerationResult:
    """Summary of an enumeration run written to ``path``."""

    path: Path | None
    rows: int
    allowed: int
    seconds: float

    def as_dict(self) -> dict:
        return {"path": str(self.path) if self.path else None, "rows": self.rows, "allowed": self.allowed,
                "seconds": round(self.seconds, 3)}


def _resolve(spec: EnumerationSpec):
    base = species_table(spec.oxidation_states)
    arities = parse_arity(spec.arity)
    for a in arities:
        validate(a, spec.max_stoich)
    pool = list(range(len(base.symbols))) if spec.elements is None else base.indices(spec.elements, "--elements")
    if not pool:
        raise InputError("empty element pool; give elements with --elements, e.g. --elements Li,Ge,P,S")
    must = base.indices(spec.must_contain, "--must-contain")
    anions = base.indices(spec.anions, "--anions")
    pool = sorted(set(pool) | set(must) | set(anions))
    table = restrict_anions(base, anions) if anions else base
    return table, arities, pool, must, anions


def count_rows_upper_bound(spec: EnumerationSpec) -> int:
    """Number of unique compositions the spec visits (rows when include_disallowed)."""
    from chemspace import kernels

    table, arities, pool, must, _ = _resolve(spec)
    total = 0
    for a in arities:
        free = a - len(must)
        if free < 0:
            continue
        _, nred = kernels.reduced_mask(a, spec.max_stoich)
        total += math.comb(len(pool) - len(must), free) * int(nred)
    return total


def iter_batches(spec: EnumerationSpec, progress: bool = False) -> Iterator:
    """Yield pyarrow RecordBatches of the composition table (see module docstring)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from chemspace import kernels

    table, arities, pool, must, anions = _resolve(spec)
    syms = pa.array(table.symbols, pa.string())
    by_rank = sorted(range(len(table.symbols)), key=lambda i: formula_rank(table, table.symbols[i]))
    rank = np.empty(len(by_rank), dtype=np.int64)
    rank[by_rank] = np.arange(len(by_rank))
    m = spec.max_stoich
    amt_key = pa.array([str(i) for i in range(m + 1)], pa.string())
    amt_formula = pa.array(["" if i == 1 else str(i) for i in range(m + 1)], pa.string())
    free_pool = [p for p in pool if p not in set(must)]
    bar = None
    if progress:
        from tqdm import tqdm

        total = sum(math.comb(len(free_pool), a - len(must)) for a in arities if a >= len(must))
        bar = tqdm(total=total, unit=" combinations", unit_scale=True, disable=None, leave=False, desc="enumerate")
    for k in arities:
        free = k - len(must)
        if free < 0 or free > len(free_pool):
            continue
        prep = prepare(table, pool, k, m)
        chunk = max(16, ROWS_PER_BATCH // prep.n_reduced)
        pos_in_pool = {p: i for i, p in enumerate(pool)}
        free_pos = np.array([pos_in_pool[p] for p in free_pool], dtype=np.int64)
        must_pos = np.array([pos_in_pool[p] for p in must], dtype=np.int64)
        if free == 0:
            chunks = [(np.zeros((1, 0), dtype=np.int64), 1)]
        else:
            chunks = combination_chunks(len(free_pool), free, chunk)
        for sub, n in chunks:
            combos = np.concatenate([np.broadcast_to(must_pos, (n, len(must))), free_pos[sub[:n]]], axis=1)
            combos = np.ascontiguousarray(np.sort(combos, axis=1))
            row_combo, row_stoich, row_allowed, asg_off, asg_q = kernels.enumerate_chunk(
                combos, n, prep.pool, prep.st_val, prep.st_vidx, prep.st_off, prep.en, len(prep.values),
                prep.neutral, prep.use_table, k, m, prep.max_q, spec.include_disallowed,
            )
            if bar is not None:
                bar.update(n)
            if len(row_combo) == 0:
                continue
            yield _batch(pa, pc, syms, rank, amt_key, amt_formula, prep.pool[combos[row_combo]], row_stoich,
                         row_allowed, asg_off, asg_q, k, m)
    if bar is not None:
        bar.close()


def _batch(pa, pc, syms, rank, amt_key, amt_formula, elem, row_stoich, row_allowed, asg_off, asg_q, k, m):
    rows = elem.shape[0]
    amounts = np.empty((rows, k), dtype=np.int64)
    r = row_stoich.copy()
    for i in range(k - 1, -1, -1):
        amounts[:, i] = r % m + 1
        r //= m
    key_parts = []
    for i in range(k):
        key_parts += [syms.take(pa.array(elem[:, i])), amt_key.take(pa.array(amounts[:, i]))]
    key = pc.binary_join_element_wise(*key_parts, "")
    order = np.argsort(rank[elem], axis=1, kind="stable")
    elem_f = np.take_along_axis(elem, order, axis=1)
    amt_f = np.take_along_axis(amounts, order, axis=1)
    f_parts = []
    for i in range(k):
        f_parts += [syms.take(pa.array(elem_f[:, i])), amt_formula.take(pa.array(amt_f[:, i]))]
    formula = pc.binary_join_element_wise(*f_parts, "")
    offs = pa.array(np.arange(0, rows * k + 1, k, dtype=np.int32))
    elements = pa.ListArray.from_arrays(offs, syms.take(pa.array(elem.ravel())))
    amts = pa.ListArray.from_arrays(offs, pa.array(amounts.ravel().astype(np.int16)))
    n_asg = asg_q.shape[0]
    inner = pa.ListArray.from_arrays(
        pa.array(np.arange(0, n_asg * k + 1, k, dtype=np.int32)), pa.array(asg_q.ravel().astype(np.int8))
    )
    ox = pa.ListArray.from_arrays(pa.array(asg_off.astype(np.int32)), inner)
    arity = pa.array(np.full(rows, k, dtype=np.int8))
    return pa.RecordBatch.from_arrays(
        [formula, key, arity, elements, amts, ox, pa.array(row_allowed)], schema=schema()
    )


def enumerate_compositions(
    elements: list[str] | str | None = None,
    arity=3,
    must_contain=None,
    anions=None,
    max_stoich: int = 8,
    oxidation_states: str = DEFAULT_SET,
    include_disallowed: bool = False,
    out: str | Path | None = None,
    progress: bool = False,
):
    """Enumerate allowed (optionally all) compositions of an element pool.

    With ``out`` the table is streamed to that Parquet file atomically and an
    :class:`EnumerationResult` is returned; without it a ``pyarrow.Table`` is returned (keep
    pools small then).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from common.atomic import atomic_path, check_writable

    spec = EnumerationSpec(
        elements=None if elements is None else split_symbols(elements),
        arity=parse_arity(arity),
        must_contain=split_symbols(must_contain),
        anions=split_symbols(anions),
        max_stoich=int(max_stoich),
        oxidation_states=oxidation_states,
        include_disallowed=bool(include_disallowed),
    )
    _resolve(spec)  # validate before touching any file
    t0 = time.perf_counter()
    if out is None:
        batches = list(iter_batches(spec, progress))
        return pa.Table.from_batches(batches, schema=schema())
    check_writable(out)
    rows = allowed = 0
    with atomic_path(out) as tmp:
        with pq.ParquetWriter(tmp, schema(), compression="zstd") as writer:
            for batch in iter_batches(spec, progress):
                writer.write_batch(batch)
                rows += batch.num_rows
                allowed += int(pa.compute.sum(batch.column("allowed")).as_py() or 0)
    return EnumerationResult(Path(out), rows, allowed, time.perf_counter() - t0)
