"""chemspace: the chemical-space engine (SMACT filters, counting, enumeration, labels, maps).

The Python API mirrors ``matscreen chemspace ...``:

>>> from chemspace import count_space, enumerate_compositions, label, embed, make_map
>>> count_space(2).allowed                                   # whole 103-element space, smact14
13464
>>> tab = enumerate_compositions("Li,Ge,P,S", arity="2-4", must_contain="Li")   # pyarrow Table
>>> tab = label(tab, known="known.csv")                      # adds known / category columns

Data come from smact (oxidation states, Pauling electronegativities) and elementembeddings.
"""
from __future__ import annotations

from chemspace.composition import canonical_formula, composition_key, formula_key, parse_key
from chemspace.counting import CountResult, count_space
from chemspace.embeddings import EMBEDDINGS, embed
from chemspace.enumeration import enumerate_compositions, iter_batches
from chemspace.filters import check, is_allowed
from chemspace.labels import CATEGORIES, category, label_file, label_table, load_known, space_categories
from chemspace.maps import make_map
from chemspace.species import OXIDATION_STATE_SETS, SpeciesTable, species_table


def label(table, known, cache_dir=None):
    """Label a pyarrow composition table against ``known`` (a file path, "mp", or a set of keys)."""
    if not isinstance(known, (set, frozenset)):
        systems = {tuple(e) for e in table.column("elements").to_pylist()} if "elements" in table.column_names else None
        known = load_known(known, systems=systems, cache_dir=cache_dir)
    return label_table(table, known)


def count_space_categories(arity: int, known, **kwargs) -> dict:
    """``count_space`` plus the four categories against a known-formulas file (or set of keys)."""
    res = count_space(arity, **kwargs)
    keys = known if isinstance(known, (set, frozenset)) else load_known(known)
    out = res.as_dict()
    out["categories"] = space_categories(
        arity, res.allowed, res.unique, keys, elements=kwargs.get("elements"),
        max_stoich=kwargs.get("max_stoich", 8), oxidation_states=kwargs.get("oxidation_states", "smact14"),
    )
    return out


__all__ = [
    "CATEGORIES", "EMBEDDINGS", "OXIDATION_STATE_SETS", "CountResult", "SpeciesTable", "canonical_formula",
    "category", "check", "composition_key", "count_space", "count_space_categories", "embed",
    "enumerate_compositions", "formula_key", "is_allowed", "iter_batches", "label", "label_file", "label_table",
    "load_known", "make_map", "parse_key", "space_categories", "species_table",
]
