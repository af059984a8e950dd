"""Candidate structures for compositions by ionic substitution into prototypes.

Rule: a prototype fits a composition when both have the same anonymous formula (e.g. A10BC2D12);
each prototype element is replaced by the target element with the same amount AND the same
oxidation state (charges from pymatgen's oxidation-state guesses) AND a Shannon ionic radius in that
state (so P2- or S5+, which charge balance alone allows, never take a site); among several valid maps
the one with the smallest Shannon-radius mismatch wins.  The cell is rescaled by the ratio of ionic volumes
(sum of r³).  Optional relaxation with an oracle (cached); implausible results are rejected with a
reason: interatomic distance below ``min_distance_factor`` × (sum of covalent radii), or a volume
change above ``max_volume_change`` during relaxation.  Compositions with no fitting prototype are
reported as ``status="no_prototype"``, never raised.

    Li10GeP2S12 -> Li10SiP2S12, Li10SnP2S12;  Li3PS4 -> Li3PSe4, Li3AsS4;  Li4GeS4 -> Li4SiS4, Li4SnS4
"""
from __future__ import annotations

import functools
import itertools
import logging
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from common.config import check_fields, param
from common.errors import InputError

log = logging.getLogger(__name__)

MIN_DISTANCE_FACTOR = 0.6       # reject d_ij < factor * (r_cov_i + r_cov_j)
MAX_VOLUME_CHANGE = 0.25        # reject |V_relaxed / V_start - 1| above this


@dataclass
class Candidate:
    """One proposed structure: ``status`` is proposed | relaxed | rejected | no_prototype."""
    formula: str
    prototype: str | None
    structure: object = None                  # pymatgen Structure (Å) or None
    status: str = "proposed"
    reason: str = ""
    provenance: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        s = self.structure
        return {"formula": self.formula, "prototype": self.prototype, "status": self.status, "reason": self.reason,
                "n_atoms": len(s) if s is not None else 0,
                "volume_A3": round(float(s.volume), 3) if s is not None else None, "provenance": self.provenance}


def parse_composition(formula: str):
    """Reduced pymatgen Composition of ``formula``; InputError for unknown elements or fractions."""
    from pymatgen.core import Composition

    try:
        comp = Composition(str(formula))
    except Exception:  # noqa: BLE001
        raise InputError(f"cannot parse formula {formula!r}; give e.g. Li10SiP2S12") from None
    from pymatgen.core import Element

    unknown = sorted(getattr(el, "symbol", str(el)) for el in comp if not isinstance(el, Element))
    if len(comp) == 0 or unknown:
        which = f"unknown element {', '.join(unknown)} is not a chemical symbol; " if unknown else ""
        raise InputError(f"formula {formula!r} has unknown elements; {which}give e.g. Li10SiP2S12")
    if any(not float(v).is_integer() for v in comp.values()):
        raise InputError(f"formula {formula!r} must have whole-number amounts; give e.g. Li10SiP2S12")
    return comp.reduced_composition


def formula_string(comp) -> str:
    """Plain formula in the composition's element order, e.g. Li10SiP2S12 (not Li10Si(PS6)2)."""
    return "".join(f"{el.symbol}{int(n) if n != 1 else ''}" for el, n in comp.items())


def _oxidation_states(comp) -> list[dict]:
    """Up to four integer charge assignments of ``comp`` (pymatgen's guesses, most likely first)."""
    return [dict(g) for g in _integer_oxidation_states(comp.reduced_formula)]


@functools.lru_cache(maxsize=256)
def _integer_oxidation_states(reduced_formula: str) -> tuple:
    """pymatgen's guesses (seconds each for a 25-atom formula unit), once per formula and process."""
    from pymatgen.core import Composition

    guesses = [dict(g) for g in Composition(reduced_formula).oxi_state_guesses()]
    return tuple(tuple(g.items()) for g in guesses if all(float(v).is_integer() for v in g.values()))[:4]


_TERM = re.compile(r"([A-Z][a-z]?)(\d*)")


def _amounts_shape(formula: str) -> tuple[int, ...] | None:
    """Sorted amounts of the reduced formula ``formula`` (plain, e.g. Li10GeP2S12), the content of its
    anonymous formula (A10BC2D12 -> (1, 2, 10, 12)); None when it is not that plain form.  A prefilter
    (microseconds) before pymatgen's Composition (a millisecond) on every enumerated formula."""
    terms = _TERM.findall(formula)
    if not terms or "".join(el + n for el, n in terms) != formula:
        return None
    counts: dict[str, int] = {}
    for el, n in terms:
        counts[el] = counts.get(el, 0) + (int(n) if n else 1)
    g = math.gcd(*counts.values())
    return tuple(sorted(v // g for v in counts.values()))


def _radius(el: str, oxi: float) -> float | None:
    from pymatgen.core import Species

    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = Species(el, int(round(oxi))).ionic_radius
        return float(r) if r is not None else None
    except Exception:  # noqa: BLE001
        return None


def substitution_map(prototype_formula: str, target_formula: str) -> tuple[dict, dict]:
    """(prototype element -> target element, details) or raise InputError with the reason."""
    p, t = parse_composition(prototype_formula), parse_composition(target_formula)
    if p.anonymized_formula != t.anonymized_formula:
        raise InputError(f"{t.reduced_formula} ({t.anonymized_formula}) does not fit prototype "
                         f"{p.reduced_formula} ({p.anonymized_formula}): different anonymous formula")
    no_map = InputError(f"{t.reduced_formula} does not fit prototype {p.reduced_formula}: no same-charge "
                        "element map (oxidation states differ)")
    p_oxis = _oxidation_states(p)[:1]   # the prototype's most likely charges
    if not p_oxis:
        raise InputError(f"{p.reduced_formula} has no charge-balanced oxidation states; cannot substitute by charge")
    p_groups: dict[float, list[str]] = {}
    for el, n in p.items():
        p_groups.setdefault(n, []).append(el.symbol)
    t_groups: dict[float, list[str]] = {}
    for el, n in t.items():
        t_groups.setdefault(n, []).append(el.symbol)
    if not _may_take_charges(p_groups, t_groups, p_oxis[0]):
        raise no_map                    # decided without the target's oxidation-state guesses (seconds each)
    t_oxis = _oxidation_states(t)
    if not t_oxis:
        raise InputError(f"{t.reduced_formula} has no charge-balanced oxidation states; cannot substitute by charge")
    best = None
    for p_oxi, t_oxi in itertools.product(p_oxis, t_oxis):
        per_group = []
        for n, p_els in p_groups.items():
            options = []
            for perm in itertools.permutations(t_groups[n]):
                if all(p_oxi[a] == t_oxi[b] for a, b in zip(p_els, perm)):
                    options.append(dict(zip(p_els, perm)))
            per_group.append(options)
        for combo in itertools.product(*per_group):
            mapping = {k: v for d in combo for k, v in d.items()}
            score = 0.0
            for a, b in mapping.items():
                ra, rb = _radius(a, p_oxi[a]), _radius(b, t_oxi[b])
                if a != b and not (ra and rb):     # an ion without a Shannon radius (e.g. S5+, P2-) is no ion
                    score = None
                    break
                score += abs(np.log(rb / ra)) if ra and rb else 0.0
            if score is not None and (best is None or score < best[0]):
                best = (score, mapping, p_oxi, t_oxi)
    if best is None:
        raise no_map
    score, mapping, p_oxi, t_oxi = best
    details = {"map": {a: b for a, b in mapping.items() if a != b}, "radius_mismatch_log": round(float(score), 4),
               "oxidation_states": {b: float(t_oxi[b]) for b in mapping.values()}}
    return mapping, details


def _may_take_charges(p_groups: dict, t_groups: dict, p_oxi: dict) -> bool:
    """A necessary condition for a same-charge map: within each amount group some assignment of target
    elements to prototype sites gives every substituted element a charge it can hold (inside the range of
    all its oxidation states, which bounds any average pymatgen guesses) with a Shannon radius."""
    from pymatgen.core import Element

    def can(a: str, b: str) -> bool:
        q = p_oxi[a]
        if a == b:
            return True
        states = Element(b).oxidation_states
        return bool(states) and min(states) <= q <= max(states) and _radius(b, q) is not None

    return all(any(all(can(a, b) for a, b in zip(p_els, perm)) for perm in itertools.permutations(t_groups[n]))
               for n, p_els in p_groups.items())


def _ionic_volume(structure, oxi: dict) -> float:
    total = 0.0
    for site in structure:
        el = site.specie.symbol
        r = _radius(el, oxi.get(el, 0)) or float(site.specie.atomic_radius or 1.0)
        total += r ** 3
    return total


def substitute(prototype_structure, mapping: dict, p_oxi: dict, t_oxi: dict):
    """Replace species by ``mapping`` and rescale the volume by the ionic-volume ratio."""
    s = prototype_structure.copy()
    s.remove_oxidation_states()
    v_before = _ionic_volume(s, p_oxi)
    s.replace_species({a: b for a, b in mapping.items() if a != b})
    v_after = _ionic_volume(s, t_oxi)
    if v_before > 0 and v_after > 0:
        s.scale_lattice(s.volume * v_after / v_before)
    return s


def too_short_distances(structure, factor: float = MIN_DISTANCE_FACTOR) -> str:
    """'' if every pair is at least ``factor`` × (sum of covalent radii) apart, else the reason
    (``common.geometry``: the rule of atom fusion, at another factor)."""
    from pymatgen.io.ase import AseAtomsAdaptor

    from common.geometry import closest_pair

    atoms = AseAtomsAdaptor.get_atoms(structure)
    ratio, d, pair, _, _ = closest_pair(atoms.numbers, atoms.positions, atoms.cell[:], atoms.pbc, 3.0)
    if not ratio < factor:
        return ""
    return f"too-short distance {pair} {d:.2f} Å (< {factor} x covalent sum {d / ratio:.2f} Å)"


def prototype_structure(proto: str):
    """(name, ordered pymatgen Structure, provenance) for a library name or a file path."""
    from reference.structures import library_names, library_structure, read_structure

    if Path(proto).is_file():
        s, choices = read_structure(proto)
        return Path(proto).name, s, {"source_id": f"file:{Path(proto).resolve()}", "ordering": choices}
    if proto not in library_names():
        library_structure(proto)  # raises the helpful InputError for unknown names
    item = library_structure(proto)
    return item.key, item.structure, dict(item.provenance)


def candidate_structure(formula: str, prototype: str):
    """The substituted, unrelaxed pymatgen Structure of ``formula`` in ``prototype``; InputError if it does not fit."""
    name, proto, _ = prototype_structure(prototype)
    p_formula = proto.composition.reduced_formula
    mapping, details = substitution_map(p_formula, formula)
    p_oxi = _oxidation_states(parse_composition(p_formula))[0]
    t_oxi = details["oxidation_states"]
    s = substitute(proto, mapping, p_oxi, t_oxi)
    if s.composition.reduced_composition != parse_composition(formula):
        raise InputError(f"substituting {name} gave {s.composition.reduced_formula}, not {formula}")
    return s


def formulas_from(source: str | Sequence[str], allowed_only: bool = True) -> list[str]:
    """Formulas from a chemspace Parquet table (``formula`` column, ``allowed`` rows) or a list/CSV text."""
    if isinstance(source, (list, tuple)):
        return [str(f).strip() for f in source if str(f).strip()]
    path = Path(str(source))
    if path.suffix.lower() in (".parquet", ".pq"):
        if not path.is_file():
            raise InputError(f"composition table {path} not found; run `matscreen chemspace enumerate` first")
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception:  # noqa: BLE001
            raise InputError(f"{path} is not a readable Parquet file; give a chemspace composition table") from None
        if "formula" not in table.column_names:
            raise InputError(f"{path} has no 'formula' column; give a chemspace composition table")
        formulas = table.column("formula").to_pylist()
        if allowed_only and "allowed" in table.column_names:
            formulas = [f for f, ok in zip(formulas, table.column("allowed").to_pylist()) if ok]
        return [str(f) for f in formulas]
    return [f.strip() for f in str(source).split(",") if f.strip()]


def propose(formulas: Iterable[str], prototypes: Sequence[str] | None = None, oracle=None,
            relax_steps: int = 200, fmax: float = 0.05, min_distance_factor: float = MIN_DISTANCE_FACTOR,
            max_volume_change: float = MAX_VOLUME_CHANGE) -> list[Candidate]:
    """Candidate records for every formula: one per fitting prototype, or one ``no_prototype`` record.

    ``prototypes``: library names or structure files (default: the whole library).  ``oracle``: an
    :class:`reference.oracles.Oracle` (or None: no relaxation).  Bad formulas give a ``rejected``
    record with the reason instead of stopping the batch.
    """
    from reference.structures import library_names, relax

    protos = [prototype_structure(p) for p in (prototypes or library_names())]
    out: list[Candidate] = []
    for formula in formulas:
        try:
            target = parse_composition(formula)
        except InputError as exc:
            out.append(Candidate(formula=str(formula), prototype=None, status="rejected", reason=str(exc)))
            continue
        fitting = 0
        for name, proto, prov in protos:
            if proto.composition.reduced_composition.anonymized_formula != target.anonymized_formula:
                continue
            try:
                mapping, details = substitution_map(proto.composition.reduced_formula, target.reduced_formula)
            except InputError as exc:
                log.info("%s in %s: %s", formula, name, exc)
                continue
            fitting += 1
            p_oxi = _oxidation_states(proto.composition.reduced_composition)[0]
            s = substitute(proto, mapping, p_oxi, details["oxidation_states"])
            provenance = {"prototype": name, "prototype_source": prov.get("source_id"), **details,
                          "method": "same-charge ionic substitution, ionic-volume rescaling"}
            cand = Candidate(formula=formula_string(target), prototype=name, structure=s, provenance=provenance)
            reason = too_short_distances(s, min_distance_factor)
            if not reason and oracle is not None:
                try:
                    relaxed, info = relax(s, oracle.calculator, oracle.name, fmax=fmax, steps=relax_steps)
                except Exception as exc:  # noqa: BLE001 - oracle failure: record, keep going
                    reason = f"relaxation failed: {type(exc).__name__}: {exc}"[:300]
                else:
                    cand.structure, cand.status = relaxed, "relaxed"
                    cand.provenance["relaxation"] = info
                    if abs(info["volume_change"]) > max_volume_change:
                        reason = (f"volume changed by {100 * info['volume_change']:+.0f} % on relaxation "
                                  f"(limit {100 * max_volume_change:.0f} %)")
                    else:
                        reason = too_short_distances(relaxed, min_distance_factor)
            if reason:
                cand.status, cand.reason = "rejected", reason
            out.append(cand)
        if not fitting:
            out.append(Candidate(formula=formula_string(target), prototype=None, status="no_prototype",
                                 reason=f"no prototype with anonymous formula {target.anonymized_formula} and "
                                        f"matching charges among {', '.join(n for n, _, _ in protos)}"))
    return out


# ------------------------------------------------------------------------------------------------
# a campaign's candidate list
# ------------------------------------------------------------------------------------------------
@dataclass
class CandidateRow:
    """One candidate of a campaign: its structure file (extxyz) or, when it has none, the reason."""
    key: str                                  # file-name-safe, e.g. Li10SnP2S12__Li10GeP2S12
    formula: str
    prototype: str | None
    structure_path: str | None
    reason: str = ""
    known_values: list = field(default_factory=list)   # reference.structures.known_values(formula)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "CandidateRow":
        return cls(**d)


@dataclass
class CandidateSet:
    rows: list[CandidateRow]
    skipped_known: list[str] = field(default_factory=list)   # enumerated, known, left out (include_known false)

    def to_dict(self) -> dict:
        return {"rows": [r.to_dict() for r in self.rows], "skipped_known": list(self.skipped_known)}

    @classmethod
    def from_dict(cls, d: dict) -> "CandidateSet":
        return cls([CandidateRow.from_dict(r) for r in d["rows"]], list(d.get("skipped_known", [])))


@dataclass(frozen=True)
class SpaceSpec:
    """The chemical space candidates are enumerated from (``chemspace``; the campaign spec's ``space``)."""
    elements: tuple[str, ...] = param(("Li", "Ge", "Si", "Sn", "P", "S"), "elements the compositions are drawn from")
    require: tuple[str, ...] = param(("Li", "S"), "elements every composition must contain")
    arity_min: int = param(3, "fewest distinct elements per composition", gt=0)
    arity_max: int = param(4, "most distinct elements per composition", gt=0)
    max_stoichiometry: int = param(12, "largest integer amount of one element in a formula unit", gt=0)
    charge_neutral: bool = param(True, "keep only charge-balanced compositions (SMACT oxidation states)")
    electronegativity: bool = param(True, "apply SMACT's Pauling electronegativity test")

    def __post_init__(self):
        check_fields(self)
        if self.arity_min > self.arity_max:
            raise InputError("arity_min: must not exceed arity_max")


@dataclass(frozen=True)
class CandidateConfig:
    """Which candidates :func:`generate_candidates` proposes (besides the prototypes and the space)."""
    formulas: tuple[str, ...] = param((), "explicit formulas to screen; empty = enumerate from the space")
    structures: dict = param(help="formula -> CIF/POSCAR path that gives its structure directly", factory=dict)
    max_candidates: int = param(3, "most candidates taken", gt=0)
    max_atoms: int = param(64, "largest simulation cell accepted for a candidate (atoms)", gt=0)
    include_known: bool = param(True, "also screen enumerated compositions already known; false: only unknown "
                                "ones (the known ones skipped are counted)")
    known: str | None = param(None, "known formulas for include_known: a CSV/Parquet file with a formula column, "
                              "or 'mp' (Materials Project); null = chemspace's bundled Li-thiophosphate file")

    def __post_init__(self):
        check_fields(self)
        for name, path in self.structures.items():
            if not isinstance(path, str):
                raise InputError(f"structures.{name}: expected a file path string, got {path!r}")

    def keywords(self) -> dict:
        """:func:`generate_candidates` keywords of this config (a subclass's own fields left out)."""
        return {f.name: getattr(self, f.name) for f in fields(CandidateConfig)}


def candidate_key(formula: str, prototype: str | None) -> str:
    """Stable, file-name-safe key of a candidate, e.g. ``Li10SnP2S12__Li10GeP2S12``."""
    import re

    key = f"{formula}__{prototype}" if prototype else formula
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


def enumerated_formulas(space: SpaceSpec, prototypes: Sequence[str], known: str | None, include_known: bool,
                        limit: int) -> tuple[list[str], list[str]]:
    """Allowed compositions of ``space`` whose anonymous formula fits a prototype: (to screen, skipped known).

    ``known``: a known-formulas file or ``mp`` (``chemspace``'s labels; default its bundled file).
    """
    import chemspace
    from chemspace.known import bundled_known

    table = chemspace.enumerate_compositions(
        list(space.elements), arity=list(range(space.arity_min, space.arity_max + 1)),
        must_contain=list(space.require) or None, max_stoich=space.max_stoichiometry,
        include_disallowed=not (space.charge_neutral or space.electronegativity))
    protos = [prototype_structure(p)[1].composition.reduced_composition for p in prototypes]
    shapes = {c.anonymized_formula for c in protos}
    amounts = {tuple(sorted(int(v) for v in c.values())) for c in protos} | {None}   # None: not plain, ask pymatgen
    keep = [i for i, f in enumerate(table.column("formula").to_pylist())
            if _amounts_shape(f) in amounts and parse_composition(f).anonymized_formula in shapes]
    table = table.take(keep)
    if not include_known:
        table = chemspace.label(table, known or str(bundled_known()))
    formulas, skipped = [], []
    for f, is_known in zip(table.column("formula").to_pylist(),
                           table.column("known").to_pylist() if not include_known else [False] * table.num_rows):
        (skipped if is_known else formulas).append(f)
    return sorted(set(formulas))[:limit], sorted(set(skipped))


def generate_candidates(out_dir, formulas: Sequence[str] = (), structures: dict | None = None,
                        prototypes: Sequence[str] = ("Li10GeP2S12",), space: SpaceSpec | None = None,
                        max_candidates: int = 3, max_atoms: int = 64, include_known: bool = True,
                        known: str | None = None) -> CandidateSet:
    """A campaign's candidates, each structure written to ``out_dir/<key>/structure.extxyz``.

    Explicit ``formulas`` (with ``structures`` files read by :func:`reference.structures.read_structure`)
    come first and are always screened; without them the ``space`` is enumerated (``chemspace``), only
    compositions with a prototype's anonymous formula are tried, and with ``include_known=False`` the
    known ones are left out and listed in ``skipped_known``.  Every prototype must resolve (InputError
    naming ``prototypes[i]`` otherwise).  A formula without a structure is kept with the reason.
    """
    from reference.structures import known_values, read_structure, write_structure

    for i, proto in enumerate(prototypes):
        try:
            prototype_structure(proto)
        except InputError as exc:
            raise InputError(f"prototypes[{i}]: {exc}") from None
    structures = dict(structures or {})
    formulas = list(formulas) or list(structures)
    skipped: list[str] = []
    enumerated = not formulas
    if enumerated:
        if space is None:
            raise InputError("candidates.formulas is empty and no space is given; list formulas or give a space")
        formulas, skipped = enumerated_formulas(space, prototypes, known, include_known, 30 * max_candidates)
    rows: list[CandidateRow] = []
    for formula in formulas:
        if len(rows) >= max_candidates:
            break
        structure, prototype, why = None, None, ""
        if formula in structures:
            structure, _ = read_structure(structures[formula])
            prototype = Path(structures[formula]).stem
        else:
            fits = propose([formula], prototypes)
            good = [c for c in fits if c.structure is not None and c.status != "rejected"]
            if good:
                structure, prototype = good[0].structure, good[0].prototype
            else:
                why = "; ".join(c.reason for c in fits if c.reason) or f"no prototype of {list(prototypes)} fits {formula}"
        if enumerated and structure is None:
            continue
        row = CandidateRow(candidate_key(formula, prototype), formula, prototype, None, why, known_values(formula))
        if structure is not None:
            if len(structure) > max_atoms:
                row.reason = f"{len(structure)} atoms exceed candidates.max_atoms={max_atoms}"
            else:
                row.structure_path = write_structure(structure, Path(out_dir) / row.key / "structure.extxyz")
        rows.append(row)
    return CandidateSet(rows, skipped)
