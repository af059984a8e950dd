"""Known/unknown labels and the four categories of Park, Onwuli, Butler and Walsh (2025).

* ``standard``    allowed by SMACT and known;
* ``missing``     allowed and not (yet) known - the candidates;
* ``interesting`` not allowed but known (SMACT's rules miss them: metals, mixed valence, ...);
* ``unlikely``    not allowed and not known.

Known compositions come from a local file (:mod:`chemspace.known`) or the Materials Project
(:mod:`chemspace.materials_project`); tables are joined on the canonical composition key.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from common.errors import InputError
from chemspace.composition import parse_key
from chemspace.filters import is_allowed
from chemspace.species import DEFAULT_SET, species_table

CATEGORIES = ("standard", "missing", "interesting", "unlikely")
MP_SOURCE = "mp"


def category(allowed: bool, known: bool) -> str:
    """The study's category for one composition."""
    if allowed:
        return "standard" if known else "missing"
    return "interesting" if known else "unlikely"


def load_known(source: str | Path, systems=None, cache_dir=None) -> set[str]:
    """Known canonical keys from a file, or from the Materials Project when ``source == "mp"``.

    ``systems`` (iterables of element symbols) are the chemical systems to ask MP about.
    """
    if str(source) == MP_SOURCE:
        from chemspace.materials_project import MPKnown

        if systems is None:
            raise InputError("the Materials Project source needs the chemical systems to query; label a table instead")
        return MPKnown(cache_dir).keys(systems)
    from chemspace.known import known_keys

    return known_keys(source)


def label_table(table, known: set[str]):
    """Add ``known`` (bool) and ``category`` (str) columns to a composition table (pyarrow)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for col in ("key", "allowed"):
        if col not in table.column_names:
            raise InputError(f"table has no {col!r} column; label a table written by 'matscreen chemspace enumerate'")
    is_known = pc.is_in(table.column("key"), value_set=pa.array(sorted(known), pa.string()))
    allowed = table.column("allowed")
    cat = pc.if_else(
        allowed,
        pc.if_else(is_known, "standard", "missing"),
        pc.if_else(is_known, "interesting", "unlikely"),
    )
    for name, col in (("known", is_known), ("category", cat)):
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, col)
    return table


def label_file(path: str | Path, known_source: str | Path, out: str | Path | None = None, cache_dir=None) -> dict:
    """Label a composition-table Parquet file (in place when ``out`` is None); returns category counts."""
    import pyarrow.parquet as pq

    from common.atomic import atomic_path, check_writable

    path = Path(path)
    if not path.is_file():
        raise InputError(f"composition table {path} not found; write one with 'matscreen chemspace enumerate'")
    out = Path(out) if out else path
    check_writable(out)
    try:
        table = pq.read_table(path)
    except Exception:  # noqa: BLE001
        raise InputError(f"{path} is not a readable Parquet file; give a table written by 'chemspace enumerate'") from None
    systems = None
    if str(known_source) == MP_SOURCE and "elements" in table.column_names:
        systems = {tuple(e) for e in table.column("elements").to_pylist()}
    known = load_known(known_source, systems=systems, cache_dir=cache_dir)
    table = label_table(table, known)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    counts = Counter(table.column("category").to_pylist())
    return {c: int(counts.get(c, 0)) for c in CATEGORIES}


def space_categories(
    arity: int,
    allowed_total: int,
    unique_total: int,
    known: set[str],
    elements: list[str] | None = None,
    max_stoich: int = 8,
    oxidation_states: str = DEFAULT_SET,
) -> dict[str, int]:
    """Category counts over a whole space (all combinations of ``elements`` at ``arity``).

    Known compositions outside the space (other arity, elements outside the pool, an amount
    above ``max_stoich``) are not counted.
    """
    table = species_table(oxidation_states)
    pool = set(table.symbols if elements is None else elements)
    standard = interesting = 0
    for key in known:
        syms, amounts = parse_key(key)
        if len(syms) != arity or max(amounts) > max_stoich or not set(syms) <= pool:
            continue
        if is_allowed(syms, amounts, table):
            standard += 1
        else:
            interesting += 1
    return {
        "standard": standard,
        "missing": allowed_total - standard,
        "interesting": interesting,
        "unlikely": unique_total - allowed_total - interesting,
    }
