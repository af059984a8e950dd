"""The campaign end to end on a real local Ray (2 CPUs, no dashboard) with a real MLflow sqlite store.

The test world is a Lennard-Jones one (fast and deterministic): an LJ oracle (ASE), analytic LJ
students fitted to the labels, 32-atom cells.  Reliability: an actor killed mid-run gives the same
results; a killed driver resumes without duplicate runs or lost labels; a failing oracle, an
exploding model and a missing structure each end their candidate with a recorded reason.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from actors.roles import MDWorker
import pytest
import yaml

ray = pytest.importorskip("ray")

import lj_world  # noqa: E402
from lj_world import CONCLUSIVE_MD, lj_spec, write_structures  # noqa: E402

THIS_FILE = Path(__file__).resolve()
ROOT = THIS_FILE.parents[1]


MLFLOW = {}  # one MLflow sqlite store for the module (each campaign is its own experiment): creating a
             # store runs MLflow's schema migrations, seconds each


@pytest.fixture(scope="module", autouse=True)
def mlflow_uri(tmp_path_factory):
    MLFLOW["uri"] = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    yield MLFLOW["uri"]
    MLFLOW.clear()


@pytest.fixture(scope="module")
def structures(tmp_path_factory):
    return write_structures(tmp_path_factory.mktemp("structures"))


def run(spec_dict: dict, tmp: Path, during=None, incremental: bool = False):
    from orchestrator.campaign.driver import Campaign
    from orchestrator.campaign.spec import validate

    campaign = Campaign(validate(spec_dict), store=tmp / "store", tracking_uri=MLFLOW["uri"])
    if during is None:
        return campaign, campaign.run(incremental=incremental)
    box = {}
    worker = threading.Thread(target=lambda: box.update(summary=campaign.run()))
    worker.start()
    during(campaign)
    worker.join()
    return campaign, box["summary"]


def results_of(campaign) -> dict:
    return {c["formula"]: (c["reason"], c["results"]) for c in campaign.ledger.candidates()}


def wait_for_step(ledger, prefix: str, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not ledger.steps(prefix):
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(prefix)
        time.sleep(0.05)


def test_killed_actor_gives_the_same_results(ray_session, structures, tmp_path):
    """Also the reproducibility test: the same spec and seed, run twice (once with an actor killed), give the
    same numbers; budgets are epochs, so nothing depends on the machine's load."""
    calm, summary = run(lj_spec("calm", structures, md=CONCLUSIVE_MD), tmp_path / "a")
    assert summary["converged"] == 1
    (reason, res), = results_of(calm).values()
    assert reason == "converged"                     # every check decided: structure and dynamics pass
    assert res["checks"]["rdf_status"] == "pass" and res["checks"]["dynamics_status"] == "pass"
    assert res["checks"]["rdf_mae"] < res["checks"]["rdf_tolerance"]
    assert set(res["temperatures_K"]) <= {1200.0, 1500.0, 1800.0} and len(res["temperatures_K"]) >= 2
    assert all(d > 0 for d in res["diffusivity_cm2_s"]) and "log10_sigma_300K" in res
    assert all(e > 0 for e in res["diffusivity_cm2_s_err"]) and res["activation_energy_eV_err"] > 0
    assert res["extrapolation_ratio"] > 1.0
    produced = {p.name for p in (tmp_path / "a" / "store").glob("calm/md/*/production_r*/*/*.h5")}
    assert produced <= {"1200K_r0.h5", "1800K_r0.h5"} and produced  # the judged exploration run is the one at T_ref
    assert 1500.0 in res["temperatures_K"]
    rounds = calm.ledger.rounds()
    assert rounds and {"rdf_mae", "rdf_noise_floor", "log10_ratio", "accurate_fraction", "trust_lo_eV_A",
                       "reference_calibration"} <= set(rounds[0])

    killed = {}

    def kill_md_worker_mid_run(campaign):
        wait_for_step(campaign.ledger, "ref:")            # the MD worker is idle until the first training
        # the head advertises matscreen_head: the Tracker (MLflow writer) holds a small share of it
        assert campaign.placement["tracker"] == {"matscreen_head": 0.01} and campaign.placement["md"] == {}
        t0 = time.monotonic()
        while ray.available_resources().get("matscreen_head", 1.0) > 0.995:
            assert time.monotonic() - t0 < 30, ray.available_resources()
            time.sleep(0.05)
        actor = campaign.roles.pools[MDWorker].actors[0]
        killed["before"] = ray.get(actor.instance.remote())
        wait_for_step(campaign.ledger, "train:")          # exploration MD is being handed out now
        time.sleep(0.2)
        ray.kill(actor, no_restart=False)                 # Ray restarts it and retries the task
        t0 = time.monotonic()                             # the kill is asynchronous: on a loaded machine a
        while True:                                       # call may still reach the old process first
            try:
                killed["after"] = ray.get(actor.instance.remote())
            except ray.exceptions.RayActorError:
                killed["after"] = None
            if killed["after"] not in (None, killed["before"]):
                break
            assert time.monotonic() - t0 < 120, "the killed MD worker never restarted"
            time.sleep(0.1)

    stormy, summary2 = run(lj_spec("stormy", structures, md=CONCLUSIVE_MD), tmp_path / "b",
                           during=kill_md_worker_mid_run)
    assert killed["before"] != killed["after"]       # a new incarnation did the work
    assert summary2["converged"] == 1
    assert results_of(stormy) == results_of(calm)


def test_driver_killed_and_restarted_resumes(ray_session, structures, tmp_path):
    from orchestrator.campaign.state import Ledger, ledger_path
    from orchestrator.campaign.tracking import Tracker

    spec = lj_spec("resume", structures, active_learning={"max_rounds": 1},
                   stability={"accurate_fraction": 1.0, "trust_lo_eV_A": 1e-9,
                              "trust_hi_eV_A": 1e-8})  # forces a labelling round
    spec_file = tmp_path / "resume.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "RAY_ADDRESS": ray_session, "MLFLOW_TRACKING_URI": MLFLOW["uri"]}
    cmd = [sys.executable, "-m", "orchestrator.cli", "campaign", "run", str(spec_file), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    path = ledger_path(tmp_path / ".matscreen" / "store", "resume")
    t0 = time.monotonic()
    while not (path.exists() and Ledger(path).steps("label:Li__li32:1")):
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.monotonic() - t0 < 150, "campaign never reached its first labelling round"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)                       # the driver dies mid-campaign
    proc.wait()
    ledger = Ledger(path)
    before = ledger.steps()
    labels = {k: hashlib.sha256(Path(v["shard"]).read_bytes()).hexdigest()
              for k, v in before.items() if k.startswith(("label:", "ref:", "audit:")) and v.get("shard")}
    assert ledger.summary()["done"] == 0

    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "mlflow ui --backend-store-uri" in out.stdout and "rank" in out.stdout
    after = Ledger(path).steps()
    for key, value in before.items():                      # nothing finished was redone
        assert after[key] == value
    for key, digest in labels.items():                     # no label lost or rewritten
        assert hashlib.sha256(Path(after[key]["shard"]).read_bytes()).hexdigest() == digest
    from reference.store import LabelStore                 # the labels are in the data store, once each

    store = LabelStore(tmp_path / ".matscreen" / "store")
    steps = {k: v for k, v in after.items() if k.startswith(("label:", "ref:", "audit:")) and v.get("shard")}
    assert {"audit:Li__li32:0", "audit:Li__li32:1"} <= set(steps)   # the oracle audited both rounds' MD
    assert {Path(v["shard"]).name for v in steps.values()} <= {p.name for p in store.shards()}
    mine = [a for a in store.frames() if str(a.info.get("run_id", "")).startswith("resume/")]
    assert len(mine) == sum(v.get("n_labels", v.get("labelled_frames")) for v in steps.values()) >= 9
    assert {a.info["source"] for a in mine} == {"oracle-md", "active-learning"}
    assert all(a.info["oracle"] == "lj-argon" and a.info["temperature_K"] == 375.0 for a in mine)
    train = after["train:Li__li32:1"]["training_set"]      # what round 1 trained on is recorded
    audited_last = after["audit:Li__li32:1"]["n_labels"]   # the last round's audit trains no round
    assert train["n_frames"] == len(mine) - audited_last and train == after["trainset:Li__li32:1"]
    cand = Ledger(path).candidate("Li__li32")
    assert cand["stage"] == "done" and cand["reason"] == "budget_spent"
    tracker = Tracker(env["MLFLOW_TRACKING_URI"], "matscreen-resume")
    counts = tracker.count_runs()
    assert counts == {"campaign": 1, "candidate": 1, "training": 2}  # no duplicate runs after the resume
    parent = tracker.find_run(Ledger(path).get_meta("science_hash") and f"resume:{_hash(spec)}")
    assert parent.data.tags["matscreen.executions"] == "2"

    status = subprocess.run([sys.executable, "-m", "orchestrator.cli", "campaign", "status", str(spec_file)],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    assert status.returncode == 0 and "budget_spent" in status.stdout and "candidate=1" in status.stdout


def _hash(spec: dict) -> str:
    from orchestrator.campaign.spec import validate

    return validate(spec).science_hash()


def test_a_student_wrong_at_low_temperature_only_is_caught_by_the_audits_there(ray_session, structures, tmp_path):
    """Production certified at every temperature: the oracle's audits of the 600 K run find the student's forces
    wrong there (this oracle's truth changes below 1000 K); production stops and the model is repaired (the
    next round trains on those labels) while rounds are left, then 600 K is left out of the fit with the reason
    (a pair potential cannot fit both worlds); 1800 K passes; the answer comes with its error budget, the slope
    check at 600 K (auto: the only temperature below the reference's) and the plan's account."""
    md = {**CONCLUSIVE_MD, "temperatures_K": [600.0, 1500.0, 1800.0], "steps": 400,
          "equilibration_steps": 200}      # the LJ crystal melts at 600 K: its first 0.4 ps are dropped
    spec = lj_spec("cold", structures, md=md, oracle={"name": f"{lj_world.__file__}:cold_lj"},
                   precision={"audit_labels": 6, "slope_check_temperature_K": "auto", "budget_ps": 8.0},
                   active_learning={"max_rounds": 2})
    campaign, summary = run(spec, tmp_path)
    (reason, res), = results_of(campaign).values()
    cand = campaign.ledger.candidates()[0]
    failed = res["certification_by_T"]["600"]       # the accuracy check there, or the structure against the
    assert failed not in ("stable", "inconclusive")  # oracle's MD at 600 K (the slope check's reference)
    # one repair (round 0 -> 1); the repaired model fails again (at 600 K, or at 1800 K where round 0's passed),
    # so round 0's model is kept, 600 K left out of its fit, 1800 K certified
    repairs = res["repairs"]
    assert [p["round"] for p in repairs] == [0, 1] and repairs[0]["temperature_K"] == 600.0
    assert all(p["status"] not in ("stable", "inconclusive") for p in repairs)
    assert res["certification_by_T"]["1800"] in ("stable", "inconclusive")
    diag = campaign.ledger.rounds(cand["key"])
    assert diag[1]["repair_of"] == repairs[0]                         # round 1 is the repair
    trained = campaign.ledger.step(f"trainset:{cand['key']}:1")["shards"]
    assert any("600K-audit" in name for name, _ in trained)          # on the oracle's labels at 600 K
    assert (tmp_path / "store" / "cold" / "md" / cand["key"] / "production_r1").is_dir()
    assert res["left_out_K"] == [600.0] and 600.0 not in res["temperatures_K"] and 1800.0 in res["temperatures_K"]
    assert f"certification at 600 K: {failed}" in cand["detail"] and "did not help" in cand["detail"]
    assert res["stopped_by"] in ("target reached", "budget spent", "model error alone above the target",
                                 "no chunk shrinks the error")
    parts = [res[f"log10_sigma_300K_err_{k}"] for k in ("stat", "lack_of_fit", "model")]
    assert abs(res["log10_sigma_300K_err_total"] - sum(p * p for p in parts) ** 0.5) < 1e-12
    assert res["slope_check_K"] == 600.0

    # the same student where the truth does not change: 600 K passes its certification and stays in the fit,
    # and the slope check against the oracle's MD there bounds the model term's slope
    plain, _ = run(lj_spec("warm", structures, md=md, precision={"audit_labels": 6, "slope_check_temperature_K": "auto",
                                                               "budget_ps": 8.0}), tmp_path / "plain")
    (_, res), = results_of(plain).values()
    assert res["certification_by_T"]["600"] in ("stable", "inconclusive") and res["left_out_K"] == []
    assert res["repairs"] == [] and res["slope_check_K"] == 600.0
    assert res["slope_checked"] is True and "1500 and 600 K" in res["model_bound"]

    # the slope check off: said, and the target is never claimed
    off, _ = run(lj_spec("off", structures, md=md, precision={"audit_labels": 0, "slope_check_temperature_K": None,
                                                              "budget_ps": 8.0}), tmp_path / "off")
    (_, res), = results_of(off).values()
    assert res["slope_checked"] is False and res["slope_check_K"] is None and res["target_reached"] is False
    assert "slope unchecked: precision.slope_check_temperature_K is null" in off.ledger.candidates()[0]["detail"]


def test_failures_are_recorded_with_reasons(ray_session, structures, tmp_path):
    spec = lj_spec("faults", structures,
                   oracle={"name": f"{lj_world.__file__}:flaky_lj"}, active_learning={"max_failure_fraction": 0.5},
                   candidates={"formulas": ["Li", "Li27", "LiX"], "structures": structures},
                   stability={"trust_lo_eV_A": 1e-9, "trust_hi_eV_A": 1e-8, "accurate_fraction": 1.0})  # every model needs labels
    campaign, summary = run(spec, tmp_path)
    got = {c["formula"]: c for c in campaign.ledger.candidates()}
    assert got["LiX"]["reason"] == "no_structure"
    assert got["Li27"]["reason"] == "oracle_failing" and "SCF did not converge" in got["Li27"]["detail"]
    assert got["Li"]["reason"] == "budget_spent"
    assert summary["done"] == 3
    diag = campaign.ledger.rounds(got["Li27"]["key"])[0]
    assert diag["labels_failed"] > 0 and diag["labels_added"] == 0

    # an exploding model (the kinetic-temperature monitor trips): recorded, campaign finishes
    boom, summary = run(lj_spec("boom", structures, stability={"max_temperature_factor": 1.0001, "min_runaway_K": 0.0},
                                active_learning={"max_rounds": 0}), tmp_path / "boom")
    cand = boom.ledger.candidates()[0]
    assert cand["reason"] == "budget_spent" and cand["verdict"] == "exploded"
    assert summary["done"] == 1

    from orchestrator.campaign.tracking import Tracker

    tracker = Tracker(MLFLOW["uri"], "matscreen-faults")
    reasons = sorted(r.data.tags["reason"] for r in tracker.client.search_runs(
        [tracker.experiment_id], filter_string="tags.`matscreen.kind` = 'candidate'"))
    assert reasons == ["budget_spent", "no_structure", "oracle_failing"]


def test_incremental_rescreens_only_candidates_whose_store_data_changed(ray_session, structures, tmp_path):
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    from orchestrator.campaign.tracking import Tracker
    from reference.store import LabelStore

    spec = lj_spec("incr", structures, candidates={"formulas": ["Li", "Na"], "structures": structures},
                   active_learning={"max_rounds": 0},
                   stability={"trust_lo_eV_A": 1e-9, "trust_hi_eV_A": 1e-8, "accurate_fraction": 1.0})  # one round each, no production
    first, summary = run(spec, tmp_path)
    assert summary["done"] == 2 and first.rescreened == []
    li, na = (c["key"] for c in first.ledger.candidates())
    na_steps = {k: v for k, v in first.ledger.steps().items() if na in k}
    old_set = first.ledger.step(f"train:{li}:0")["training_set"]

    # another study adds labels (same oracle) of a material sharing Li with the first candidate only
    store = LabelStore(tmp_path / "store")
    frames = []
    for k in range(3):
        a = bulk("Li", "fcc", a=5.3, cubic=True)
        a.symbols[::2] = "Cl"
        a.rattle(0.05, seed=k)
        a.calc = SinglePointCalculator(a, energy=-1.0, forces=np.zeros((len(a), 3)))
        a.info.update(oracle="lj-argon", source="import:test", temperature_K=300.0, run_id="other/LiCl")
        frames.append(a)
    store.append(frames)

    again, summary = run(spec, tmp_path, incremental=True)
    assert again.rescreened == [li] and summary["done"] == 2
    assert again.generation(li) == 2 and again.generation(na) == 1
    assert {k: v for k, v in again.ledger.steps().items() if na in k} == na_steps     # untouched
    assert again.ledger.step(f"history:{li}:g1")["reason"] == "budget_spent"        # old result kept
    new_set = again.ledger.step(f"train:{li}@g2:0")["training_set"]
    audited = first.ledger.step(f"audit:{li}:0")["n_labels"]      # g1's audit labels came after its training
    assert new_set["n_frames"] == old_set["n_frames"] + 3 + audited
    assert again.ledger.candidate(li)["model_version"] == f"{li}@g2/r0"
    own = store.query(shares_with="Ar")
    first_labels = again.ledger.step(f"ref:{li}")["labelled_frames"]
    assert len([a for a in own if a.info["run_id"] == f"incr/{li}/r0"]) == first_labels  # reused, not re-added
    counts = Tracker(MLFLOW["uri"], "matscreen-incr").count_runs()
    assert counts == {"campaign": 1, "candidate": 3, "training": 3}                   # one new run per generation

    from orchestrator.campaign.driver import Campaign                                            # nothing changed since:
    from orchestrator.campaign.spec import validate                                            # no churn (no Ray needed)

    third = Campaign(validate(spec), store=tmp_path / "store", tracking_uri=MLFLOW["uri"])
    assert third._new_generations(third.ledger.step("candidates")["rows"]) == [] and third.generation(li) == 2


def users_aimd(structure: str, path: Path, temperature_K: float, steps: int, save_every: int, timestep_fs: float) -> Path:
    """A user's 'AIMD' of the LJ world, as the user's own code would write it: extxyz with energies, forces
    and the time of every frame (the LJ oracle standing in for DFT)."""
    from ase.io import write

    from md.trajectory import read_atoms
    from reference.oracles import Oracle
    from reference.reference_md import ReferencePlan, run_reference_md
    from reference.structures import structure_atoms as read_structure

    run_reference_md(read_structure(structure), Oracle("lj"), ReferencePlan.nvt(
        temperature_K=temperature_K, steps=steps, timestep_fs=timestep_fs, stride=save_every, label_every=0, seed=11),
        path.with_suffix(".h5"))
    frames = read_atoms(path.with_suffix(".h5"))
    for atoms in frames:
        atoms.info = {"time_fs": atoms.info["time_fs"]}
    write(path, frames)
    return path


def test_campaign_judges_against_the_users_reference(ray_session, structures, tmp_path):
    """reference_data names the user's trajectory for the candidate: no oracle MD; the checks, the exploration's
    temperature and length, and the first labels come from the user's file (its level of theory, never mixed
    with the campaign oracle's), and the MLflow run records the file's path and hash."""
    from reference.store import LabelStore
    from reference.user_reference import sha256_of

    aimd = users_aimd(structures["Li"], tmp_path / "aimd_400K.extxyz", 400.0, steps=80, save_every=5, timestep_fs=5.0)
    spec = lj_spec("byo", structures, reference_data={
        "trajectories": {"Li": {"path": str(aimd), "temperature_K": 400.0}}, "oracle": "user-dft"})
    campaign, summary = run(spec, tmp_path)
    (cand,) = campaign.ledger.candidates()
    key = cand["key"]
    ref = campaign.ledger.step(f"ref:{key}")
    assert ref["metadata"]["kind"] == "user-reference" and ref["oracle"] == "user-dft"
    assert ref["metadata"]["sha256"] == sha256_of(aimd) and ref["metadata"]["dt_fs"] == 25.0
    assert ref["simulated_ps"] == 0.0                                    # the campaign ran no oracle MD
    assert {a.info["oracle"] for a in LabelStore(tmp_path / "store")._read_shard(Path(ref["shard"]))} == {"user-dft"}
    assert campaign.ledger.step(f"trainset:{key}:0")["oracle"] == "user-dft"
    explore = campaign.ledger.step(f"explore:{key}:0")["runs"]
    assert len(explore) == 4                                             # md.exploration_replicas (default)
    assert {run["temperature_K"] for run in explore} == {400.0}          # the user's temperature, not 375 K
    assert all(run["simulated_ps"] == pytest.approx(0.4) for run in explore)   # the user's length: 80 x 5 fs
    assert cand["reason"] in ("inconclusive", "converged", "budget_spent") and summary["done"] == 1
    if cand["reason"] == "budget_spent":                                # no new labels of another theory
        assert "labels are never mixed" in cand["detail"]
    assert not campaign.ledger.steps(f"label:{key}")

    from orchestrator.campaign.tracking import Tracker

    tracker = Tracker(MLFLOW["uri"], "matscreen-byo")
    (run_,) = tracker.client.search_runs([tracker.experiment_id], filter_string="tags.`matscreen.kind` = 'candidate'")
    assert run_.data.params["reference_path"] == str(aimd.resolve())
    assert run_.data.params["reference_sha256"] == sha256_of(aimd)
