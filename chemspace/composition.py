"""Canonical compositions: integer-reduced element amounts and the key every join uses.

A composition is a mapping element -> amount.  Its *canonical key* lists the elements in order
of atomic number, each followed by its gcd-reduced integer amount, always written:
``"Li10Ge1P2S12"``.  Joins between tables (labels, known formulas, caches) use this key and
never formula strings, whose element order differs between pymatgen versions.

The *canonical formula* is for people: the same reduced amounts with elements ordered by
increasing Pauling electronegativity (smact values; ties and elements without a value by Z) and
amounts of 1 omitted, e.g. ``"Li10GeP2S12"``.
"""
from __future__ import annotations

import math
from fractions import Fraction
from functools import reduce

from common.errors import InputError
from chemspace.species import SpeciesTable, species_table


def reduce_amounts(amounts) -> tuple[int, ...]:
    """Positive amounts (ints, floats or Fractions) -> smallest integer ratio."""
    fr = [Fraction(str(a)).limit_denominator(10_000) if not isinstance(a, int) else Fraction(a) for a in amounts]
    if any(f <= 0 for f in fr):
        raise InputError(f"amounts must be positive, got {list(amounts)}; fix the formula")
    lcm = reduce(lambda x, y: x * y // math.gcd(x, y), (f.denominator for f in fr), 1)
    ints = [int(f * lcm) for f in fr]
    g = reduce(math.gcd, ints)
    return tuple(i // g for i in ints)


def canonical(amounts: dict[str, float], table: SpeciesTable | None = None) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Element->amount mapping -> (symbols in Z order, reduced integer amounts)."""
    table = table or species_table()
    items = [(s, a) for s, a in amounts.items() if a != 0]
    for s, _ in items:
        if s not in table.index:
            raise InputError(f"unknown element symbol {s!r} in a formula; use elements H..Lr (Z 1-103)")
    items.sort(key=lambda sa: table.index[sa[0]])
    syms = tuple(s for s, _ in items)
    return syms, reduce_amounts([a for _, a in items])


def composition_key(symbols, amounts) -> str:
    """Canonical key from symbols already in Z order and reduced integer amounts."""
    return "".join(f"{s}{n}" for s, n in zip(symbols, amounts))


def formula_key(formula: str, table: SpeciesTable | None = None) -> str:
    """Canonical key of a formula string in any element order ("SLi2" -> "Li2S1")."""
    return composition_key(*canonical(parse_formula(formula), table))


def parse_formula(formula: str) -> dict[str, float]:
    """Formula string -> element amounts (pymatgen's parser); InputError when unparsable."""
    from pymatgen.core import Composition

    text = str(formula).strip()
    if not text:
        raise InputError("empty formula; give formulas such as Li3PS4")
    try:
        comp = Composition(text)
    except Exception:  # noqa: BLE001 - pymatgen raises several types
        raise InputError(f"cannot parse formula {text!r}; give formulas such as Li3PS4") from None
    out: dict[str, float] = {}
    for el, amt in comp.items():
        sym = getattr(el, "symbol", str(el))
        out[sym] = out.get(sym, 0.0) + float(amt)
    return out


def canonical_formula(symbols, amounts, table: SpeciesTable | None = None) -> str:
    """Human formula: elements by increasing Pauling electronegativity, amounts of 1 omitted."""
    table = table or species_table()
    order = sorted(range(len(symbols)), key=lambda i: formula_rank(table, symbols[i]))
    return "".join(symbols[i] + (str(amounts[i]) if amounts[i] != 1 else "") for i in order)


def formula_rank(table: SpeciesTable, symbol: str) -> tuple[float, int]:
    """Sort key of an element in a canonical formula: (Pauling EN or +inf, Z)."""
    en = table.pauling[table.index[symbol]]
    return (math.inf if en is None else en, table.index[symbol])


def parse_key(key: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Inverse of :func:`composition_key`."""
    import re

    parts = re.findall(r"([A-Z][a-z]?)(\d+)", key)
    return tuple(p[0] for p in parts), tuple(int(p[1]) for p in parts)


def reduced_tuples(arity: int, max_stoich: int) -> list[tuple[int, ...]]:
    """All gcd-reduced stoichiometry tuples in 1..max_stoich (lexicographic)."""
    import itertools

    return [t for t in itertools.product(range(1, max_stoich + 1), repeat=arity) if reduce(math.gcd, t) == 1]
