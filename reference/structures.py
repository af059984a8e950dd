"""Crystal structures: the built-in library, user files, the Materials Project; relaxation cached.

Library entries (``reference/library.json``) hold published crystallographic data: space group,
lattice (Å, degrees) and Wyckoff sites with occupancies, plus provenance (source id, reference,
licence).  Disordered entries are ordered deterministically by :mod:`reference.ordering`; the
choices made are kept in ``LibraryStructure.ordering``.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from common.atomic import atomic_write_text
from common.errors import InputError
from reference.cache import cache_dir, cache_key

log = logging.getLogger(__name__)
LIBRARY_FILE = Path(__file__).with_name("library.json")


@dataclass
class LibraryStructure:
    """One library entry, ordered.  ``structure`` is a pymatgen Structure (Å)."""
    key: str
    name: str
    spacegroup: str
    structure: object
    provenance: dict
    ordering: list[str] = field(default_factory=list)
    disordered: object = None     # the partially occupied structure as published

    def summary(self) -> dict:
        s = self.structure
        return {"key": self.key, "name": self.name, "formula": s.composition.reduced_formula,
                "spacegroup": self.spacegroup, "n_atoms": len(s),
                "lattice_A": [round(x, 4) for x in s.lattice.abc],
                "angles_deg": [round(x, 3) for x in s.lattice.angles],
                "volume_A3": round(s.volume, 3), "ordering": self.ordering, **self.provenance}


@lru_cache(maxsize=1)
def _library_data() -> dict:
    data = json.loads(LIBRARY_FILE.read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def library_names() -> list[str]:
    """Keys of the built-in library (reduced formulas, e.g. ``Li10GeP2S12``)."""
    return list(_library_data())


def known_values(formula: str) -> list[dict]:
    """Published transport numbers of a composition (experiment, published AIMD), each with its source:
    ``[{"quantity", "value", "temperature_K"?, "method", "source"}]``; [] when the library has none."""
    from pymatgen.core import Composition

    try:
        reduced = Composition(formula).reduced_formula
    except Exception:  # noqa: BLE001 - not a formula: nothing known
        return []
    for key, entry in _library_data().items():
        if Composition(key).reduced_formula == reduced:
            return [dict(v) for v in entry.get("known_values", [])]
    return []


def known_log10_sigma(values: list[dict], method: str | None = None) -> tuple[float | None, str]:
    """log10 of a known 300 K conductivity (mS/cm) in ``values`` (:func:`known_values`) and its source;
    ``method`` (``experiment``, ``AIMD``) picks one kind, None the first; (None, "") when there is none."""
    import math

    for v in values or []:
        if v.get("quantity") == "conductivity_mS_cm" and abs(float(v.get("temperature_K", 0)) - 300.0) < 1 \
                and v["value"] > 0 and (method is None or v.get("method") == method):
            return math.log10(v["value"]), f"{v.get('method', '')}: {v.get('source', '')}".strip(": ")
    return None, ""


def _resolve_key(name: str) -> str:
    data = _library_data()
    if name in data:
        return name
    for k, v in data.items():
        if name.lower() in (k.lower(), v["name"].lower()):
            return k
    raise InputError(f"unknown library structure {name!r}; choose one of {', '.join(data)} "
                     "(see `matscreen structures list`) or give a CIF/POSCAR/extxyz path")


def build_disordered(name: str):
    """The published (possibly partially occupied) structure of library entry ``name``."""
    from pymatgen.core import Lattice, Structure

    entry = _library_data()[_resolve_key(name)]
    L = entry["lattice"]
    lattice = Lattice.from_parameters(L["a"], L["b"], L["c"], L["alpha"], L["beta"], L["gamma"])
    return Structure.from_spacegroup(entry["spacegroup"], lattice, [s["species"] for s in entry["sites"]],
                                     [s["xyz"] for s in entry["sites"]], tol=1e-3)


@lru_cache(maxsize=None)
def _library_cached(key: str) -> LibraryStructure:
    from reference.ordering import order_structure

    entry = _library_data()[key]
    disordered = build_disordered(key)
    ordered, choices = order_structure(disordered, entry.get("oxidation_states"))
    return LibraryStructure(key=key, name=entry["name"], spacegroup=entry["spacegroup"], structure=ordered,
                            provenance=dict(entry["provenance"]), ordering=choices, disordered=disordered)


def library_structure(name: str) -> LibraryStructure:
    """The ordered (unrelaxed) library structure ``name`` (a copy: safe to modify)."""
    item = _library_cached(_resolve_key(name))
    return LibraryStructure(key=item.key, name=item.name, spacegroup=item.spacegroup,
                            structure=item.structure.copy(), provenance=dict(item.provenance),
                            ordering=list(item.ordering), disordered=item.disordered)


# ------------------------------------------------------------------------------------------------
# user files
# ------------------------------------------------------------------------------------------------
def read_structure(path: str | os.PathLike, order: bool = True):
    """A pymatgen Structure from a CIF, POSCAR/CONTCAR or extxyz file (first frame).

    Partially occupied structures are ordered with logged choices (``order=True``) or refused with
    the reason; they are never silently rounded.  Returns (structure, ordering choices).
    """
    from pymatgen.core import Structure

    path = Path(path)
    if not path.is_file():
        raise InputError(f"structure file {path} not found; give an existing CIF/POSCAR/extxyz path")
    name = path.name.lower()
    try:
        if name.endswith((".xyz", ".extxyz")):
            from ase.io import read
            from pymatgen.io.ase import AseAtomsAdaptor

            structure = AseAtomsAdaptor.get_structure(read(path, 0, format="extxyz"))
        elif name.endswith(".cif"):
            from pymatgen.io.cif import CifParser

            parser = CifParser(path, occupancy_tolerance=1.0, site_tolerance=1e-3)
            structures = parser.parse_structures(primitive=False)
            if not structures:
                raise ValueError("no structure in file")
            structure = structures[0]
        else:
            structure = Structure.from_file(path)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure is bad input
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read structure {path}: {msg[:160]}; give a valid CIF, POSCAR or extxyz file") from None
    if len(structure) == 0:
        raise InputError(f"structure file {path} has no atoms; check the file")
    choices: list[str] = []
    if not structure.is_ordered:
        if not order:
            bad = sorted({s.species_string for s in structure if not s.is_ordered})
            raise InputError(f"{path} has partial occupancies ({', '.join(bad)}); order it (matscreen structures "
                             "show --order) or supply an ordered cell")
        from reference.ordering import order_structure

        try:
            structure, choices = order_structure(structure)
        except InputError as exc:
            raise InputError(f"{path}: cannot order partial occupancies: {exc}") from None
        for c in choices:
            log.warning("%s: ordering choice: %s", path.name, c)
    return structure, choices


def structure_atoms(path: str | os.PathLike):
    """The structure of a file as ``ase.Atoms`` (through :func:`read_structure`: ordered, checked)."""
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_atoms(read_structure(path)[0])


def write_structure(structure, path: str | os.PathLike) -> str:
    """Write a pymatgen Structure (or ase.Atoms) as extended XYZ, atomically; what :func:`structure_atoms` reads back."""
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    from common.atomic import atomic_path

    atoms = structure if hasattr(structure, "get_positions") else AseAtomsAdaptor.get_atoms(structure)
    with atomic_path(path) as tmp:
        write(tmp, atoms, format="extxyz")
    return str(path)


def get_structure(source: str, order: bool = True):
    """Resolve ``source``: a library name, ``library:<name>``, ``mp-<id>`` or a file path.

    Returns (pymatgen Structure, provenance dict).
    """
    src = str(source)
    if src.startswith("library:"):
        src = src.split(":", 1)[1]
    if src.startswith("mp-") and not Path(src).exists():
        return materials_project_structure(src), {"source_id": src, "reference": "Materials Project",
                                                  "licence": "CC BY 4.0"}
    if Path(src).exists() or any(src.lower().endswith(e) for e in (".cif", ".xyz", ".extxyz", "poscar", "contcar", ".vasp")):
        structure, choices = read_structure(src, order=order)
        return structure, {"source_id": f"file:{Path(src).resolve()}", "ordering": choices}
    item = library_structure(src)
    return item.structure, {**item.provenance, "ordering": item.ordering}


# ------------------------------------------------------------------------------------------------
# Materials Project
# ------------------------------------------------------------------------------------------------
def materials_project_structure(material_id: str):
    """The structure of ``material_id`` from the Materials Project (needs MP_API_KEY; cached on disk).

    The key is read from the environment only; it is never logged or written anywhere.
    """
    from pymatgen.core import Structure

    target = cache_dir("mp") / f"{material_id}.json"
    if target.is_file():
        return Structure.from_dict(json.loads(target.read_text()))
    key = os.environ.get("MP_API_KEY")
    if not key:
        raise InputError(f"{material_id} is not cached and MP_API_KEY is not set; export MP_API_KEY or give a CIF path")
    try:
        from mp_api.client import MPRester

        with MPRester(key) as mpr:
            structure = mpr.get_structure_by_material_id(material_id)
    except Exception as exc:  # noqa: BLE001 - never echo the request (it may carry the key)
        raise InputError(f"Materials Project request for {material_id} failed ({type(exc).__name__}); "
                         "check the id, the network and MP_API_KEY") from None
    atomic_write_text(target, json.dumps(structure.as_dict()))
    return structure


# ------------------------------------------------------------------------------------------------
# relaxation (cached)
# ------------------------------------------------------------------------------------------------
def relax(structure, calculator, oracle_name: str, fmax: float = 0.05, steps: int = 200,
          relax_cell: bool = True, cache: bool = True):
    """Relax ``structure`` (pymatgen) with an ASE ``calculator``; result cached by input + oracle.

    Positions and (with ``relax_cell``) the cell are optimised with FIRE until max force < ``fmax``
    eV/Å or ``steps``.  Returns (relaxed Structure, info dict: energy_eV, fmax_eV_A, steps, converged,
    volume_change).
    """
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    key = cache_key(structure.as_dict(), oracle_name, fmax, steps, relax_cell)
    target = cache_dir("relaxed") / f"{key}.json"
    if cache and target.is_file():
        data = json.loads(target.read_text())
        return Structure.from_dict(data["structure"]), data["info"]
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = calculator
    v0 = atoms.get_volume()
    obj = FrechetCellFilter(atoms) if relax_cell else atoms
    opt = FIRE(obj, logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    forces = atoms.get_forces()
    info = {"energy_eV": float(atoms.get_potential_energy()), "fmax_eV_A": float((forces ** 2).sum(1).max() ** 0.5),
            "steps": int(opt.get_number_of_steps()), "converged": converged,
            "volume_change": float(atoms.get_volume() / v0 - 1.0), "oracle": oracle_name}
    atoms.calc = None
    relaxed = AseAtomsAdaptor.get_structure(atoms)
    if cache:
        atomic_write_text(target, json.dumps({"structure": relaxed.as_dict(), "info": info}))
    return relaxed, info


def relaxed_library_structure(name: str, oracle, fmax: float = 0.05, steps: int = 300):
    """Library structure ``name`` relaxed with ``oracle`` (a reference.oracles.Oracle); cached on disk.

    Returns (relaxed Structure, relaxation info dict).
    """
    item = library_structure(name)
    return relax(item.structure, oracle.calculator, oracle.name, fmax=fmax, steps=steps)
