"""The roles the Ray actors wrap, run in-process (they are plain classes): labels with stress and retries,
candidates with known/unknown from chemspace, deterministic store shards, and ONE judge and ONE transport
path shared by the campaign, the benchmark and ``matscreen analyze``."""
from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.lj import LennardJones

from actors import requests as rq
from actors import roles
from common import InputError
from orchestrator.campaign.spec import validate
from reference.oracles import OracleConfig
from reference.store import LabelStore, Selection, shard_name


def generate(out, spec) -> rq.GenerateCandidates:
    """The campaign's candidates request of a spec, writing under ``out``."""
    return rq.GenerateCandidates(str(out), spec.candidates, list(spec.prototypes), spec.space)


class Flaky(LennardJones):
    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        if atoms is not None and atoms.info.get("bad"):
            raise RuntimeError("SCF did not converge")
        return super().calculate(atoms, properties, system_changes or ["positions", "numbers", "cell", "pbc"])


def make_flaky():
    return Flaky(epsilon=0.0104, sigma=3.4, rc=8.5, smooth=True)


def test_label_into_store_retries_counts_failures_keeps_stress(tmp_path):
    from reference.oracles import Oracle, label_into_store

    frames = []
    for k in range(4):
        a = bulk("Ar", "fcc", a=5.26, cubic=True)
        a.rattle(0.05, seed=k)
        a.info["bad"] = k % 2 == 1
        frames.append(a)
    store = LabelStore(tmp_path / "store")
    oracle = Oracle(f"{__file__}:make_flaky", retries=1)
    res = label_into_store(oracle, frames, store, shard_name("c", "Ar__x", 1), "active-learning", 800.0, "c/Ar/r1")
    assert (res.n_labels, res.n_failed) == (2, 2) and "SCF did not converge" in res.errors[0]
    ref = make_flaky()
    got = store.query(run_id="c/Ar/r1")
    assert len(got) == 2 and Path(res.shard).name == "campaign-c-Ar__x-r1.extxyz"
    for a in got:
        assert a.info["source"] == "active-learning" and a.info["temperature_K"] == 800.0 and a.info["oracle"]
        b = a.copy()
        b.calc = ref
        assert np.allclose(a.get_forces(), b.get_forces()) and np.isclose(a.get_potential_energy(), b.get_potential_energy())
        assert np.allclose(a.get_stress(), b.get_stress())            # stress labels too (the old glue dropped them)


def test_candidates_from_files_prototypes_and_missing(tmp_path):
    from ase.io import write

    from reference.candidates import CandidateSet

    write(tmp_path / "li2s.cif", bulk("Li", "fcc", a=5.0))
    cfg = validate({"candidates": {"formulas": ["Li2S", "Li10SiP2S12", "LiXyz"],
                                   "structures": {"Li2S": str(tmp_path / "li2s.cif")}, "max_candidates": 3},
                    "prototypes": ["Li10GeP2S12"]})
    out = roles.CandidateGenerator().handle(generate(tmp_path / "out", cfg))
    assert isinstance(out, CandidateSet)
    rows = {r.formula: r for r in out.rows}
    assert rows["Li2S"].structure_path and rows["Li2S"].key == "Li2S__li2s"
    from reference.structures import structure_atoms

    si = structure_atoms(rows["Li10SiP2S12"].structure_path)
    assert si.get_chemical_formula(mode="reduce").count("Si") and len(si) == 50   # substituted LGPS cell
    assert rows["LiXyz"].structure_path is None and rows["LiXyz"].reason


def test_a_bad_prototype_is_an_input_error_naming_the_key(tmp_path):
    cfg = validate({"candidates": {"formulas": ["Li10SiP2S12"]}, "prototypes": ["Li10GeP2S12", "NoSuchThing"]})
    with pytest.raises(InputError, match=r"prototypes\[1\]"):
        roles.CandidateGenerator().handle(generate(tmp_path, cfg))


def test_include_known_false_screens_only_unknown_compositions_and_counts_the_rest(tmp_path):
    from orchestrator.campaign.state import Ledger

    known = tmp_path / "known.csv"
    known.write_text("formula\nLi10GeP2S12\nLi3PS4\n")
    cfg = validate({"space": {"elements": ["Li", "Ge", "Si", "P", "S"], "require": ["Li", "P", "S"],
                              "arity_min": 4, "arity_max": 4},
                    "candidates": {"include_known": False, "known": str(known), "max_candidates": 5},
                    "prototypes": ["Li10GeP2S12"]})
    out = roles.CandidateGenerator().handle(generate(tmp_path / "c", cfg)).to_dict()
    formulas = {r["formula"] for r in out["rows"]}
    assert "Li10GeP2S12" in out["skipped_known"] and "Li10GeP2S12" not in formulas
    assert "Li10SiP2S12" in formulas                                   # unknown in that file: screened
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.record_step("candidates", out)
    ledger.add_candidates(out["rows"])
    assert ledger.summary()["skipped_known"] == len(out["skipped_known"]) >= 1
    cfg = replace(cfg, candidates=replace(cfg.candidates, include_known=True))   # the default keeps them
    both = roles.CandidateGenerator().handle(generate(tmp_path / "d", cfg)).to_dict()
    assert "Li10GeP2S12" in {r["formula"] for r in both["rows"]} and both["skipped_known"] == []


def test_unknown_oracle_is_an_input_error():
    with pytest.raises(InputError, match="oracle"):
        roles.ReferenceWorker(OracleConfig("nosuchoracle")).oracle


def test_store_labels_are_deterministic_shards_and_selected_by_shared_elements(tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator

    def frame(symbols, oracle="lj-argon"):
        a = bulk("Ar", "fcc", a=5.26, cubic=True)
        a.symbols[:len(symbols)] = symbols
        a.calc = SinglePointCalculator(a, energy=-1.0, forces=np.zeros((len(a), 3)))
        a.info.update(oracle=oracle, source="active-learning", temperature_K=300.0, step=5)
        return a

    store = LabelStore(tmp_path / "store")
    name = shard_name("c", "Li2S__x", 1)
    assert name == "campaign-c-Li2S__x-r1.extxyz"
    for _ in range(2):  # a label step retried after a crash rewrites its own shard: no duplicate frames
        store.write_shard(name, [frame(["Li"]), frame(["Li", "Li"])], "c/Li2S__x/r1")
    store.write_shard(shard_name("c", "Na__y", 1), [frame(["Na"])], "c/Na__y/r1")
    store.append([frame(["Li"], oracle="other-oracle")])  # another oracle: never mixed in
    assert len(LabelStore(store.root)) == 4
    got = LabelStore(store.root).query(run_id="c/Li2S__x/r1")
    assert len(got) == 2 and "step" not in got[0].info

    sel = store.select({"Li", "Ar"}, 2, "lj-argon")
    assert sel.n_frames == 2 and [s[0] for s in sel.shards] == [name]
    assert store.select({"Li", "Ar"}, 1, "lj-argon").n_frames == 3   # Na-Ar shares Ar
    assert Selection.from_dict(json.loads(json.dumps(sel.to_dict()))).fingerprint == sel.fingerprint
    assert [a.info["oracle"] for a in store.frames_of(sel)] == ["lj-argon"] * 2
    store.write_shard(shard_name("c", "Li2S__x", 2), [frame(["Li"])], "c/Li2S__x/r2")
    assert store.select({"Li", "Ar"}, 2, "lj-argon").fingerprint != sel.fingerprint


# --- one judge, one transport, one MD engine --------------------------------------------------------------
@pytest.fixture(scope="module")
def lj_runs(tmp_path_factory):
    """An oracle reference run and a two-member student run of a Li-Ar Lennard-Jones fluid, written by the
    campaign's own roles (ReferenceWorker, Trainer, MDWorker), in-process."""
    from ase.io import write

    d = tmp_path_factory.mktemp("paths")
    atoms = bulk("Li", "fcc", a=5.26, cubic=True).repeat(2)
    atoms.symbols[::2] = "Ar"
    write(d / "li32.extxyz", atoms)
    cfg = validate({"name": "same", "seed": 3, "oracle": {"name": "lj"},
                    "md": {"protocol": {"timestep_fs": 5.0, "stride": 5, "thermostat": "langevin"},
                           "reference_steps": 150, "reference_temperature_K": 375.0, "exploration_steps": 150},
                    "models": {"architectures": ["lj"], "size": 2}})
    store = d / "store"
    ref = roles.ReferenceWorker(cfg.oracle).handle(rq.ReferenceMD(
        str(d / "li32.extxyz"), cfg.reference_plan(), str(d / "ref.h5"), str(store),
        shard_name("same", "Li", 0), "same/Li/r0"))
    sel = Selection([[Path(ref.shard).name, list(range(ref.labelled_frames))]], ref.oracle).to_dict()
    trained = roles.Trainer().handle(rq.Train(str(store), sel, cfg.models, cfg.training, str(d / "models"), 3))
    (run,) = roles.MDWorker().handle(rq.RunMD(trained.members, str(d / "li32.extxyz"), [375.0], 1,
                                              cfg.md.run_protocol(150), cfg.monitor(), 4, str(d / "md"))).runs
    return {"cfg": cfg, "ref": ref, "run": run, "members": trained.members, "dir": d}


def test_md_engine_records_the_ensemble_deviation_and_its_verdict(lj_runs):
    from md.trajectory import load_trajectory

    traj = load_trajectory(lj_runs["run"].trajectory)
    assert traj.force_deviation is not None and len(traj.force_deviation) == len(traj) == 31
    assert np.all(traj.force_deviation > 0)                            # two different fits disagree a little
    assert traj.live_verdict["status"] == lj_runs["run"].verdict == "stable"


def test_campaign_benchmark_and_analyze_give_identical_verdicts_and_D(lj_runs, capsys):
    from orchestrator.campaign.benchmark import _row
    from orchestrator.campaign.runner import Roles
    from orchestrator.cli import main

    cfg, ref, run = lj_runs["cfg"], lj_runs["ref"], lj_runs["run"]
    judge = roles.StabilityJudge()
    with pytest.raises(TypeError, match="list of trajectory paths"):
        judge.handle(rq.Judge(run.trajectory, ref.trajectory, cfg.stability, 4, 0.1))
    with pytest.raises(TypeError, match="StabilityJudge does not run RunMD"):
        judge.handle(rq.RunMD([], "", [], 1, None, None, 0, ""))
    campaign = judge.handle(rq.Judge([run.trajectory], ref.trajectory, cfg.stability, 4, 0.1)).verdict.to_dict()
    campaign_d = judge.handle(rq.TransportRequest([run.trajectory], "Li")).transport
    bench = _row(Roles(cfg, use_ray=False), cfg, "lj", "LiAr", True, lj_runs["members"], [run], ref,
                 lj_runs["dir"] / "bench")
    assert main(["analyze", run.trajectory, "--reference", ref.trajectory, "--species", "Li", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert campaign["status"] == bench["verdict"] == cli["verdict"]
    assert campaign["evidence"]["rdf_mae"] == bench["rdf_mae"] == cli["rdf_mae"]
    for key in ("rdf_noise_floor", "rdf_critical", "rdf_status", "rdf_reason", "dynamics_status"):   # one judge
        a, b = campaign["evidence"][key], cli["evidence"][key]
        assert a == b or (a != a and b != b)                                # equal, or both NaN (undecided)
    assert campaign_d["diffusivity_cm2_s"] == [cli["diffusivity_cm2_s"]]
    assert campaign_d["diffusivity_cm2_s_err"] == [cli["diffusivity_err_cm2_s"]]
    assert bench["force_mae_meV_A"] > 0


def test_spec_defaults_are_the_judges_defaults():
    from analysis.verdicts import VerdictThresholds
    from models import ARCHITECTURES, EnsembleConfig

    assert validate({}).stability == VerdictThresholds()
    choices = {f.name: f for f in fields(EnsembleConfig)}["architectures"].metadata["choices"]
    assert set(choices) == set(ARCHITECTURES) | {"lj"}


@pytest.mark.parametrize("section, values, message", [
    ("md", {"protocol": {"thermostat": "berendsen"}}, r"md\.protocol\.thermostat: 'berendsen' is not one of nose-hoover, langevin, nve"),
    ("models", {"architectures": ["schnett"]}, r"models\.architectures\[0\]: 'schnett' is not one of .*did you mean 'schnet'"),
    ("md", {"species": "Xx"}, r"md\.species: 'Xx' is not a chemical symbol"),
])
def test_no_silent_fallbacks_in_the_spec(section, values, message):
    with pytest.raises(InputError, match=message):
        validate({section: values})


def test_library_calls_leave_the_global_torch_rng_alone():
    import torch

    from models import build_model

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model("schnet", [3, 16], seed=7, hidden_channels=8, num_filters=8, num_interactions=1)
    assert torch.equal(torch.rand(3), expected)


def test_labels_carry_ions_in_transit_and_the_errors_on_them_reach_the_judge(lj_runs):
    """The audit's transit frames are labelled with their ``in_transit`` atoms (from the run they came from), the
    ensemble's error on those atoms is reported per frame, and the same on the reference's held-out block."""
    from analysis.transit import transit_mask
    from md.trajectory import load_trajectory
    from models import read_frames

    d, cfg, run = lj_runs["dir"], lj_runs["cfg"], lj_runs["run"]
    judge, worker = roles.StabilityJudge(), roles.ReferenceWorker(cfg.oracle)
    th = replace(cfg.stability, mobile_species=("Li",))
    frames = judge.handle(rq.AuditFrames([run.trajectory], 4, 2, ("Li",))).frames
    assert len(frames[0]) >= 4
    lab = worker.handle(rq.Label([run.trajectory], frames, 375.0, str(d / "store"),
                                 shard_name("same", "Li-audit", 1), "same/Li/audit", ("Li",)))
    labelled = read_frames(lab.shard)
    moving = transit_mask(load_trajectory(run.trajectory))
    assert [a.arrays["in_transit"].tolist() for a in labelled] == [moving[i].tolist() for i in frames[0]]
    errors = judge.handle(rq.ForceErrors(lj_runs["members"], lab.shard, 0.05, None))
    assert errors.transit_error_eV_A is not None and len(errors.transit_error_eV_A) == len(labelled)
    assert all(np.isnan(e) == (not m.any()) for e, m in zip(errors.transit_error_eV_A, (moving[i] for i in frames[0])))
    ref = judge.handle(rq.ReferenceErrors(lj_runs["members"], lj_runs["ref"].trajectory, th))
    assert ref.transit_error_eV_A is not None and len(ref.transit_error_eV_A) == len(ref.mean_error_eV_A)
