"""chemspace filters agree with smact.screening.smact_filter, the reference implementation."""
from __future__ import annotations

import random
import warnings

import pytest

from chemspace import enumeration, filters
from chemspace.species import pauling_ok, species_table


def _smact_allowed(symbols, threshold, oxset):
    from smact import Element
    from smact.screening import smact_filter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        els = [Element(s) for s in symbols]
        out = smact_filter(els, threshold=threshold, oxidation_states_set=oxset, species_unique=True)
    got: dict[tuple, set] = {}
    for syms, ox, ratio in out:
        assert tuple(syms) == tuple(symbols)
        got.setdefault(tuple(ratio), set()).add(tuple(ox))
    return got


def _ours(symbols, threshold, oxset):
    table = enumeration.enumerate_compositions(symbols, arity=len(symbols), max_stoich=threshold, oxidation_states=oxset)
    got = {}
    for row in table.to_pylist():
        assert row["elements"] == list(symbols)
        got[tuple(row["amounts"])] = {tuple(q) for q in row["oxidation_states"]}
    return got


def _systems(oxset, arity, n, seed):
    table = species_table(oxset)
    usable = [s for s, st in zip(table.symbols, table.states) if st]  # smact_filter raises without states
    rng = random.Random(seed)
    systems = set()
    # always include elements without a Pauling value (never pass) and strong anions
    while len(systems) < n:
        picks = rng.sample(usable, arity)
        systems.add(tuple(sorted(picks, key=table.index.__getitem__)))
    return sorted(systems)


CASES = [
    # (oxidation-state set, arity, max stoichiometry, number of random systems)
    ("smact14", 2, 8, 120),
    ("icsd24", 2, 8, 80),
    ("smact14", 3, 8, 60),
    ("icsd24", 3, 6, 40),
    ("smact14", 4, 3, 25),
    ("icsd24", 4, 3, 15),
]


@pytest.mark.parametrize("oxset,arity,threshold,n", CASES)
def test_identical_allowed_sets_to_smact(oxset, arity, threshold, n):
    for symbols in _systems(oxset, arity, n, seed=arity * 100 + len(oxset)):
        assert _ours(symbols, threshold, oxset) == _smact_allowed(symbols, threshold, oxset), symbols


def test_anion_rich_systems_match_smact():
    """Systems with several possible anions exercise the Pauling test more than random picks."""
    for symbols in [("Li", "P", "S"), ("N", "O", "S"), ("C", "N", "Cl"), ("Cs", "Pb", "I"), ("Li", "Ge", "P", "S"),
                    ("H", "N", "O"), ("Sb", "Te", "I"), ("Au", "Cs"), ("Pm", "O"), ("Li", "Lr", "O")]:
        t = 8 if len(symbols) < 4 else 4
        symbols = sorted(symbols, key=species_table().index.__getitem__)  # ours are in Z order
        assert _ours(symbols, t, "smact14") == _smact_allowed(symbols, t, "smact14"), symbols


def test_pauling_test_matches_smact():
    from smact.screening import pauling_test

    table = species_table("smact14")
    rng = random.Random(7)
    for _ in range(2000):
        idx = rng.sample(range(103), rng.randint(2, 4))
        q = tuple(rng.choice([-3, -2, -1, 1, 2, 3]) for _ in idx)
        en = [table.pauling[i] for i in idx]
        assert pauling_ok(table, idx, q) == pauling_test(q, en)


def test_each_filter_alone():
    table = species_table("smact14")
    # NaCl: neutral (+1, -1) and Cl more electronegative than Na
    r = filters.check(["Na", "Cl"], [1, 1], table)
    assert r.charge_neutral and r.pauling and r.allowed and (1, -1) in r.assignments
    # NaCl2: Pauling-plausible assignments exist, but none is neutral
    r = filters.check(["Na", "Cl"], [1, 2], table)
    assert r.pauling and not r.charge_neutral and not r.allowed
    # He has no Pauling value: neither He-F nor any He compound passes
    r = filters.check(["Ne", "F"], [1, 1], table)
    assert not r.pauling and not r.allowed
    # Fe3O4: neutral only with mixed valence (one state per element fails) -> not allowed by SMACT
    r = filters.check(["Fe", "O"], [3, 4], table)
    assert not r.allowed
    # OF2: O(+2) with F(-1) is fine because F is more electronegative than O
    r = filters.check(["O", "F"], [1, 2], table)
    assert r.allowed and (2, -1) in r.assignments
    # NaH: neutral as H(+1)Na(-1) too, but only hydride H(-1)Na(+1) passes Pauling
    r = filters.check(["H", "Na"], [1, 1], table)
    assert r.allowed and all(q[0] < 0 for q in r.assignments)


def test_species_tables_from_smact():
    t14 = species_table("smact14")
    assert len(t14.symbols) == 103 and t14.symbols[0] == "H" and t14.symbols[-1] == "Lr"
    assert t14.n_species == 421
    from smact import Element

    assert t14.states[t14.index["Fe"]] == tuple(sorted(Element("Fe").oxidation_states_smact14))
    assert t14.pauling[t14.index["O"]] == Element("O").pauling_eneg
    assert t14.pauling[t14.index["He"]] is None
    icsd = species_table("icsd24")
    assert icsd.n_species == sum(len(Element(s).oxidation_states_icsd24 or []) for s in icsd.symbols)
    pmg = species_table("pymatgen")
    from pymatgen.core import Element as PE

    assert pmg.states[pmg.index["Mn"]] == tuple(sorted(PE("Mn").common_oxidation_states))
