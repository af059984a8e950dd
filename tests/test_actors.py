"""The glue the Ray actors call (actors.science), run in-process: labels, candidates, verdict inputs."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.lj import LennardJones

from actors import science
from orchestrator.spec import validate


class Flaky(LennardJones):
    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        if atoms is not None and atoms.info.get("bad"):
            raise RuntimeError("SCF did not converge")
        return super().calculate(atoms, properties, system_changes or ["positions", "numbers", "cell", "pbc"])


def make_flaky():
    return Flaky(epsilon=0.0104, sigma=3.4, rc=8.5, smooth=True)


def test_label_frames_counts_failures_and_sets_the_frame_contract(tmp_path):
    frames = []
    for k in range(4):
        a = bulk("Ar", "fcc", a=5.26, cubic=True)
        a.rattle(0.05, seed=k)
        a.info["bad"] = k % 2 == 1
        frames.append(a)
    good, n_failed, errors = science.label_frames(frames, {"name": f"{__file__}:make_flaky"}, "active-learning",
                                                  800.0, "demo/r0")
    assert (len(good), n_failed) == (2, 2) and "SCF did not converge" in errors[0]
    ref = make_flaky()
    for a in good:
        assert a.info["source"] == "active-learning" and a.info["temperature_K"] == 800.0
        assert a.info["run_id"] == "demo/r0" and a.info["oracle"]
        b = a.copy()
        b.calc = ref
        assert np.allclose(a.get_forces(), b.get_forces()) and np.isclose(a.get_potential_energy(), b.get_potential_energy())
    path = science._write_frames(tmp_path / "shards" / "x.extxyz", good)
    back = science.read_frames(path)
    assert np.allclose(back[0].get_forces(), good[0].get_forces())


def test_candidates_from_files_prototypes_and_missing(tmp_path):
    from ase.io import write

    write(tmp_path / "li2s.cif", bulk("Li", "fcc", a=5.0))
    spec = validate({"candidates": {"formulas": ["Li2S", "Li10SiP2S12", "LiXyz"],
                                    "structures": {"Li2S": str(tmp_path / "li2s.cif")}, "max_candidates": 3},
                     "prototypes": ["Li10GeP2S12"]}).to_dict()
    rows = {r["formula"]: r for r in science.generate_candidates(spec, str(tmp_path / "out"))}
    assert rows["Li2S"]["structure_path"] and rows["Li2S"]["key"] == "Li2S__li2s"
    si = science.read_frames(rows["Li10SiP2S12"]["structure_path"])[0]
    assert si.get_chemical_formula(mode="reduce").count("Si") and len(si) == 50   # substituted LGPS cell
    assert rows["LiXyz"]["structure_path"] is None and rows["LiXyz"]["reason"]


def test_unknown_oracle_is_an_input_error():
    from common import InputError

    with pytest.raises(InputError, match="oracle"):
        science.make_oracle({"name": "nosuchoracle"})


def test_store_labels_are_deterministic_shards_and_selected_by_shared_elements(tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator

    from reference.store import LabelStore

    def frame(symbols, oracle="lj-argon"):
        a = bulk("Ar", "fcc", a=5.26, cubic=True)
        a.symbols[:len(symbols)] = symbols
        a.calc = SinglePointCalculator(a, energy=-1.0, forces=np.zeros((len(a), 3)))
        a.info.update(oracle=oracle, source="active-learning", temperature_K=300.0, step=5)
        return a

    store = str(tmp_path / "store")
    path = science.store_shard_path(store, "c", "Li2S__x", 1)
    assert path.endswith("shards/campaign-c-Li2S__x-r1.extxyz")
    for _ in range(2):  # a label step retried after a crash rewrites its own shard: no duplicate frames
        science.append_labels(path, [frame(["Li"]), frame(["Li", "Li"])], "c/Li2S__x/r1")
    science.append_labels(science.store_shard_path(store, "c", "Na__y", 1), [frame(["Na"])], "c/Na__y/r1")
    LabelStore(store).append([frame(["Li"], oracle="other-oracle")])  # another oracle: never mixed in
    assert len(LabelStore(store)) == 4
    got = LabelStore(store).query(run_id="c/Li2S__x/r1")
    assert len(got) == 2 and "step" not in got[0].info

    index = science.StoreIndex(store)
    sel = index.select({"Li", "Ar"}, 2, "lj-argon")
    assert sel["n_frames"] == 2 and [s[0] for s in sel["shards"]] == ["campaign-c-Li2S__x-r1.extxyz"]
    assert index.select({"Li", "Ar"}, 1, "lj-argon")["n_frames"] == 3   # Na-Ar shares Ar
    assert index.select({"Li", "Ar"}, 2, "lj-argon")["fingerprint"] == sel["fingerprint"]
    frames = science.selection_frames(store, sel)
    assert [a.info["oracle"] for a in frames] == ["lj-argon"] * 2
    science.append_labels(science.store_shard_path(store, "c", "Li2S__x", 2), [frame(["Li"])], "c/Li2S__x/r2")
    assert index.select({"Li", "Ar"}, 2, "lj-argon")["fingerprint"] != sel["fingerprint"]
