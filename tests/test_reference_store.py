"""Labelled data store: shared-element queries, oracle separation, concurrent appends, atomicity."""
from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from common import InputError
from orchestrator.cli import main
from reference.store import LabelStore


def frame(symbols, oracle="chgnet-0.3.0", source="test", energy=-1.0, seed=0, **info):
    rng = np.random.default_rng(seed)
    n = len(symbols)
    a = Atoms(symbols, positions=rng.uniform(0, 6, (n, 3)), cell=np.eye(3) * 6, pbc=True)
    a.calc = SinglePointCalculator(a, energy=energy, forces=rng.normal(size=(n, 3)), stress=np.zeros(6))
    a.info.update(oracle=oracle, source=source, **info)
    return a


def _writer(root, worker, n_appends):
    store = LabelStore(root)
    for k in range(n_appends):
        store.append([frame(["Li", "P", "S", "S"], seed=1000 * worker + k, run_id=f"w{worker}", energy=float(k))])


def test_roundtrip_keeps_labels_and_info(tmp_path):
    store = LabelStore(tmp_path / "store")
    f = frame(["Li", "Ge", "P", "S"], temperature_K=600.0, run_id="r1")
    store.append([f])
    (back,) = LabelStore(f"file://{tmp_path / 'store'}").frames()
    assert back.get_potential_energy() == pytest.approx(-1.0)
    np.testing.assert_allclose(back.get_forces(), f.get_forces())
    assert back.get_stress().shape == (6,)
    assert back.info["oracle"] == "chgnet-0.3.0" and back.info["temperature_K"] == 600.0
    assert back.info["run_id"] == "r1" and back.info["source"] == "test"
    assert isinstance(back.calc, SinglePointCalculator)


def test_a_second_generations_shard_with_an_at_sign_reads_back(tmp_path):
    """Shards of generation 2+ are named ``...<c>@g2-...``: ASE must not read the '@' as a frame index."""
    from models.data import read_frames
    from reference.store import shard_name

    store = LabelStore(tmp_path / "store")
    path = store.write_shard(shard_name("incr", "Li__li32@g2-audit", 0), [frame(["Li", "S"], seed=s) for s in (1, 2)])
    assert "@g2" in path.name
    assert len(store.frames()) == 2 and len(store.query(shares_with="Li")) == 2
    assert len(read_frames(path)) == 2


def test_shared_element_queries(tmp_path):
    store = LabelStore(tmp_path)
    store.append([frame(["Li", "Ge", "P", "S"]), frame(["Li", "P", "S"]), frame(["Li", "Sn", "P", "S"]),
                  frame(["Na", "Cl"]), frame(["Li", "Si", "P", "Se"])])
    subset = store.query(elements_subset=["Li", "Ge", "P", "S"])
    assert sorted(a.get_chemical_formula() for a in subset) == ["GeLiPS", "LiPS"]
    shared3 = store.query(shares_with="Li10SiP2S12", min_shared=3)
    assert sorted(a.get_chemical_formula() for a in shared3) == ["GeLiPS", "LiPS", "LiPSSn", "LiPSeSi"]
    shared4 = store.query(shares_with="Li10SiP2S12", min_shared=4)
    assert shared4 == []
    assert len(store.query(shares_with="NaCl", min_shared=1)) == 1


def test_energies_of_different_oracles_never_mixed(tmp_path):
    store = LabelStore(tmp_path)
    store.append([frame(["Li", "P", "S"], oracle="chgnet-0.3.0"), frame(["Li", "P", "S"], oracle="vasp-pbe")])
    with pytest.raises(InputError, match="2 oracles"):
        store.training_set(elements_subset=["Li", "P", "S"])
    only = store.training_set(oracle="vasp-pbe")
    assert [a.info["oracle"] for a in only] == ["vasp-pbe"]
    mixed = store.training_set(oracle="vasp-pbe", forces_only_oracles=["chgnet-0.3.0"])
    weights = {a.info["oracle"]: a.info["energy_weight"] for a in mixed}
    assert weights == {"vasp-pbe": 1.0, "chgnet-0.3.0": 0.0}


def test_concurrent_appends_lose_nothing(tmp_path):
    root = str(tmp_path / "shared")
    LabelStore(root)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(root, w, 5)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    store = LabelStore(root)
    assert len(store.shards()) == 20 and len(store) == 20
    assert sorted(store.stats().by_oracle.values()) == [20]
    for w in range(4):
        assert len(store.query(run_id=f"w{w}")) == 5


def test_crash_mid_write_keeps_stored_frames(tmp_path):
    store = LabelStore(tmp_path)
    store.append([frame(["Li", "S"])])
    # a writer killed mid-write leaves only a hidden temporary file
    (store.shards_dir / ".20260101-host-1-dead.extxyz.abc.tmp").write_text("3\nhalf a fr")
    bad = frame(["Li", "S"])
    bad.calc.results["forces"] = np.full((2, 3), np.nan)
    with pytest.raises(InputError, match="non-finite"):
        store.append([frame(["Li", "S"]), bad])          # all-or-nothing: the good frame is not stored either
    assert len(LabelStore(tmp_path)) == 1


def test_frames_without_labels_refused(tmp_path):
    store = LabelStore(tmp_path)
    bare = Atoms("LiS", positions=[[0, 0, 0], [2, 0, 0]], cell=np.eye(3) * 5, pbc=True)
    bare.info.update(oracle="x", source="y")
    with pytest.raises(InputError, match="no energy/forces"):
        store.append([bare])
    unnamed = frame(["Li", "S"])
    del unnamed.info["oracle"]
    with pytest.raises(InputError, match="oracle"):
        store.append([unnamed])
    with pytest.raises(InputError, match="scheme"):
        LabelStore("s3://bucket/store")


def test_cli_stats_and_query(tmp_path, capsys):
    store = LabelStore(tmp_path / "s")
    store.append([frame(["Li", "Ge", "P", "S"]), frame(["Li", "Sn", "P", "S"])])
    assert main(["data", "stats", "--store", str(tmp_path / "s"), "--json"]) == 0
    assert '"n_frames": 2' in capsys.readouterr().out
    out = tmp_path / "sel.extxyz"
    assert main(["data", "query", "--store", str(tmp_path / "s"), "--subset-of", "Li,Ge,P,S", "--out", str(out)]) == 0
    from ase.io import read

    assert len(read(out, ":")) == 1
    assert main(["data", "query", "--store", str(tmp_path / "missing")]) == 2
    assert "no data store" in capsys.readouterr().err


def test_a_thinned_selection_keeps_every_own_frame_and_evenly_spaced_others():
    """Tier 1's fine-tuning set: the candidate's own shards whole, at most N of the rest, spread over them."""
    from reference.store import Selection

    sel = Selection([["campaign-x-A-r0.extxyz", list(range(100))], ["campaign-x-B-seed-r0.extxyz", list(range(8))],
                     ["campaign-x-C-r0.extxyz", list(range(50))]], "chgnet")
    thin = sel.thinned(lambda name: name.startswith("campaign-x-B-"), 30)
    kept = dict((name, idx) for name, idx in thin.shards)
    assert kept["campaign-x-B-seed-r0.extxyz"] == list(range(8)) and thin.n_frames == 38
    assert len(kept["campaign-x-A-r0.extxyz"]) == 20 and len(kept["campaign-x-C-r0.extxyz"]) == 10   # 150 -> 30
    assert kept["campaign-x-A-r0.extxyz"][:3] == [0, 5, 10]
    assert sel.thinned(lambda name: False, 500) is sel and thin.fingerprint == sel.thinned(
        lambda name: name.startswith("campaign-x-B-"), 30).fingerprint
