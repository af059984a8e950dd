"""Species tables: oxidation states and Pauling electronegativities of elements H..Lr (Z 1-103).

All data come from the ``smact`` package (and pymatgen for its common oxidation states); nothing
is retyped here.  ``SpeciesTable`` is the one object every other chemspace module works from.

Oxidation-state sets (``--oxidation-states``):

* ``smact14``    SMACT's original 2014 list (421 species over Z 1-103), the default, as used by
                 Park, Onwuli, Butler and Walsh (Faraday Discuss. 2025);
* ``icsd24``     smact's 2024 ICSD list (states reported > 5 times);
* ``icsd16``     smact's 2016 ICSD list;
* ``pymatgen_sp`` smact's copy of the pymatgen structure-predictor states;
* ``pymatgen``   pymatgen's ``Element.common_oxidation_states`` (may contain 0);
* a path to a smact-format oxidation-states text file.

Electronegativities are smact's ``Element.pauling_eneg`` (``None`` where smact has none: He, Ne,
Ar, Pm, Rn, Lr); an element without a value never passes SMACT's Pauling test.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError

N_ELEMENTS = 103
SMACT_SETS = {
    "smact14": "oxidation_states_smact14",
    "icsd24": "oxidation_states_icsd24",
    "icsd16": "oxidation_states_icsd16",
    "pymatgen_sp": "oxidation_states_sp",
}
OXIDATION_STATE_SETS = (*SMACT_SETS, "pymatgen")
DEFAULT_SET = "smact14"


@dataclass(frozen=True)
class SpeciesTable:
    """Elements Z 1..103 with their oxidation states and Pauling electronegativities.

    ``symbols[i]`` has atomic number ``i + 1``; ``states[i]`` is a sorted tuple of integer
    oxidation states (may be empty); ``pauling[i]`` is a float or ``None``.
    """

    name: str
    symbols: tuple[str, ...]
    states: tuple[tuple[int, ...], ...]
    pauling: tuple[float | None, ...]

    @functools.cached_property
    def index(self) -> dict[str, int]:
        """Symbol -> position (Z - 1)."""
        return {s: i for i, s in enumerate(self.symbols)}

    @property
    def n_species(self) -> int:
        """Number of (element, oxidation state) species in the table."""
        return sum(len(s) for s in self.states)

    def z(self, symbol: str) -> int:
        """Atomic number of ``symbol``."""
        return self.index[symbol] + 1

    def indices(self, symbols, what: str = "--elements") -> list[int]:
        """Positions of ``symbols`` (sorted by Z, de-duplicated); InputError on unknown symbols."""
        out = set()
        for raw in symbols:
            sym = str(raw).strip()
            if sym not in self.index:
                raise InputError(
                    f"unknown element symbol {sym!r} in {what}; use symbols of elements H..Lr (Z 1-103), e.g. Li,P,S"
                )
            out.add(self.index[sym])
        return sorted(out)

    def values(self) -> list[int]:
        """Sorted distinct oxidation-state values over all elements."""
        return sorted({q for s in self.states for q in s})


def _smact_symbols() -> tuple[str, ...]:
    import smact

    return tuple(smact.ordered_elements(1, N_ELEMENTS))


@functools.lru_cache(maxsize=16)
def species_table(oxidation_states: str = DEFAULT_SET) -> SpeciesTable:
    """Load a species table by set name (see module docstring) or smact-format file path."""
    import smact

    symbols = _smact_symbols()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        elements = [smact.Element(s) for s in symbols]
    pauling = tuple(None if e.pauling_eneg is None else float(e.pauling_eneg) for e in elements)
    if oxidation_states in SMACT_SETS:
        attr = SMACT_SETS[oxidation_states]
        states = [getattr(e, attr) or [] for e in elements]
    elif oxidation_states == "pymatgen":
        from pymatgen.core import Element as PmgElement

        states = [list(PmgElement(s).common_oxidation_states) for s in symbols]
    elif Path(oxidation_states).is_file():
        states = _states_from_file(Path(oxidation_states), symbols)
    else:
        raise InputError(
            f"unknown oxidation-state set {oxidation_states!r}; use one of {', '.join(OXIDATION_STATE_SETS)} "
            "or the path to a smact-format oxidation-states file"
        )
    states = tuple(tuple(sorted({int(q) for q in s})) for s in states)
    return SpeciesTable(name=str(oxidation_states), symbols=symbols, states=states, pauling=pauling)


def _states_from_file(path: Path, symbols: tuple[str, ...]) -> list[list[int]]:
    """Read a smact-format file: one line per element, ``Symbol q1 q2 ...`` ('#' comments)."""
    table: dict[str, list[int]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        sym, *rest = line.split()
        try:
            table[sym] = [int(x) for x in rest]
        except ValueError:
            raise InputError(f"{path}:{lineno}: oxidation states must be integers; fix the file") from None
    unknown = sorted(set(table) - set(symbols))
    if unknown:
        raise InputError(f"{path}: unknown element symbol(s) {', '.join(unknown)}; use symbols H..Lr")
    return [table.get(s, []) for s in symbols]


def pauling_ok(table: SpeciesTable, elements: list[int], states: tuple[int, ...]) -> bool:
    """SMACT's pairwise Pauling test for one oxidation-state assignment.

    True when every element has a Pauling value and every cation (q > 0) is strictly less
    electronegative than every anion (q < 0); elements in state 0 are only checked for a value.
    """
    en = [table.pauling[i] for i in elements]
    if any(x is None or (isinstance(x, float) and math.isnan(x)) for x in en):
        return False
    for a in range(len(elements)):
        for b in range(a + 1, len(elements)):
            qa, qb = states[a], states[b]
            if qa > 0 and qb < 0 and en[a] >= en[b]:
                return False
            if qa < 0 and qb > 0 and en[a] <= en[b]:
                return False
    return True
