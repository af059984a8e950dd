"""Candidate structures by ionic substitution into the three reference structures (and the rest)."""
from __future__ import annotations

import json

import pytest

from common import InputError
from orchestrator.cli import main
from reference import candidate_structure
from reference.candidates import formulas_from, propose, substitution_map, too_short_distances

EXPECTED = {
    "Li10GeP2S12": {"Li10SiP2S12": {"Ge": "Si"}, "Li10SnP2S12": {"Ge": "Sn"}},
    "Li3PS4": {"Li3PSe4": {"S": "Se"}, "Li3AsS4": {"P": "As"}},
    "Li4GeS4": {"Li4SiS4": {"Ge": "Si"}, "Li4SnS4": {"Ge": "Sn"}},
}


@pytest.mark.parametrize("prototype", list(EXPECTED))
def test_substitution_on_reference_structures(prototype):
    for formula, mapping in EXPECTED[prototype].items():
        m, details = substitution_map(prototype, formula)
        assert details["map"] == mapping
        s = candidate_structure(formula, prototype)
        from pymatgen.core import Composition

        assert s.composition.reduced_composition == Composition(formula).reduced_composition
        assert too_short_distances(s) == ""


def test_volume_follows_ionic_size():
    lgps = candidate_structure("Li10GeP2S12", "Li10GeP2S12")
    si = candidate_structure("Li10SiP2S12", "Li10GeP2S12")
    sn = candidate_structure("Li10SnP2S12", "Li10GeP2S12")
    assert si.volume < lgps.volume < sn.volume
    se = candidate_structure("Li3PSe4", "Li3PS4")
    assert se.volume > candidate_structure("Li3PS4", "Li3PS4").volume * 1.1


def test_charge_rule_keeps_li_and_s_apart_in_li4ges4():
    """Li4GeS4 has Li and S both 4 per formula: the map must follow charge, not just amount."""
    m, _ = substitution_map("Li4GeS4", "Li4SnSe4")
    assert m == {"Li": "Li", "Ge": "Sn", "S": "Se"}
    with pytest.raises(InputError, match="no same-charge"):
        substitution_map("Li3PS4", "Li3BN4")  # B+5 does not exist: no charge-consistent map


def test_propose_reports_no_prototype_and_bad_formulas():
    cands = propose(["Li10SiP2S12", "Li2S", "Xx2", "Li4SnS4"], prototypes=["Li10GeP2S12", "Li4GeS4"])
    by = {(c.formula, c.prototype): c for c in cands}
    assert by[("Li10SiP2S12", "Li10GeP2S12")].status == "proposed"
    assert by[("Li4SnS4", "Li4GeS4")].provenance["map"] == {"Ge": "Sn"}
    assert by[("Li2S", None)].status == "no_prototype" and "AB2" in by[("Li2S", None)].reason
    bad = [c for c in cands if c.formula == "Xx2"]
    assert bad and bad[0].status == "rejected" and "unknown elements" in bad[0].reason


def test_too_short_distance_rejected():
    s = candidate_structure("Li4SiS4", "Li4GeS4")
    s.translate_sites([0], s[1].frac_coords - s[0].frac_coords + 0.01)  # put atom 0 nearly on atom 1
    assert "too-short distance" in too_short_distances(s)


def test_formulas_from_chemspace_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"formula": ["Li10SiP2S12", "Li3AsS4", "LiS8"], "allowed": [True, True, False]})
    pq.write_table(table, tmp_path / "space.parquet")
    assert formulas_from(str(tmp_path / "space.parquet")) == ["Li10SiP2S12", "Li3AsS4"]
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="Parquet"):
        formulas_from(str(tmp_path / "x.parquet"))


def test_cli_candidates(tmp_path, capsys):
    out = tmp_path / "cands"
    rc = main(["candidates", "Li3PSe4", "Li2S", "--prototypes", "Li3PS4", "--out-dir", str(out), "--json"])
    assert rc == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in records] == ["proposed", "no_prototype"]
    saved = json.loads((out / "candidates.json").read_text())
    assert saved[0]["cif"].endswith("Li3PSe4__Li3PS4.cif")
    assert main(["candidates"]) == 2
    assert "no compositions given" in capsys.readouterr().err
    assert main(["candidates", "Li3PS4", "--prototypes", "NoSuchProto"]) == 2


def test_relaxation_failure_is_a_recorded_rejection(tmp_path, monkeypatch):
    """EMT has no Li/P/S parameters: the oracle error becomes the candidate's reason, not a crash."""
    from reference.oracles import Oracle

    monkeypatch.setenv("MATSCREEN_CACHE", str(tmp_path))
    (cand,) = propose(["Li3PSe4"], prototypes=["Li3PS4"], oracle=Oracle("emt"))
    assert cand.status == "rejected" and cand.reason.startswith("relaxation failed")


def test_package_level_api_used_by_the_campaign():
    import reference

    s = reference.library_structure("Li4GeS4")
    assert s.composition.reduced_formula == "Li4GeS4" and s.is_ordered
    assert reference.candidate_structure("Li4SnS4", "Li4GeS4").composition.reduced_formula == "Li4SnS4"
    with pytest.raises(ValueError):
        reference.candidate_structure("Li2S", "Li10GeP2S12")


def test_cli_unknown_element_is_bad_input(capsys):
    from orchestrator.cli import main

    assert main(["candidates", "Li10SiP2S12", "Xx2O"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown element Xx" in err[0]


def test_charge_balance_alone_never_puts_an_exotic_ion_on_a_site(tmp_path):
    """Li10GeP12S2 is charge balanced only with P2- and S5+ (no such ions: no Shannon radius); it must not take
    the LGPS sites with P and S swapped.  Enumerating Li-{Ge,Si,Sn}-P-S on the LGPS prototype gives the three
    LGPS-type thiophosphates, with LGPS's measured conductivity attached."""
    from reference.candidates import SpaceSpec, generate_candidates, substitution_map

    with pytest.raises(InputError, match="no same-charge element map"):
        substitution_map("Li10GeP2S12", "Li10GeP12S2")
    out = generate_candidates(tmp_path, space=SpaceSpec(elements=("Li", "Ge", "Si", "Sn", "P", "S"),
                                                        require=("Li", "P", "S"), arity_min=4, arity_max=4),
                              max_candidates=5)
    assert [r.formula for r in out.rows] == ["Li10GeP2S12", "Li10SiP2S12", "Li10SnP2S12"]
    known = out.rows[0].known_values
    assert known[0]["value"] == 12.0 and "Kamaya" in known[0]["source"]
