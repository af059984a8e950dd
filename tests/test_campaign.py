"""Campaign spec validation, the ledger, the MLflow Tracker, results and the CLI (no Ray here)."""
from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from common import InputError
from orchestrator.cli import main
from orchestrator.campaign.spec import defaults, demo_spec_text, load_spec, validate
from orchestrator.campaign.state import Ledger, ledger_path
from reference.reference_md import ReferenceRun

ROOT = Path(__file__).resolve().parents[1]


# --- spec ---------------------------------------------------------------------------------------
def test_empty_spec_gets_every_default():
    spec = validate({})
    assert spec.to_dict() == defaults()
    assert spec.md.temperatures_K == () and spec.precision.target_log10_err == 0.3   # planned production
    assert spec.stability.trust_lo_eV_A is None and spec.stability.trust_hi_eV_A is None   # derived per round
    assert spec.stability.rdf_mae == 0.09 and spec.stability.false_alarm_rate == 0.05


@pytest.mark.parametrize("data, message", [
    ({"md": {"temperatures_K": [600, 800, "hot"]}}, r"md\.temperatures_K\[2\]: expected a number, got 'hot'"),
    ({"md": {"temperature_K": [600]}}, r"md\.temperature_K: unknown key; did you mean 'md\.temperatures_K'\?"),
    ({"stabilty": {}}, r"stabilty: unknown key; did you mean 'stability'\?"),
    ({"models": {"size": 2.5}}, r"models\.size: expected an integer, got 2\.5"),
    ({"models": {"size": True}}, r"models\.size: expected an integer"),
    ({"md": {"protocol": {"timestep_fs": -1}}}, r"md\.protocol\.timestep_fs: must be > 0, got -1"),
    ({"training": {"lr": 0}}, r"training\.lr: must be > 0"),
    ({"md": "fast"}, r"md: expected a mapping of keys"),
    ({"candidates": {"rank_by": "log10_sigma"}}, r"candidates\.rank_by: 'log10_sigma' is not one of .*did you mean 'log10_sigma_300K'"),
    ({"stability": {"trust_lo_eV_A": 0.2, "trust_hi_eV_A": 0.1}}, r"stability\.trust_hi_eV_A: must exceed"),
    ({"stability": {"trust_lo_eV_A": 0.2}}, r"stability\.trust_hi_eV_A: give both trust levels or neither"),
    ({"stability": {"false_alarm_rate": 0.7}}, r"stability\.false_alarm_rate: must be in \(0, 0\.5\)"),
    ({"md": {"equilibration_steps": 500, "steps": 400}}, r"md\.equilibration_steps: must be smaller than md\.steps"),
    ({"md": {"equilibration_steps": 3000, "steps": 4000}}, r"smaller than md\.reference_steps"),
    ({"md": {"steps": 0}}, r"md\.steps: must be > 0"),
    ({"active_learning": {"labels_per_roun": 3}}, r"did you mean 'active_learning\.labels_per_round'"),
    ({"active_learning": {"audit_labels": 1}}, r"active_learning\.audit_labels: 1 frame has no scatter"),
    ({"active_learning": {"audit_labels": -2}}, r"active_learning\.audit_labels: must be >= 0"),
    ({"stability": {"accuracy_log10_tolerance": 0}}, r"stability\.accuracy_log10_tolerance: must be > 0"),
    ({"candidates": {"structures": {"Li2S": 3}}}, r"candidates\.structures\.Li2S: expected a file path"),
    ({"name": "a b"}, r"name: 'a b' must be non-empty without slashes or spaces"),
    ([1, 2], r"the spec: expected a mapping"),
])
def test_malformed_spec_names_the_key(data, message):
    with pytest.raises(InputError, match=message):
        validate(data)


@pytest.mark.parametrize("data, message", [
    ({"models": {"ensemble_size": 2}}, r"^models\.ensemble_size: renamed to models\.size; rename the key"),
    ({"training": {"learning_rate": 1e-3}}, r"^training\.learning_rate: renamed to training\.lr;"),
    ({"training": {"validation_fraction": 0.1}}, r"^training\.validation_fraction: renamed to training\.val_fraction;"),
    ({"training": {"max_minutes": 3}}, r"^training\.max_minutes: renamed to training\.max_time_s \(seconds\);"),
    ({"training": {"fine_tune": True}}, r"^training\.fine_tune: renamed to active_learning\.fine_tune;"),
    ({"training": {"fine_tune_epochs": 2}}, r"^training\.fine_tune_epochs: renamed to active_learning\.fine_tune_epochs;"),
    ({"training": {"streaming": True}}, r"^training\.streaming: renamed to resources\.streaming;"),
    ({"md": {"save_every": 5}}, r"^md\.save_every: renamed to md\.protocol\.stride;"),
    ({"md": {"timestep_fs": 2.0}}, r"^md\.timestep_fs: renamed to md\.protocol\.timestep_fs;"),
    ({"md": {"thermostat": "langevin"}}, r"^md\.thermostat: renamed to md\.protocol\.thermostat;"),
    ({"oracle": {"max_failure_fraction": 0.5}}, r"^oracle\.max_failure_fraction: renamed to active_learning\.max_failure_fraction;"),
])
def test_an_old_key_fails_in_one_line_naming_the_new_one(data, message):
    with pytest.raises(InputError, match=message) as exc:
        validate(data)
    assert "\n" not in str(exc.value)


def test_every_default_is_the_owning_dataclass_default(capsys):
    """`campaign defaults` walked back through `validate`: each key's value is the default of the field of
    the package's dataclass that owns it (no second copy of any default)."""
    import dataclasses

    from orchestrator.campaign.spec import CampaignSpec, EXCLUDED, _as_dict

    assert main(["campaign", "defaults"]) == 0
    spec = validate(yaml.safe_load(capsys.readouterr().out))

    def walk(obj, path):
        seen = 0
        for f in dataclasses.fields(obj):
            if "help" not in f.metadata or f.name in EXCLUDED.get(path, ()):
                continue
            full = f"{path}.{f.name}" if path else f.name
            value = getattr(obj, f.name)
            if f.metadata.get("section"):
                assert type(value) is f.type or dataclasses.is_dataclass(value)
                seen += walk(value, full)
                continue
            own = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert _as_dict(value, full) == _as_dict(own, full), full
            seen += 1
        return seen

    assert walk(spec, "") > 90
    owners = {type(getattr(spec, s)).__module__ for s in ("space", "oracle", "models", "training", "stability")}
    assert owners == {"reference.candidates", "reference.oracles", "models.ensemble_training", "models.training",
                      "analysis.verdicts"}
    assert type(spec.md.protocol).__module__ == "md.protocol"
    assert CampaignSpec().to_dict() == spec.to_dict()


def test_docs_spec_page_is_the_specs_own_description():
    from orchestrator.campaign.spec import describe

    assert describe() in (ROOT / "docs" / "spec.md").read_text()
    assert "md.protocol.timestep_fs (float, default 2.0, fs)" in describe()


def test_error_is_one_line():
    with pytest.raises(InputError) as exc:
        validate({"md": {"temperatures_K": [1, None]}})
    assert "\n" not in str(exc.value) and str(exc.value).startswith("md.temperatures_K[1]:")


def test_scalar_is_accepted_for_a_list():
    assert validate({"md": {"temperatures_K": 700}}).md.temperatures_K == (700.0,)


def test_science_hash_ignores_resources_and_tracking():
    a = validate({"md": {"steps": 100}})
    b = validate({"md": {"steps": 100}, "resources": {"md_workers": 4}, "tracking": {"uri": "sqlite:///x.db"}})
    c = validate({"md": {"steps": 200}})
    assert a.science_hash() == b.science_hash() != c.science_hash()


def test_demo_spec_is_embedded_and_matches_campaigns_file():
    assert (ROOT / "campaigns" / "demo.yaml").resolve() == (ROOT / "orchestrator" / "campaign_demo.yaml").resolve()
    assert demo_spec_text() == (ROOT / "campaigns" / "demo.yaml").read_text()
    spec = load_spec(None)
    assert spec.candidates.formulas == () and spec.oracle.name == "chgnet"     # candidates from the chemical space
    assert spec.models.architectures == ("painn",)


def test_demo_runs_the_stability_rules_of_a_real_campaign():
    """No demo-only thresholds: the demo's stability section is the defaults, and so is every shipped spec's
    except the paper benchmark's (its protocol is the study's)."""
    assert load_spec(None).to_dict()["stability"] == defaults()["stability"]
    assert "stability" not in yaml.safe_load((ROOT / "campaigns" / "demo.yaml").read_text())
    assert "stability" not in yaml.safe_load((ROOT / "campaigns" / "smoke.yaml").read_text())
    assert load_spec(None).md.exploration_steps is None       # the student runs the reference's length


def test_yaml_syntax_error_points_at_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmd:\n  steps: [1,\n")
    with pytest.raises(InputError, match=r"bad\.yaml at line \d+"):
        load_spec(bad)


def test_cli_malformed_spec_exits_2_before_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "c.yaml"
    spec.write_text(yaml.safe_dump({"name": "x", "md": {"temperatures_K": [600, "hot"]}}))
    assert main(["campaign", "run", str(spec)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "matscreen: error: md.temperatures_K[1]: expected a number, got 'hot'"
    assert not (tmp_path / ".matscreen").exists()  # nothing started, nothing written


def test_cli_validate_and_defaults(tmp_path, capsys):
    assert main(["campaign", "validate", str(ROOT / "campaigns" / "demo.yaml")]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["name"] == "demo"
    assert main(["campaign", "defaults"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out) == defaults()                   # the schema's defaults, not the demo's choices
    assert "trust_lo_eV_A: null  # ensemble force deviation below this" in out and "rdf_mae: 0.09" in out
    assert main(["campaign", "show", str(ROOT / "campaigns" / "demo.yaml")]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out) == load_spec(ROOT / "campaigns" / "demo.yaml").to_dict()
    assert "hidden: 32" in out and "initial_labels: 275  #" in out and "(default: 16)" in out


def test_campaign_help_is_fast_and_complete():
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "campaign", "--help"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0
    for word in ("run", "status", "results", "validate", "defaults"):
        assert word in out.stdout


# --- ledger -------------------------------------------------------------------------------------
def test_ledger_steps_run_once_and_survive_reopen(tmp_path):
    path = ledger_path(tmp_path, "c")
    led = Ledger(path)
    calls = []
    assert led.once("train:a:0", lambda: calls.append(1) or {"members": ["m0"]}) == {"members": ["m0"]}
    assert led.once("train:a:0", lambda: calls.append(1) or {"members": ["other"]}) == {"members": ["m0"]}
    assert calls == [1]
    led.add_candidates([{"key": "a", "formula": "Li2S"}, {"key": "b", "formula": "Li3PS4"}])
    led.update_candidate("a", stage="done", reason="converged", results={"log10_sigma_300K": 0.5})
    led.close()
    again = Ledger(path)
    assert again.step("train:a:0") == {"members": ["m0"]}
    assert [c["key"] for c in again.candidates()] == ["a", "b"]
    assert again.candidate("a")["results"] == {"log10_sigma_300K": 0.5}
    again.add_candidates([{"key": "a", "formula": "Li2S"}])  # re-adding keeps the old row
    assert again.candidate("a")["stage"] == "done"
    s = again.summary()
    assert (s["total"], s["done"], s["converged"], s["pending"]) == (2, 1, 1, 1)


def test_ledger_failed_step_records_nothing(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")

    def crash():
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError):
        led.once("explore:a:0", crash)
    assert led.step("explore:a:0") is None
    assert sqlite3.connect(tmp_path / "l.sqlite").execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_ranked_results_and_table(tmp_path):
    from orchestrator.campaign.results import format_table, ranked, results_csv, results_markdown

    led = Ledger(tmp_path / "l.sqlite")
    led.add_candidates([{"key": k, "formula": k} for k in ("A", "B", "C", "D")])
    led.update_candidate("A", stage="done", reason="converged", results={"log10_sigma_300K": -1.0,
                                                                       "log10_sigma_300K_err": 0.2})
    led.update_candidate("B", stage="done", reason="converged", results={"log10_sigma_300K": 0.7,
                                                                       "log10_sigma_300K_err": 0.1})
    led.update_candidate("C", stage="done", reason="no_structure")
    rows = ranked(led)
    assert [r["candidate"] for r in rows][:2] == ["B", "A"] and [r["rank"] for r in rows] == [1, 2, None, None]
    table = format_table(rows)
    assert "0.70 ± 0.10" in table and "no_structure" in table
    assert results_csv(led).splitlines()[1].startswith("1,B,")
    # how sure each place is: B (5 mS/cm ± 0.1 log10) beats 1 mS/cm surely, A (0.1) does not; with k = 1,
    # P(B first) = Phi(1.7 / sqrt(0.1^2 + 0.2^2)) ~ 1; unranked rows get none
    assert rows[0]["p_above_threshold"] == 1.0 and rows[1]["p_above_threshold"] == 0.0
    assert (rows[0]["p_top_k"], rows[1]["p_top_k"]) == (1.0, 1.0)      # 2 candidates, top 3: both
    one = ranked(led, threshold_mS_cm=5.0, top_k=1)
    assert one[0]["p_above_threshold"] == pytest.approx(0.5, abs=0.01) and one[0]["p_top_k"] == 1.0
    assert one[2]["p_top_k"] is None and one[2]["p_above_threshold"] is None
    assert "P(σ300K>5 mS/cm)" in format_table(one) and "P(top 1)" in format_table(one)
    # a person's table: ten columns (the rest is in results.csv), and a row without a rank says why
    led.update_candidate("D", stage="done", reason="converged", results={"too_short_K": [650.0, 788.0]})
    table = format_table(ranked(led))
    head = table.splitlines()[0]
    assert len([c for c in head.split("  ") if c.strip()]) == 10
    assert "not ranked: no_structure" in table and "not ranked: no log10 σ(300 K): too short at 650 788 K" in table
    md = results_markdown(ranked(led)).splitlines()
    assert md[0].count("|") == 11 and "known" in md[0] and "evidence" in md[0]


def test_rank_probabilities_match_the_exact_answer():
    """P(top 1) of two normal candidates is Phi(dv / sqrt(e1^2 + e2^2)); the places of k among n sum to k;
    P(above) is the normal tail; bad input is refused."""
    from scipy.stats import norm

    from analysis.ranking import p_above, p_top_k
    from common import InputError

    top = p_top_k([0.5, 0.2], [0.2, 0.3], 1)
    assert top[0] == pytest.approx(norm.cdf(0.3 / math.hypot(0.2, 0.3)), abs=0.01) and top.sum() == pytest.approx(1)
    five = p_top_k([1.0, 0.9, 0.5, 0.4, -1.0], [0.3, 0.5, 0.1, 0.4, 0.2], 3)
    assert five.sum() == pytest.approx(3.0) and five[-1] < 0.01 and (five == p_top_k([1.0, 0.9, 0.5, 0.4, -1.0],
                                                                                    [0.3, 0.5, 0.1, 0.4, 0.2], 3)).all()
    assert p_above(0.2, 0.3, 0.0) == pytest.approx(norm.sf(0.0, 0.2, 0.3)) and p_above(1.0, 0.0, 0.0) == 1.0
    with pytest.raises(InputError, match="non-negative"):
        p_top_k([0.1, float("nan")], [0.1, 0.1], 1)
    with pytest.raises(InputError, match="at least 1"):
        p_top_k([0.1, 0.2], [0.1, 0.1], 0)


# --- tracker (real MLflow, sqlite in tmp_path) ----------------------------------------------------
def test_tracker_is_idempotent_and_nests_runs(tmp_path):
    from orchestrator.campaign.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = validate({"name": "t"})
    tr = Tracker(uri, "matscreen-t", (tmp_path / "art").as_uri())
    parent = tr.start_campaign("t:1", "t", spec.to_dict(), spec.to_yaml())
    result = {"temperatures_K": [600.0, 800.0], "diffusivity_cm2_s": [1e-6, 3e-6], "diffusivity_cm2_s_err": [1e-7, 2e-7],
              "conductivity_mS_cm": [10.0, 20.0], "conductivity_mS_cm_err": [1.0, 2.0],
              "activation_energy_eV": 0.25, "activation_energy_eV_err": 0.02,
              "log10_sigma_300K": 0.4, "log10_sigma_300K_err": 0.1}
    rounds = [{"round": 0, "rdf_mae": 0.03, "force_mae_meV_A": 80.0}, {"round": 1, "rdf_mae": 0.01}]
    member = tmp_path / "member0.json"
    member.write_text("{}")
    for _ in range(2):  # a resume logs everything again: nothing may be duplicated
        tr2 = Tracker(uri, "matscreen-t")
        assert tr2.start_campaign("t:1", "t", spec.to_dict(), spec.to_yaml()) == parent
        cand = tr2.log_candidate("t:1", "Li2S__x", {"formula": "Li2S", "MP_API_KEY": "sekret"}, rounds, result,
                                 "reliable", "converged")
        tr2.log_training("t:1", "Li2S__x/r0", {"members": [str(member)], "round": 0, "force_mae_meV_A": 50.0},
                         "matscreen-t-ensemble", "Li2S r0")
    assert tr2.count_runs() == {"campaign": 1, "candidate": 1, "training": 1}
    run = tr2.client.get_run(cand)
    assert run.data.tags["matscreen.kind"] == "candidate" and run.data.tags["mlflow.parentRunId"] == parent
    (training,) = tr2.client.search_runs([tr2.experiment_id], "tags.`matscreen.kind` = 'training'")
    assert training.data.tags["mlflow.parentRunId"] == cand and training.info.run_name == "Li2S r0"  # nested
    assert run.data.metrics["log10_sigma_300K"] == 0.4 and "docs/metrics.md" in run.data.tags["mlflow.note.content"]
    steps = {m.step: m.value for m in tr2.client.get_metric_history(cand, "conductivity_mS_cm")}
    assert steps == {600: 10.0, 800: 20.0}                                     # one name, step = temperature in K
    assert "<" not in run.data.tags["mlflow.note.content"]                     # no <T> the UI would swallow
    assert run.data.metrics["selected_force_mae_meV_A"] == 80.0 and "force_mae_meV_A" not in run.data.metrics
    assert training.data.metrics["val_force_mae_meV_A"] == 50.0
    from orchestrator.campaign.tracking import glossary_markdown

    assert glossary_markdown() in (ROOT / "docs" / "metrics.md").read_text()       # the glossary is the table
    with pytest.raises(ValueError, match="not in tracking.METRICS"):
        tr2._metrics(cand, [("D_cm2_s_600K", 1e-6, 0)])                       # a second name is refused
    tr2.finish_campaign("t:1", None, {"done": 1}, ranks=[{"candidate": "Li2S__x", "rank": 1, "p_above_threshold": 0.9,
                                                          "p_top_k": 1.0}, {"candidate": "gone", "rank": None}])
    placed = tr2.client.get_run(cand).data.metrics       # each candidate's run says how sure its place is
    assert (placed["rank"], placed["p_above_threshold"], placed["p_top_k"]) == (1.0, 0.9, 1.0)
    assert run.data.tags["verdict"] == "reliable" and run.data.tags["matscreen.internal.key"] == "t:1/Li2S__x"
    old = tr2.client.create_run(tr2.experiment_id, tags={"matscreen.key": "t:1/old"}, run_name="old")
    assert tr2.find_run("t:1/old").info.run_id == old.info.run_id        # a store from before the rename resumes
    assert run.data.params["MP_API_KEY"] == "***"  # never log secrets
    hist = tr2.client.get_metric_history(cand, "conductivity_mS_cm")
    assert sorted((m.step, m.value) for m in hist) == [(600, 10.0), (800, 20.0)]
    assert tr2.client.get_run(cand).data.metrics["log10_sigma_300K_err"] == 0.1
    versions = tr2.client.search_model_versions("name='matscreen-t-ensemble'")
    assert len(versions) == 1
    assert "spec/campaign.yaml" in [a.path for a in tr2.client.list_artifacts(parent, "spec")]


def test_default_tracking_uri_is_relative_to_cwd(tmp_path, monkeypatch):
    from orchestrator.campaign.tracking import resolve_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path.resolve() / '.matscreen' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert resolve_tracking_uri(None) == "sqlite:///elsewhere.db"


def test_progress_line():
    import io

    from orchestrator.campaign.progress import ProgressView

    buf = io.StringIO()
    view = ProgressView(buf)
    view({"total": 3, "done": 1, "converged": 1, "failed": 0, "running": 2, "pending": 0, "round": 1,
          "simulated_ns": 0.0125})
    line = buf.getvalue()
    assert "candidates 1/3 done (1 converged, 0 failed) | 2 running | round 1 | 0.0125 ns simulated" in line


def test_second_driver_on_the_same_campaign_is_refused(tmp_path):
    from orchestrator.campaign.driver import Campaign

    spec = validate({"name": "locked"})
    first = Campaign(spec, store=tmp_path, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    held = first._lock()
    try:
        with pytest.raises(InputError, match=r"campaign 'locked' is already running \(pid \d+\)"):
            Campaign(spec, store=tmp_path, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")._lock()
    finally:
        held.close()
    Campaign(spec, store=tmp_path, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")._lock().close()  # free again


def test_changed_science_spec_is_refused_on_resume(tmp_path):
    from orchestrator.campaign.driver import Campaign

    Campaign(validate({"name": "c"}), store=tmp_path, tracking_uri="sqlite:///x.db")
    Campaign(validate({"name": "c", "resources": {"md_workers": 3}}), store=tmp_path, tracking_uri="sqlite:///x.db")
    with pytest.raises(InputError, match="different spec"):
        Campaign(validate({"name": "c", "md": {"steps": 2499}}), store=tmp_path, tracking_uri="sqlite:///x.db")


# --- data store location, shared-element selection, generations, placement -----------------------------
def test_store_location_precedence(tmp_path, monkeypatch):
    from orchestrator.campaign.spec import store_root

    cfg = validate({"store": {"path": "from-spec"}})
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MATSCREEN_STORE", raising=False)
    assert store_root(None, cfg) == tmp_path / "from-spec"
    monkeypatch.setenv("MATSCREEN_STORE", f"file://{tmp_path / 'from-env'}")
    assert store_root(None, cfg) == tmp_path / "from-env"
    assert store_root("from-flag", cfg) == tmp_path / "from-flag"
    monkeypatch.setenv("MATSCREEN_STORE", "s3://bucket/x")
    with pytest.raises(InputError, match="only directories or file:// URIs"):
        store_root(None, cfg)


def test_status_reads_the_store_from_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MATSCREEN_STORE", str(tmp_path / "elsewhere"))
    led = Ledger(ledger_path(tmp_path / "elsewhere", "envcamp"))
    led.add_candidates([{"key": "A", "formula": "Li2S"}])
    led.new_generation("A", 2, {})
    assert main(["campaign", "status", "--name", "envcamp"]) == 0
    out = capsys.readouterr().out
    assert "campaign envcamp" in out and "A@g2" in out
    assert main(["campaign", "status", "--name", "envcamp", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["candidates"][0]["generation"] == 2


def test_min_shared_elements_is_validated_and_defaults_to_all_but_one(tmp_path):
    from orchestrator.campaign.driver import Campaign

    with pytest.raises(InputError, match=r"active_learning\.min_shared_elements: must be > 0"):
        validate({"active_learning": {"min_shared_elements": 0}})
    with pytest.raises(InputError, match="name: 'shards'"):
        validate({"name": "shards"})
    c = Campaign(validate({"name": "m"}), store=tmp_path, tracking_uri="sqlite:///x.db")
    assert c.min_shared({"key": "a", "formula": "Li10GeP2S12"}) == 3
    assert c.min_shared({"key": "b", "formula": "Li"}) == 1
    c2 = Campaign(validate({"name": "m2", "active_learning": {"min_shared_elements": 9}}), store=tmp_path,
                  tracking_uri="sqlite:///x.db")
    assert c2.min_shared({"key": "a", "formula": "Li3PS4"}) == 3  # never above its own: its labels always count


def test_new_generation_keeps_history_in_one_step(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    led.add_candidates([{"key": "A", "formula": "Li2S"}])
    led.update_candidate("A", stage="done", reason="converged", verdict="reliable", results={"x": 1}, round=2)
    led.new_generation("A", 2, {"reason": "converged", "results": {"x": 1}})
    cand = led.candidate("A")
    assert (cand["stage"], cand["reason"], cand["results"], cand["round"]) == ("pending", None, {}, 0)
    assert led.step("generation:A") == {"generation": 2} and led.step("history:A:g1")["results"] == {"x": 1}


@pytest.mark.parametrize("resources, expected", [
    ({"CPU": 2.0}, {"tracker": {}, "md": {}, "reference": {}}),
    ({"CPU": 4.0, "matscreen_head": 1.0}, {"tracker": {"matscreen_head": 0.01}, "md": {}, "reference": {}}),
    ({"CPU": 44.0, "GPU": 1.0, "matscreen_head": 1.0, "matscreen_md": 1.0, "matscreen_oracle": 32.0},
     {"tracker": {"matscreen_head": 0.01}, "md": {"matscreen_md": 1.0}, "reference": {"matscreen_oracle": 2.0}}),
])
def test_placement_follows_the_cluster_resources(resources, expected):
    from orchestrator.ops.placement import placement

    assert placement(resources, gpus_per_md_worker=1.0, cpus_per_oracle=2.0) == expected
    if "matscreen_md" in resources:  # an MD worker without a GPU still lands on an MD node
        assert placement(resources, 0.0, 2.0)["md"] == {"matscreen_md": 0.01}


def test_local_ray_is_sized_for_the_actors_or_the_run_refused(tmp_path):
    """One candidate in flight: the stages take turns, so the local Ray counts the actors' sum even on fewer
    cores; several in flight, or --num-cpus too small: a one-line error (exit 2) before anything is written,
    instead of actors Ray waits for for ever."""
    from orchestrator.ops.placement import actor_cpus, local_cpus

    from dataclasses import replace

    r = load_spec(ROOT / "campaigns" / "demo.yaml").resources
    assert actor_cpus(r) == 6.0 and r.queue_size == 1
    assert local_cpus(r, None, cores=2) == 6 and local_cpus(r, None, cores=16) == 16 and local_cpus(r, 8, 2) == 8
    with pytest.raises(InputError, match="ask for 6 CPUs .* local Ray has 4; pass --num-cpus 6"):
        local_cpus(replace(r, queue_size=2), None, cores=4)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}     # a fresh process: no Ray yet
    run = subprocess.run([sys.executable, "-m", "orchestrator.cli", "campaign", "run",
                          str(ROOT / "campaigns" / "demo.yaml"), "--num-cpus", "2"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith("matscreen: error: the campaign's actors ask for 6 CPUs") and run.stderr.count("\n") == 1
    assert not (tmp_path / ".matscreen").exists()


def test_screened_fingerprint_counts_own_late_labels_but_not_others(tmp_path):
    """--incremental re-screens when frames the model never saw arrived from elsewhere, never because of the
    candidate's own last labels (no churn)."""
    import numpy as np
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    from orchestrator.campaign.driver import Campaign
    from reference.store import LabelStore

    def frames(n, symbol="Li"):
        out = []
        for k in range(n):
            a = bulk("Ar", "fcc", a=5.26, cubic=True)
            a.symbols[0] = symbol
            a.calc = SinglePointCalculator(a, energy=-1.0, forces=np.zeros((len(a), 3)))
            a.info.update(oracle="lj-argon", source="active-learning", temperature_K=300.0)
            out.append(a)
        return out

    c = Campaign(validate({"name": "fp"}), store=tmp_path, tracking_uri="sqlite:///x.db")
    store = LabelStore(tmp_path)
    row = {"key": "A", "formula": "LiAr", "structure_path": None}
    c.ledger.add_candidates([row])
    c.ledger.record_step("ref:A", ReferenceRun("fp/A/r0", "lj-argon", "ref.h5", 10, 3, 3, None, None, None,
                                               None).to_dict())
    store.write_shard(c.ctx.shard("A", 0), frames(3), "fp/A/r0")
    c.ledger.record_step("train:A:0", {"training_set": c.training_selection(row, "lj-argon").to_dict()})
    store.write_shard(c.ctx.shard("A", 1), frames(2), "fp/A/r1")          # its own last labels (never trained on)
    c._record_screened(row, "A")
    c.ledger.update_candidate("A", stage="done", reason="oracle_failing")
    assert c._new_generations([row]) == []                                  # no churn
    store.write_shard(c.ctx.shard("B", 0), frames(2), "fp/B/r0")          # another candidate's Li labels
    assert c._new_generations([row]) == ["A"] and c.gkey("A") == "A@g2"


def test_production_temperatures_are_the_users_or_planned_from_the_reference_down_with_the_slope_check():
    md = {"temperatures_K": [600, 800, 1000], "reference_temperature_K": 800, "steps": 400, "reference_steps": 500}
    assert validate({"md": md}).production_temperatures() == [1000.0, 800.0, 600.0]
    user = {"metadata": {"kind": "user-reference", "temperature_K": 1000.0, "duration_fs": 2000.0}}
    planned = validate({"md": {**md, "temperatures_K": []}, "precision": {"lowest_temperature_K": 500}})
    temps = planned.production_temperatures(user)            # from the user's reference temperature down
    assert len(temps) == 5 and temps[0] == 1000.0 and temps[-1] == 500.0
    slope = validate({"md": md, "precision": {"slope_check_temperature_K": 700}})
    assert slope.production_temperatures() == [1000.0, 800.0, 700.0, 600.0]
    with pytest.raises(InputError, match="second temperature"):
        validate({"md": md, "precision": {"slope_check_temperature_K": 800}})
    assert not validate({"md": {**md, "supercell": [2, 2, 1]}}).exploration_is_production()
    # the slope check is on by default: the second-coldest production temperature below the reference's
    auto = validate({"md": {**md, "temperatures_K": []}, "precision": {"lowest_temperature_K": 500}})
    assert auto.precision.slope_check_temperature_K == "auto"
    temps = auto.production_temperatures()
    assert auto.precision.slope_temperature(temps, 800.0) == sorted(temps)[1]
    assert auto.precision.slope_temperature([1000.0, 800.0], 800.0) is None          # nothing below: unchecked
    # a given temperature (a user's slope trajectory) replaces the planned one nearest to it in 1/T
    temps = auto.production_temperatures(slope_K=650.0)
    assert 650.0 in temps and len(temps) == len(auto.production_temperatures())
    with pytest.raises(InputError, match="precision.slope_check_temperature_K: 'sometimes' is not a temperature"):
        validate({"precision": {"slope_check_temperature_K": "sometimes"}})
    with pytest.raises(InputError, match="slope_check_temperature_K: must be > 0"):
        validate({"precision": {"slope_check_temperature_K": -5}})
    assert validate({"precision": {"slope_check_temperature_K": None}}).precision.slope_check_temperature_K is None
