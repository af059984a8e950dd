"""Structure library vs the shared CIFs, user structure readers, partial-occupancy handling."""
from __future__ import annotations

import logging

import pytest
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from common import InputError
from orchestrator.cli import main
from reference.structures import build_disordered, get_structure, library_names, library_structure, read_structure

CIFS = {
    "Li10GeP2S12": ("Li10GeP2S12_mp-696138.cif", None),           # DFT-relaxed P1 cell: lattice only ~3 %
    "Li10SnP2S12": ("Li10SnP2S12_obelix-9lx.cif", "P4_2/nmc"),
    "Li3PS4": ("beta-Li3PS4_icsd-180319_obelix-nhq.cif", "Pnma"),
    "Li4GeS4": ("Li4GeS4_icsd-92200_obelix-e6b.cif", "Pnma"),
    "Li7P3S11": ("Li7P3S11_obelix-mdp.cif", "P-1"),
    "Li6PS5Cl": ("Li6PS5Cl_obelix-122.cif", "F-43m"),
}


def test_library_has_the_six_structures_with_provenance():
    assert set(CIFS) <= set(library_names())
    for name in CIFS:
        item = library_structure(name)
        assert item.structure.is_ordered
        for key in ("source_id", "reference", "licence"):
            assert item.provenance[key]


@pytest.mark.parametrize("name", list(CIFS))
def test_library_matches_shared_cif(name, shared_data):
    fname, spacegroup = CIFS[name]
    ref = Structure.from_file(shared_data / "structures" / fname)
    item = library_structure(name)
    ordered = item.structure
    # composition: the ordered library cell holds exactly the CIF's (rounded) cell content
    ref_counts = {el.symbol: round(n) for el, n in ref.composition.element_composition.items()}
    assert {el.symbol: n for el, n in ordered.composition.items()} == ref_counts
    assert ordered.composition.reduced_formula == ref.composition.reduced_formula
    # lattice: same cell lengths (within 4 %; the mp cell is DFT-relaxed and slightly distorted)
    for a, b in zip(sorted(ordered.lattice.abc), sorted(ref.lattice.abc)):
        assert abs(a / b - 1) < 0.04, (name, ordered.lattice.abc, ref.lattice.abc)
    # space group of the published (disordered) structure
    if spacegroup:
        assert SpacegroupAnalyzer(build_disordered(name), symprec=0.01).get_space_group_symbol() == spacegroup
        assert SpacegroupAnalyzer(ref, symprec=0.05).get_space_group_symbol() == spacegroup
    if name == "Li7P3S11":  # ordered in both: same structure, not just the same cell
        from pymatgen.analysis.structure_matcher import StructureMatcher

        assert StructureMatcher(ltol=0.05, stol=0.1, angle_tol=2).fit(ordered, ref)


def test_li4ges4_half_occupied_site_gives_right_li_count(shared_data, caplog):
    """Rounding 0.5 occupancies down would give Li12; the ordering must keep Li16Ge4S16."""
    with caplog.at_level(logging.WARNING):
        s, choices = read_structure(shared_data / "structures" / "Li4GeS4_icsd-92200_obelix-e6b.cif")
    assert s.is_ordered
    assert s.composition.as_dict() == {"Li": 16.0, "Ge": 4.0, "S": 16.0}
    assert any("Li 4.00 -> 4" in c for c in choices)
    assert "ordering choice" in caplog.text          # logged, not silent


def test_partial_occupancy_cif_ordered_deterministically(shared_data):
    path = shared_data / "structures" / "beta-Li3PS4_icsd-180319_obelix-nhq.cif"
    a, ca = read_structure(path)
    b, cb = read_structure(path)
    assert a == b and ca == cb
    assert a.composition.reduced_formula == "Li3PS4" and len(a) == 32


def test_partial_occupancy_refused_with_reason(tmp_path, shared_data):
    text = (shared_data / "structures" / "beta-Li3PS4_icsd-180319_obelix-nhq.cif").read_text()
    # 8d Li site fully occupied -> 0.9: 7.2 Li atoms are not a whole number in this cell
    bad = text.replace("0.93567161  1.0", "0.93567161  0.9")
    path = tmp_path / "bad.cif"
    path.write_text(bad)
    with pytest.raises(InputError, match="not a whole number|net charge|not charge balanced"):
        read_structure(path)
    with pytest.raises(InputError, match="partial occupancies"):
        read_structure(shared_data / "structures" / "Li4GeS4_icsd-92200_obelix-e6b.cif", order=False)


def test_poscar_and_extxyz_readers(tmp_path, lgps_atoms):
    from ase.io import write

    write(tmp_path / "POSCAR", lgps_atoms, format="vasp")
    write(tmp_path / "lgps.extxyz", lgps_atoms, format="extxyz")
    for p in (tmp_path / "POSCAR", tmp_path / "lgps.extxyz"):
        s, choices = read_structure(p)
        assert len(s) == 50 and choices == []
        assert s.composition.reduced_formula == "Li10Ge(PS6)2"


def test_bad_structure_files(tmp_path):
    broken = tmp_path / "broken.cif"
    broken.write_text("data_x\n_cell_length_a 5\nloop_\n_atom_site_label\n")
    with pytest.raises(InputError):
        read_structure(broken)
    with pytest.raises(InputError, match="not found"):
        read_structure(tmp_path / "missing.cif")
    with pytest.raises(InputError, match="unknown library structure"):
        get_structure("Li99Xx")


def test_mp_without_key_is_input_error(monkeypatch, tmp_path):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    monkeypatch.setenv("MATSCREEN_CACHE", str(tmp_path))
    with pytest.raises(InputError, match="MP_API_KEY"):
        get_structure("mp-696138")


def test_cli_structures_list_and_show(tmp_path, capsys):
    assert main(["structures", "list", "--json"]) == 0
    assert "Li6PS5Cl" in capsys.readouterr().out
    out = tmp_path / "lgps.cif"
    assert main(["structures", "show", "Li10GeP2S12", "--out", str(out), "--json"]) == 0
    assert Structure.from_file(out).composition.reduced_formula == "Li10Ge(PS6)2"
    assert main(["structures", "show", "NoSuchThing"]) == 2
    assert "unknown library structure" in capsys.readouterr().err


def test_near_full_occupancies_rounded_with_logged_choice(shared_data):
    """gamma-Li3PS4 has S sites at 0.97-0.99: 7.82 S -> 8 (charge balanced), logged, not silent."""
    s, choices = read_structure(shared_data / "structures" / "gamma-Li3PS4_icsd-180318_obelix-joc.cif")
    assert s.is_ordered and s.composition.as_dict() == {"Li": 6.0, "P": 2.0, "S": 8.0}
    assert any("S 3.88 -> 4" in c for c in choices)
