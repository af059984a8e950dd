"""`matscreen chemspace ...` and `matscreen demo` end to end, including bad input (exit 2, one line)."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from orchestrator.cli import main


def test_count_json_contract(capsys, shared_data):
    assert main(["chemspace", "count", "--arity", "2", "--json",
                 "--known", str(shared_data / "known" / "mp_binary_formulas.csv")]) == 0
    line = capsys.readouterr().out.strip().splitlines()
    assert len(line) == 1
    out = json.loads(line[0])
    assert list(out) == ["arity", "unique", "allowed", "seconds", "categories"]
    assert (out["arity"], out["unique"], out["allowed"]) == (2, 225879, 13464)
    assert list(out["categories"]) == ["standard", "missing", "interesting", "unlikely"]


def test_enumerate_label_map(tmp_path, capsys, shared_data):
    table = tmp_path / "t.parquet"
    assert main(["chemspace", "enumerate", "--elements", "Li,Ge,P,S,Se", "--must-contain", "Li", "--anions", "S,Se",
                 "--arity", "2-4", "--out", str(table), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = pq.read_table(table).to_pylist()
    assert summary["rows"] == len(rows) > 0
    for r in rows:
        assert "Li" in r["elements"] and ({"S", "Se"} & set(r["elements"]))
        for q in r["oxidation_states"]:  # only S/Se negative, neutral
            assert all((qi < 0) == (e in ("S", "Se")) for e, qi in zip(r["elements"], q))
            assert sum(n * qi for n, qi in zip(r["amounts"], q)) == 0
    assert "Li3S4P1" not in {r["key"] for r in rows}  # key order is Z: Li3P1S4
    assert "Li3P1S4" in {r["key"] for r in rows}
    assert main(["chemspace", "label", str(table), "--known",
                 str(shared_data / "known" / "mp_binary_formulas.csv"), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["standard"] >= 2 and counts["interesting"] == counts["unlikely"] == 0  # Li2S, Li2Se known


def _bad(args, capsys, tmp_path):
    before = set(tmp_path.rglob("*"))
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("matscreen: error: ") and "\n" not in err, err
    assert set(tmp_path.rglob("*")) == before  # nothing written, not even a temp file
    return err


@pytest.mark.parametrize("extra,match", [
    (["--elements", "Li,Xx,S"], "unknown element symbol 'Xx'"),
    (["--elements", "Li,S", "--must-contain", "Qq"], "unknown element symbol 'Qq'"),
    (["--elements", "Li,S", "--arity", "1"], "arity must be at least 2"),
    (["--elements", "Li,S", "--arity", "2", "--max-stoich", "0"], "max stoichiometry must be at least 1"),
    (["--elements", " , ", "--arity", "2"], "empty element pool"),
    (["--elements", "Li,S", "--arity", "2", "--oxidation-states", "nonsense"], "unknown oxidation-state set"),
])
def test_enumerate_bad_input(tmp_path, capsys, extra, match):
    err = _bad(["chemspace", "enumerate", *extra, "--out", str(tmp_path / "x.parquet")], capsys, tmp_path)
    assert match in err


def test_count_bad_input(tmp_path, capsys):
    assert "arity must be at least 2" in _bad(["chemspace", "count", "--arity", "1"], capsys, tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("formula\nLi2S\nNotAFormula!!\n")
    err = _bad(["chemspace", "count", "--arity", "2", "--known", str(bad)], capsys, tmp_path)
    assert "NotAFormula" in err


def test_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = _bad(["chemspace", "enumerate", "--elements", "Li,S", "--arity", "2", "--out", str(blocker / "x.parquet")],
               capsys, tmp_path)
    assert "output directory" in err


def test_label_bad_inputs(tmp_path, capsys, monkeypatch):
    table = tmp_path / "t.parquet"
    assert main(["chemspace", "enumerate", "--elements", "Li,S", "--arity", "2", "--out", str(table)]) == 0
    capsys.readouterr()
    original = table.read_bytes()
    bad = tmp_path / "known.csv"
    bad.write_text("name\tx\nLi2S\t1\n")
    assert "cannot parse formula" in _bad(["chemspace", "label", str(table), "--known", str(bad)], capsys, tmp_path)
    monkeypatch.delenv("MP_API_KEY", raising=False)
    err = _bad(["chemspace", "label", str(table), "--known", "mp", "--cache-dir", str(tmp_path / "cache")],
               capsys, tmp_path)
    assert "MP_API_KEY" in err
    assert table.read_bytes() == original  # the table was not touched


def test_help_texts(capsys):
    for args in (["chemspace", "--help"], ["chemspace", "enumerate", "--help"], ["demo", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--must-contain" in out and "Li-{Ge,Si,Sn}-P-{S,Se}" in out


def test_demo(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--methods", "pca,tsne,umap", "--per-category", "15"]) == 0
    printed = capsys.readouterr().out
    for name in ("compositions.parquet", "candidates.parquet", "map_magpie.parquet", "map_magpie_pca.png",
                 "map_magpie_tsne.png", "map_magpie_umap.png", "summary.json"):
        assert (out / name).is_file() and str(out / name) in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["categories"]["standard"] > 0 and summary["candidates"] > 0
    comp = pq.read_table(out / "compositions.parquet")
    std = {r["formula"] for r in comp.to_pylist() if r["category"] == "standard"}
    assert {"Li3PS4", "Li2S", "Li4GeS4"} <= std
