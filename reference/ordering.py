"""Deterministic ordering of partially occupied crystal structures.

Recipe (logged, never silent): group sites into symmetry orbits, turn each orbit's fractional
occupancy into a whole number of atoms (element totals rounded to the charge-balanced cell
content, then shared between orbits by largest remainder), decorate oxidation states and pick
the lowest-Ewald-energy arrangement with pymatgen's OrderDisorderedStructureTransformation.
Refuses with a reason when no charge-balanced whole-atom content exists in the given cell.
"""
from __future__ import annotations

import logging
import math

import numpy as np
from collections import defaultdict

from common.errors import InputError

log = logging.getLogger(__name__)

#: largest |n*occupancy - round| accepted per element in the cell (more needs a supercell)
ROUNDING_TOLERANCE = 0.3
#: refuse orderings whose number of disordered sites would make the Ewald search too costly
MAX_DISORDERED_SITES = 160


def _orbits(structure) -> list[list[int]]:
    """Symmetry-equivalent site indices (falls back to grouping by species when symmetry fails)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        sym = SpacegroupAnalyzer(structure, symprec=0.01).get_symmetrized_structure()
        return [list(g) for g in sym.equivalent_indices]
    except Exception:  # noqa: BLE001 - spglib can fail on odd cells; group by species instead
        groups: dict[str, list[int]] = defaultdict(list)
        for i, site in enumerate(structure):
            groups[site.species_string].append(i)
        return list(groups.values())


def _guess_oxidation_states(counts: dict, given: dict | None) -> dict[str, float]:
    from pymatgen.core import Composition

    if given:
        return {str(k): float(v) for k, v in given.items()}
    comp = Composition(counts)
    try:
        guesses = comp.oxi_state_guesses() if len(comp) else []
    except ValueError:
        guesses = []
    # one integer oxidation state per element, as in a charge-balanced ionic solid
    guesses = [g for g in guesses if all(float(v).is_integer() for v in g.values())]
    if not guesses:
        raise InputError(f"whole-atom content {comp.formula} of the partial occupancies is not charge balanced "
                         "with integer oxidation states; fix the occupancies, give oxidation states (e.g. Li=1,P=5,S=-2) or supply an ordered structure")
    return {str(k): float(v) for k, v in guesses[0].items()}


def whole_atom_occupancies(structure, oxidation_states: dict | None = None):
    """Return (structure with occupancies n_k/N per orbit, list of logged choices, oxidation states).

    Raises InputError when the element totals are not (close to) whole numbers or not charge
    balanced in this cell.
    """
    orbits = _orbits(structure)
    # expected atoms per (orbit, element)
    expected: dict[tuple[int, str], float] = {}
    for k, idx in enumerate(orbits):
        for el, occ in structure[idx[0]].species.element_composition.items():
            expected[(k, el.symbol)] = expected.get((k, el.symbol), 0.0) + occ * len(idx)
    totals: dict[str, float] = defaultdict(float)
    for (_, el), n in expected.items():
        totals[el] += n
    target = {}
    for el, n in totals.items():
        r = round(n)
        if abs(n - r) > ROUNDING_TOLERANCE:
            raise InputError(f"partial occupancies give {n:.2f} {el} atoms in this cell, not a whole number; "
                             "make a supercell (e.g. 2x1x1) or fix the occupancies")
        target[el] = r
    oxi = _guess_oxidation_states(target, oxidation_states)
    charge = sum(target[el] * oxi.get(el, 0.0) for el in target)
    if abs(charge) > 1e-6:
        raise InputError(f"whole-atom content {target} has net charge {charge:+g} with oxidation states {oxi}; "
                         "fix occupancies or oxidation states, or supply an ordered structure")
    # largest-remainder apportionment per element, deterministic tie-break by orbit index
    counts: dict[tuple[int, str], int] = {}
    for el, tot in target.items():
        keys = sorted(k for k in expected if k[1] == el)
        base = {k: math.floor(expected[k] + 1e-9) for k in keys}
        rest = tot - sum(base.values())
        order = sorted(keys, key=lambda k: (-(expected[k] - base[k]), k[0]))
        for k in order[:max(rest, 0)]:
            base[k] += 1
        for k in order[::-1][:max(-rest, 0)]:
            base[k] -= 1
        counts.update(base)
    choices = []
    new_species = {}
    for k, idx in enumerate(orbits):
        n = len(idx)
        occ = {el: counts[(kk, el)] / n for (kk, el) in counts if kk == k and counts[(kk, el)] > 0}
        if sum(occ.values()) > 1 + 1e-9:
            raise InputError(f"orbit {k} ({n} sites) would hold {sum(occ.values()) * n:.0f} atoms; "
                             "occupancies are inconsistent, fix the CIF")
        orig = structure[idx[0]].species
        if not structure[idx[0]].is_ordered:
            choices.append(f"orbit of {n} sites {orig.formula if hasattr(orig, 'formula') else orig}: "
                           + ", ".join(f"{el} {expected[(k, el)]:.2f} -> {counts[(k, el)]}" for (kk, el) in sorted(counts)
                                       if kk == k))
        for i in idx:
            new_species[i] = occ
    out = structure.copy()
    empty = []
    for i, occ in new_species.items():
        if occ:
            out.replace(i, occ, coords=structure[i].frac_coords)
        else:
            empty.append(i)      # orbit left with no atoms (e.g. 0.1 x 4 sites -> 0)
    if empty:
        out.remove_sites(empty)
    return out, choices, oxi


def order_structure(structure, oxidation_states: dict | None = None):
    """Deterministic, charge-balanced, lowest-Ewald-energy ordering of ``structure``.

    Returns (ordered Structure without oxidation states, list of logged choices).  An ordered
    input is returned unchanged with no choices.
    """
    from pymatgen.transformations.standard_transformations import OrderDisorderedStructureTransformation

    if structure.is_ordered:
        return structure.copy(), []
    prim = structure.get_primitive_structure(tolerance=0.1)
    if len(prim) < len(structure):
        # order the primitive cell (far fewer arrangements), then tile it back to the input cell
        matrix = np.rint(structure.lattice.matrix @ np.linalg.inv(prim.lattice.matrix)).astype(int)
        if abs(abs(round(np.linalg.det(matrix))) * len(prim) - len(structure)) == 0 and \
                np.allclose(matrix @ prim.lattice.matrix, structure.lattice.matrix, atol=1e-3):
            try:
                ordered, choices = order_structure(prim, oxidation_states)
            except InputError:
                pass  # e.g. fractional counts in the primitive cell: fall back to the full cell
            else:
                ordered.make_supercell(matrix)
                ordered = _plain(ordered)
                choices.insert(0, f"ordered the {len(prim)}-site primitive cell and tiled it by {matrix.tolist()}")
                return ordered.get_sorted_structure(), choices
    whole, choices, oxi = whole_atom_occupancies(structure, oxidation_states)
    n_dis = sum(1 for s in whole if not s.is_ordered)
    if n_dis > MAX_DISORDERED_SITES:
        raise InputError(f"{n_dis} partially occupied sites are too many to order (limit {MAX_DISORDERED_SITES}); "
                         "use the primitive or conventional cell, not a supercell")
    if whole.is_ordered:  # whole-atom rounding already fixed every site
        choices.append("every orbit full or empty after whole-atom rounding: no arrangement to choose")
        return _plain(whole).get_sorted_structure(), choices
    whole.add_oxidation_state_by_element(oxi)
    trans = OrderDisorderedStructureTransformation(algo=OrderDisorderedStructureTransformation.ALGO_FAST)
    ordered = trans.apply_transformation(whole)
    ordered.remove_oxidation_states()
    ordered = _plain(ordered).get_sorted_structure()
    for c in choices:
        log.info("ordering %s: %s", structure.composition.reduced_formula, c)
    choices.append("lowest Ewald energy arrangement (pymatgen OrderDisorderedStructureTransformation, fast algorithm)")
    return ordered, choices


def _plain(structure):
    """A copy without stale site labels/properties (labels like 'Li:0.691' would mislead CIF readers)."""
    from pymatgen.core import Structure

    return Structure(structure.lattice, structure.species, structure.frac_coords)
