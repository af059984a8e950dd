"""Known/unknown labels joined on canonical composition keys; categories; embeddings; maps."""
from __future__ import annotations

import json

import numpy as np
import pytest

from chemspace import enumerate_compositions, label, space_categories
from chemspace.composition import canonical_formula, formula_key, parse_key
from chemspace.embeddings import element_matrix, embed
from chemspace.known import known_keys
from chemspace.materials_project import MPKnown
from common import InputError


def test_canonical_key_ignores_order_and_multiples():
    assert formula_key("SLi2") == formula_key("Li2S") == formula_key("Li4S2") == "Li2S1"
    assert formula_key("O3Al2") == formula_key("Al2O3") == "O3Al2"  # Z order: O (8) before Al (13)
    assert formula_key("Li0.5Co0.5O1") == "Li1O2Co1"
    assert parse_key("Li10Ge1P2S12") == (("Li", "Ge", "P", "S"), (10, 1, 2, 12))
    assert canonical_formula(("Li", "Ge", "P", "S"), (10, 1, 2, 12)) == "Li10GeP2S12"


def test_shared_csv_old_ordering_joins_on_keys(shared_data):
    path = shared_data / "known" / "mp_binary_formulas.csv"
    keys = known_keys(path)
    assert len(keys) == 10220  # every formula is a distinct composition
    # the file writes formulas in an older pymatgen order; strings differ from ours, keys agree
    formulas = path.read_text().split()[1:]
    table = enumerate_compositions("Li,O,S,Se,Ge", arity=2, include_disallowed=True)
    ours = dict(zip(table.column("key").to_pylist(), table.column("formula").to_pylist()))
    theirs = {formula_key(f): f for f in formulas}
    differing = [k for k in ours if k in theirs and ours[k] != theirs[k]]
    assert differing, "expected at least one formula written in another element order"
    labelled = label(table, keys)
    got = {r["key"]: r["known"] for r in labelled.select(["key", "known"]).to_pylist()}
    for k in differing:
        assert got[k] is True
    assert got["Li2S1"] and got["Li2O1"]


def test_categories_of_a_table(tmp_path):
    known = tmp_path / "known.csv"
    known.write_text("formula\nSLi2\nLi2S2\nO2Fe3\nLiFeO2\n")  # Li2S (allowed), LiS (allowed), Fe3O2 (not), LiFeO2
    table = enumerate_compositions("Li,Fe,O,S", arity="2-3", include_disallowed=True)
    lab = label(table, str(known))
    cat = dict(zip(lab.column("key").to_pylist(), lab.column("category").to_pylist()))
    assert cat["Li2S1"] == "standard" and cat["Li1S1"] == "standard"
    assert cat["O2Fe3"] == "interesting"
    assert cat["Li1O2Fe1"] == "standard"
    assert cat["Li1S2"] == "missing" or cat["Li1S2"] == "unlikely"
    assert set(cat.values()) == {"standard", "missing", "interesting", "unlikely"}


def test_space_categories_add_up(shared_data):
    keys = known_keys(shared_data / "known" / "mp_binary_formulas.csv")
    cats = space_categories(2, 13464, 225879, keys)
    assert sum(cats.values()) == 225879
    assert cats["standard"] + cats["missing"] == 13464
    assert cats["standard"] + cats["interesting"] == 10220  # all the file's binaries lie in the space


@pytest.mark.parametrize("content,match", [
    ("", "empty"),
    ("name,value\nLi2S,1\n", "no formula column"),
    ("formula\nLi2S\nXx3Q\n", "cannot parse|unknown element"),
    ("formula\nLi2S\nLi-1S\n", "formula"),
])
def test_malformed_known_files(tmp_path, content, match):
    f = tmp_path / "known.csv"
    f.write_text(content)
    with pytest.raises(InputError, match=match):
        known_keys(f)


def test_mp_cache_means_no_request(tmp_path, monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    mp = MPKnown(tmp_path)
    with pytest.raises(InputError, match="MP_API_KEY"):
        mp.keys([("Li", "S")])
    (tmp_path / "Li-S.json").write_text(json.dumps({"chemsys": "Li-S", "keys": ["Li2S1"]}))
    (tmp_path / "Li-P-S.json").write_text(json.dumps({"chemsys": "Li-P-S", "keys": ["Li3P1S4"]}))
    assert mp.keys([("S", "Li"), ("Li", "P", "S")]) == {"Li2S1", "Li3P1S4"}
    assert mp.requests == 0


def test_mp_bad_key_is_one_line_error(tmp_path, monkeypatch):
    """A malformed key (mp-api checks its length) fails with one line and without echoing the key."""
    monkeypatch.setenv("MP_API_KEY", "not-a-real-key")
    with pytest.raises(InputError) as exc:
        MPKnown(tmp_path).keys([("Li", "S")])
    msg = str(exc.value)
    assert "\n" not in msg and "not-a-real-key" not in msg and "Materials Project" in msg
    assert not list(tmp_path.iterdir())  # nothing cached from a failed query


def test_embedding_mean_and_missing_elements():
    mat = element_matrix("megnet16")
    res = embed([(("Li", "O"), (2, 1)), (("Li", "Lr"), (1, 1)), (("Lr",), (1,))], "megnet16")
    li, o = mat[2], mat[7]
    assert np.allclose(res.vectors[0], (2 * li + o) / 3)
    assert np.allclose(res.vectors[1], li)  # Lr dropped, Li renormalised to fraction 1
    assert np.isnan(res.vectors[2]).all()
    assert res.dropped_elements == {"Lr": 2} and res.empty_rows == 1
    both = embed([(("Li", "O"), (2, 1))], "magpie", pooling="mean,std,max")
    assert both.vectors.shape == (1, 3 * element_matrix("magpie").shape[1])
    with pytest.raises(InputError, match="unknown embedding"):
        embed([(("Li",), (1,))], "nope")


@pytest.mark.parametrize("name", ["magpie", "mat2vec", "megnet16", "oliynyk", "skipatom", "random_200"])
def test_every_embedding_loads_offline(name):
    mat = element_matrix(name)
    assert mat.shape[0] == 103 and not np.isnan(mat[2]).any()  # Li is in every embedding


def test_map_writes_table_and_plots(tmp_path):
    from chemspace import make_map

    table = enumerate_compositions("Li,Fe,O,S,Cl,P", arity=2, include_disallowed=True)
    lab = label(table, {"Li2S1", "Li1Cl1", "O2Fe3", "Li3P1"})
    res = make_map(lab, tmp_path, embedding="megnet16", methods="pca", per_category=20)
    import pyarrow.parquet as pq

    out = pq.read_table(res.table)
    assert set(out.column_names) >= {"key", "formula", "category", "anion_family", "pca_x", "pca_y"}
    assert res.plots[0].read_bytes()[:4] == b"\x89PNG"
    counts = {c: out.column("category").to_pylist().count(c) for c in ("missing", "unlikely")}
    assert counts == {"missing": 20, "unlikely": 20}
