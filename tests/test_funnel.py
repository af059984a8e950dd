"""The screening funnel: tier 1 (no oracle MD) ranks every candidate, tier 2 (oracle MD) verifies the ones that
could be in the top k.  Fast checks of its parts, and a campaign in the LJ world on a real local Ray."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from analysis.planning import PrecisionPlan, PointState, error_budget, model_term, next_chunk
from analysis.ranking import could_be_top_k


def test_an_uncertain_candidate_whose_upper_error_reaches_the_top_k_is_kept():
    values = [2.0, 1.9, 1.0, 0.2, 0.0]
    sure = could_be_top_k(values, [0.1, 0.1, 0.1, 0.1, 0.1], k=2)
    assert sure.tolist() == [True, True, False, False, False]          # a sure low candidate is dropped
    wide = could_be_top_k(values, [0.1, 0.1, 0.1, 0.1, 1.5], k=2)     # 0.0 + 1.645 x 1.5 reaches 1.9 - 0.16
    assert wide.tolist() == [True, True, False, False, True]
    none = could_be_top_k([2.0, 1.9, None, 0.2], [0.1, 0.1, None, 0.1], k=2)
    assert none.tolist() == [True, True, True, False]                   # no number yet: uncertain, kept
    assert could_be_top_k([0.0, 5.0], [0.1, 0.1], k=3).all()            # at most k candidates: all


def test_a_tier1_model_term_is_the_prior_and_production_still_gives_a_value():
    value, bound, slope = model_term([], prior=0.6)
    assert value == 0.6 and "tier 1" in bound and slope is False
    record = {"log10_sigma_300K_err": 0.3, "arrhenius_reduced_chi2": 1.0, "temperatures_K": [1000.0, 800.0],
              "diffusivity_cm2_s": [1e-5, 3e-6], "diffusivity_cm2_s_err": [1e-6, 3e-7], "converged": [True, True]}
    budget = error_budget(record, [], prior=0.6)
    assert budget.model == 0.6 and budget.total == pytest.approx(math.hypot(0.3, 0.6))
    # a prior above the target: every temperature still gets its first chunk before production stops
    plan = PrecisionPlan(target_log10_err=0.3, budget_ps=60.0)
    points = [PointState(1000.0, 6.0, 1e-5, 0.1), PointState(800.0, 0.0, None, None)]
    chunk = next_chunk(points, plan, 6.0, 1, 6.0, 20, 1.0, 10.0, model_err=0.6, model_floor=0.6)
    assert chunk.temperature_K == 800.0
    points[1] = PointState(800.0, 6.0, 3e-6, 0.2)
    assert next_chunk(points, plan, 6.0, 1, 12.0, 20, 1.0, 10.0, model_err=0.6, model_floor=0.6).stop == \
        "model error alone above the target"


def test_seed_frames_are_the_structure_and_rattled_copies():
    from ase.build import bulk

    from common.errors import InputError
    from reference.seeding import seed_frames

    atoms = bulk("Cu", "fcc", a=3.6).repeat(3)
    frames = seed_frames(atoms, 6, 0.1, seed=1)
    assert len(frames) == 6 and np.allclose(frames[0].positions, atoms.positions)
    moved = np.concatenate([f.positions - atoms.positions for f in frames[1:]])
    assert moved.std() == pytest.approx(0.1, rel=0.15) and abs(moved.mean()) < 0.02
    assert np.allclose(seed_frames(atoms, 6, 0.1, seed=1)[3].positions, frames[3].positions)   # fixed by the seed
    with pytest.raises(InputError, match="rattle_A"):
        seed_frames(atoms, 3, 0.0)


def test_a_family_model_without_an_element_of_the_candidate_is_said_not_evaluated():
    """Si in LGPS's place: the family model (Li, Ge, P, S) has no Si embedding, so its error there cannot be
    measured before fine-tuning (which grows the embedding); the check names the element instead of failing."""
    from ase.build import bulk

    from models.ensemble import Ensemble, unknown_elements
    from models.lennard_jones import LennardJones
    from models.registry import build_model

    family = Ensemble([build_model("painn", [3, 15, 16, 32], seed=0, hidden_channels=8, num_layers=1)])
    si = bulk("Si", "diamond", a=5.43)
    li = bulk("Li", "bcc", a=3.5)
    assert unknown_elements(family, [si, li]) == ["Si"] and unknown_elements(family, [li]) == []
    assert unknown_elements(Ensemble([LennardJones()]), [si]) == []       # a species-blind model knows all


def test_the_funnel_needs_a_way_to_place_tier1_temperatures():
    from common.errors import InputError
    from orchestrator.campaign.spec import validate

    with pytest.raises(InputError, match="precision.lowest_temperature_K or md.temperatures_K"):
        validate({"funnel": {"enabled": True}})
    assert validate({"funnel": {"enabled": True}, "precision": {"lowest_temperature_K": 600.0}}).funnel.enabled


# --- a funnel campaign in the LJ world (real local Ray, real MLflow) ------------------------------------------
# (the ``ray_session`` fixture: tests/conftest.py)


def _world(d: Path) -> dict:
    """Four Li-Ar candidates: two 32-atom fcc cells (plain LJ) and two 27-atom sc cells, where the oracle
    (``lj_world.stiff27_lj``) is twice as deep: a family model trained on the fcc cells is wrong there."""
    from ase.build import bulk
    from ase.io import write

    from lj_world import write_structures

    out = write_structures(d)
    wide = bulk("Li", "fcc", a=5.4, cubic=True).repeat(2)
    wide.symbols[::2] = "Ar"
    write(d / "lb.extxyz", wide)
    sc = bulk("Li", "sc", a=3.85).repeat(3)
    sc.symbols[::2] = "Ar"
    write(d / "ld.extxyz", sc)
    return {"Li": out["Li"], "Li27": out["Li27"], "Lb": str(d / "lb.extxyz"), "Ld": str(d / "ld.extxyz")}


def test_funnel_ranks_four_candidates_and_tier2_demotes_a_wrong_tier1_student(ray_session, tmp_path):
    """Tier 1 without its audits (precision.audit_labels 0: deliberately blind) trusts a family student in the
    stiff 27-atom cells and ranks them too high; tier 2 (oracle MD, its dynamics and accuracy checks) demotes
    the one it verifies.  Every candidate says its tier, the family model's error on it and the oracle labels
    it needed.  The driver is killed in the middle of tier 1 and again in the middle of tier 2: each restart
    redoes nothing finished, and MLflow has one run per candidate and tier."""
    import lj_world
    import yaml
    from lj_world import CONCLUSIVE_MD, lj_spec
    from orchestrator.campaign.state import Ledger, ledger_path
    from orchestrator.campaign.tracking import run_counts

    structures = _world(tmp_path)
    md = {**CONCLUSIVE_MD, "steps": 600, "exploration_replicas": 1, "reference_steps": 1600}
    spec = lj_spec("funnel", structures, md=md, oracle={"name": f"{lj_world.__file__}:stiff27_lj"},
                   candidates={"formulas": ["Li", "Li27", "Lb", "Ld"], "structures": structures, "max_candidates": 4,
                               "top_k": 1},
                   funnel={"enabled": True, "seed_labels": 4, "md_labels": 4, "warmup_steps": 100,
                           "tier2_candidates": 1, "budget_ps": 18.0},
                   precision={"audit_labels": 0, "transit_labels": 0, "budget_ps": 6.0},
                   active_learning={"max_rounds": 0})
    spec_file = tmp_path / "funnel.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "RAY_ADDRESS": ray_session, "MLFLOW_TRACKING_URI": uri}
    cmd = [sys.executable, "-m", "orchestrator.cli", "campaign", "run", str(spec_file), "--quiet",
           "--store", str(tmp_path / "store")]
    path = ledger_path(tmp_path / "store", "funnel")

    def killed_when(reached) -> dict:
        """Run the driver until ``reached(steps)``, kill it there; the ledger's steps then."""
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        while not (path.exists() and reached(Ledger(path).steps())):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() - t0 < 240, "the campaign never reached the kill point"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return Ledger(path).steps()

    in_tier1 = killed_when(lambda st: any(k.startswith("prod:Lb__lb@t1") for k in st))       # mid tier 1
    in_tier2 = killed_when(lambda st: "tier2" in st and f"ref:{st['tier2']['picked'][0]}" in st)   # mid tier 2
    assert [k for k, v in in_tier1.items() if in_tier2[k] != v] == []      # nothing finished was redone
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    ledger = Ledger(path)
    after = ledger.steps()
    assert [k for k, v in in_tier2.items() if after[k] != v] == []
    check_funnel(ledger, tmp_path, uri)
    # the workers reported their progress as they went (what the progress line shows: common.progress)
    reports = [json.loads(f.read_text()) for f in (tmp_path / "store" / "funnel" / "progress").glob("*.json")]
    assert {"oracle MD", "student MD"} <= {r["task"] for r in reports}      # (LJ students are fitted, not trained)
    # one MLflow run per candidate and tier (3 tier-1 runs, 2 tier-2 runs), none duplicated by the restarts
    assert run_counts(uri, "matscreen-funnel")["candidate"] == 5


def check_funnel(ledger, tmp_path: Path, uri: str) -> None:
    """What a finished funnel campaign of :func:`_world` must show."""
    from orchestrator.campaign.results import ranked
    from orchestrator.campaign.tracking import Tracker

    res = {c["formula"]: c["results"] for c in ledger.candidates()}
    assert res["Li"]["tier"] == 2 and "tier1" not in res["Li"]             # the verified start of the family
    pick = ledger.step("tier2")
    assert len(pick["picked"]) == 1
    picked = next(c for c in ledger.candidates() if c["key"] == pick["picked"][0])
    first, second = picked["results"]["tier1"], picked["results"].get("log10_sigma_300K")
    assert picked["results"]["tier"] == 2
    # the picked one was the likeliest top 1 (a tier-1 number highest, or none: uncertain, never dropped) ...
    others = [r for f, r in res.items() if f not in ("Li", picked["formula"])]
    assert all(r["tier"] == 1 for r in others)
    if first["log10_sigma_300K"] is not None:
        assert all(r["log10_sigma_300K"] is None or r["log10_sigma_300K"] < first["log10_sigma_300K"] +
                   r["log10_sigma_300K_err_total"] for r in others)
    # ... a stiff cell, where the family student is wrong, and tier 2 (oracle MD) does not confirm its place
    assert picked["formula"] in ("Li27", "Ld")
    assert second is None or first["log10_sigma_300K"] is None or second < first["log10_sigma_300K"] - 0.5
    for r in others:                                                        # tier 1's account, per candidate
        assert r["oracle_labels"] >= 4 and r["family_force_mae_meV_A"] is not None
        if r["log10_sigma_300K"] is not None:
            assert "tier 1" in r["model_bound"] and r["log10_sigma_300K_err_model"] >= 0.5
    rows = {r["formula"]: r for r in ranked(ledger, top_k=1)}
    assert rows[picked["formula"]]["tier1_log10_sigma_300K"] == first["log10_sigma_300K"]
    assert rows[picked["formula"]]["tier2"] == "picked" and rows["Li"]["tier2"] == "verified"
    assert {rows[f]["tier2"] for f in ("Li27", "Lb", "Ld") if f != picked["formula"]} <= {
        "not needed", "could be top k: no oracle-MD budget left"}
    csv = (tmp_path / "store" / "funnel" / "results.csv").read_text()
    assert "tier" in csv.splitlines()[0].split(",")
    tracker = Tracker(uri, "matscreen-funnel")                              # MLflow says which tier
    runs = tracker.client.search_runs([tracker.experiment_id], "tags.`matscreen.kind` = 'candidate'")
    tiers = {r.info.run_name: r.data.tags.get("tier") for r in runs}
    assert tiers["Li"] == "2" and tiers[picked["formula"]] == "2"
    assert {tiers[f"{f} · tier 1"] for f in ("Li27", "Lb", "Ld")} == {"1"}
