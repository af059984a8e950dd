"""SMACT's two filters, one composition at a time (plain Python, for labels and checks).

Semantics are exactly those of ``smact.screening.smact_filter``: a composition (elements with
amounts n) is *allowed* if some assignment of one oxidation state per element is charge neutral
(sum n_i q_i = 0) and passes the Pauling test (:func:`chemspace.species.pauling_ok`).  The
filters are scale invariant, so the reduced amounts decide.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from chemspace.species import SpeciesTable, pauling_ok, species_table


@dataclass(frozen=True)
class FilterResult:
    """Outcome of both filters for one composition."""

    charge_neutral: bool  # some assignment is neutral (Pauling ignored)
    pauling: bool  # some assignment passes the Pauling test (neutrality ignored)
    allowed: bool  # some assignment passes both
    assignments: tuple[tuple[int, ...], ...]  # the assignments passing both


def charge_neutral_assignments(table: SpeciesTable, symbols, amounts) -> list[tuple[int, ...]]:
    """Oxidation-state assignments (one per element) with sum n_i q_i == 0."""
    idx = [table.index[s] for s in symbols]
    return [q for q in itertools.product(*(table.states[i] for i in idx)) if sum(n * x for n, x in zip(amounts, q)) == 0]


def check(symbols, amounts, table: SpeciesTable | None = None) -> FilterResult:
    """Apply charge neutrality and the Pauling test to one composition."""
    table = table or species_table()
    idx = [table.index[s] for s in symbols]
    neutral = False
    pauling = False
    passing = []
    for q in itertools.product(*(table.states[i] for i in idx)):
        is_neutral = sum(n * x for n, x in zip(amounts, q)) == 0
        is_pauling = pauling_ok(table, idx, q)
        neutral |= is_neutral
        pauling |= is_pauling
        if is_neutral and is_pauling:
            passing.append(q)
    return FilterResult(neutral, pauling, bool(passing), tuple(passing))


def is_allowed(symbols, amounts, table: SpeciesTable | None = None) -> bool:
    """True when the composition passes smact_filter's two tests."""
    return check(symbols, amounts, table).allowed
