"""Whole-space counting: exact agreement with smact (binaries) and brute force (small pools)."""
from __future__ import annotations

import itertools
import math
import warnings

import pytest

from chemspace import count_space, enumerate_compositions, filters
from chemspace.composition import reduced_tuples
from chemspace.species import species_table


def test_all_binaries_match_smact_filter():
    from smact import Element
    from smact.screening import smact_filter

    table = species_table("smact14")
    expected = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        els = {s: Element(s) for s in table.symbols}
        for a, b in itertools.combinations(table.symbols, 2):
            if table.states[table.index[a]] and table.states[table.index[b]]:  # smact_filter raises otherwise
                expected += len(smact_filter([els[a], els[b]], threshold=8, oxidation_states_set="smact14",
                                             species_unique=False))
    res = count_space(2)
    assert res.allowed == expected == 13464
    assert res.unique == math.comb(103, 2) * len(reduced_tuples(2, 8)) == 225879


def _brute(pool, arity, max_stoich, oxset):
    table = species_table(oxset)
    allowed = 0
    tuples = reduced_tuples(arity, max_stoich)
    for combo in itertools.combinations(sorted(pool, key=table.index.__getitem__), arity):
        allowed += sum(filters.is_allowed(combo, n, table) for n in tuples)
    return allowed


POOL = ["H", "Li", "N", "O", "Fe", "Cl", "Pm", "Sn", "Au"]  # Pm has no Pauling value


@pytest.mark.parametrize("arity,max_stoich,oxset", [(2, 8, "smact14"), (3, 5, "smact14"), (3, 4, "icsd24"),
                                                    (4, 2, "smact14"), (2, 6, "pymatgen")])
def test_count_matches_brute_force_and_enumeration(arity, max_stoich, oxset):
    res = count_space(arity, elements=POOL, max_stoich=max_stoich, oxidation_states=oxset)
    assert res.allowed == _brute(POOL, arity, max_stoich, oxset)
    assert res.unique == math.comb(len(POOL), arity) * len(reduced_tuples(arity, max_stoich))
    tab = enumerate_compositions(POOL, arity=arity, max_stoich=max_stoich, oxidation_states=oxset)
    assert tab.num_rows == res.allowed
    everything = enumerate_compositions(POOL, arity=arity, max_stoich=max_stoich, oxidation_states=oxset,
                                        include_disallowed=True)
    assert everything.num_rows == res.unique


def test_custom_file_with_zero_states(tmp_path):
    """State 0 (allowed in custom sets) makes every stoichiometry neutral; smact agrees."""
    from smact import Element
    from smact.screening import smact_filter

    f = tmp_path / "ox.txt"
    f.write_text("# custom oxidation states\nFe 0 2 3\nNi 0\nO -2\nSi 0 4\n")
    res = count_space(2, elements=["Fe", "Ni"], oxidation_states=str(f))
    assert res.allowed == res.unique == len(reduced_tuples(2, 8))
    for pool in (["O", "Fe", "Ni"], ["O", "Si", "Fe"]):  # Z order, as our columns
        tab = enumerate_compositions(pool, arity=3, max_stoich=4, oxidation_states=str(f))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = smact_filter([Element(e) for e in pool], threshold=4, oxidation_states_set=str(f),
                               species_unique=False)
        assert {tuple(a) for a in tab.column("amounts").to_pylist()} == {tuple(r[1]) for r in ref}


def test_on_the_fly_bitsets_match_the_table(monkeypatch):
    """Large arities skip the precomputed N(q) table; both paths give the same counts."""
    from chemspace import counting

    pool = ["Li", "Na", "O", "S", "Cl", "P"]
    with_table = count_space(5, elements=pool, max_stoich=2)
    monkeypatch.setattr(counting, "TABLE_LIMIT_BYTES", 0)
    without = count_space(5, elements=pool, max_stoich=2)
    assert with_table.allowed == without.allowed == _brute(pool, 5, 2, "smact14")


def test_whole_ternary_space_count_is_stable():
    res = count_space(3)
    assert (res.unique, res.allowed) == (77637589, 10779441)
