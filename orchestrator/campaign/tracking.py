"""MLflow tracking: the Tracker is the campaign's single MLflow writer (sqlite takes one writer).

Layout: one experiment per campaign (``matscreen-<name>``); one parent run per campaign execution
(kept across resumes); nested runs per candidate (tag ``matscreen.kind=candidate``) and per
training round (``matscreen.kind=training``).  Every run carries a stable ``matscreen.key`` tag
and is looked up by it before one is created, so a resumed campaign never duplicates runs.
Metric names carry units: ``rdf_mae``, ``force_mae_meV_A``, ``diffusivity_cm2_s`` and
``conductivity_mS_cm`` (step = temperature in K), ``activation_energy_eV``, ``log10_sigma_300K``
(sigma in mS/cm), and ``<name>_err`` twins.  Ensembles go to the model registry, one version per
training round.  Everything logged passes through secret redaction.

Default store: ``sqlite:///<cwd>/.matscreen/mlflow.db`` (``~/.matscreen`` inside a Ray job) with
artifacts beside the database (``<its folder>/artifacts``); ``MLFLOW_TRACKING_URI`` (or the spec's
``tracking.uri``) overrides; a server keeps artifacts in its own artifact root.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from common import vocabulary as V

# Every metric the tracker logs, once, under one name: name -> (unit, meaning).  A name ending in ``*`` is a
# family (the rest of the name says which).  docs/metrics.md is this table (tests/test_mlflow_server.py).
METRICS: dict[str, tuple[str, str]] = {
    # the candidate's run: its answer
    "log10_sigma_300K": ("log10 mS/cm", "Li conductivity at 300 K, Arrhenius-extrapolated (the ranked number)"),
    "log10_sigma_300K_err": ("log10 mS/cm", "its error from the Arrhenius fit alone, where no error budget was "
                             "made (with one, this number is log10_sigma_300K_err_stat)"),
    "log10_sigma_300K_err_total": ("log10 mS/cm", "its total error (statistical, lack of fit and model in quadrature)"),
    "log10_sigma_300K_err_stat": ("log10 mS/cm", "statistical part of the total error"),
    "log10_sigma_300K_err_lack_of_fit": ("log10 mS/cm", "lack-of-fit part (non-Arrhenius scatter)"),
    "log10_sigma_300K_err_model": ("log10 mS/cm", "model part (student against oracle, carried to 300 K)"),
    "activation_energy_eV": ("eV", "activation energy of the Arrhenius fit of D"),
    "activation_energy_eV_err": ("eV", "its error"),
    "diffusivity_cm2_s": ("cm²/s", "Li tracer diffusivity; step = temperature in K"),
    "diffusivity_cm2_s_err": ("cm²/s", "its error; step = temperature in K"),
    "conductivity_mS_cm": ("mS/cm", "Nernst-Einstein conductivity; step = temperature in K"),
    "conductivity_mS_cm_err": ("mS/cm", "its error; step = temperature in K"),
    "student_ps": ("ps", "student production MD per replica; step = temperature in K"),
    "extrapolation_ratio": ("1", "1/T distance to 300 K over the fitted 1/T span"),
    "arrhenius_reduced_chi2": ("1", "reduced chi² of the Arrhenius fit"),
    "curvature_z": ("1", "significance of curvature in ln D against 1/T"),
    "production_spent_ps": ("ps", "student production MD spent"),
    "production_budget_ps": ("ps", "its budget"),
    "target_log10_err": ("log10 mS/cm", "the error target of the plan"),
    "oracle_labels": ("1", "oracle single points a tier-1 candidate needed"),
    "family_force_mae_meV_A": ("meV/Å", "tier 1: the family model's force MAE on the candidate before fine-tuning"),
    "tier1_log10_sigma_300K": ("log10 mS/cm", "tier 1's number of a candidate tier 2 verified"),
    "tier1_log10_sigma_300K_err_total": ("log10 mS/cm", "its total error"),
    "rank": ("1", "place in the ranking (1 = highest σ(300 K))"),
    "p_above_threshold": ("1", "P(σ(300 K) above the spec's threshold)"),
    "p_top_k": ("1", "P(among the k highest)"),
    # the candidate's run: per round of active learning (step = round)
    "rdf_mae": ("1", "RDF MAE of the student's MD against the reference"),
    "rdf_noise_floor": ("1", "the reference's own RDF MAE between its blocks"),
    "rdf_critical": ("1", "the RDF MAE above which the structure check fails"),
    "log10_ratio": ("log10", "log10(D student / D reference) at the reference temperature (dynamics check)"),
    "log10_ratio_err": ("log10", "its error"),
    "student_D_cm2_s": ("cm²/s", "the student's D at the reference temperature (dynamics check)"),
    "reference_D_cm2_s": ("cm²/s", "the reference's D there"),
    "selected_force_mae_meV_A": ("meV/Å", "the round's model's force MAE on the frames picked for labelling"),
    "accurate_fraction": ("1", "share of frames with ensemble deviation below the trust level"),
    "selected_fraction": ("1", "share between the trust levels (candidates for labels)"),
    "failed_fraction": ("1", "share above the upper trust level"),
    "trust_lo_eV_A": ("eV/Å", "the lower trust level of the ensemble deviation"),
    "labels_added": ("1", "oracle labels added after the round"),
    "labels_failed": ("1", "frames the oracle failed on"),
    "own_error_eV_A": ("eV/Å", "the student's force error on oracle-audited frames of its own MD (accuracy check)"),
    "reference_error_eV_A": ("eV/Å", "its force error on the reference's held-out frames"),
    "error_log10_ratio": ("log10", "log10(own error / reference error)"),
    "error_log10_ratio_err": ("log10", "its error"),
    "calibration_*": ("1", "deviation-vs-error calibration on labelled frames (spearman, medians, coverage)"),
    "reference_calibration_*": ("1", "the same on the reference's held-out frames"),
    "audit_calibration_*": ("1", "the same on audited frames"),
    # a training run (step = round)
    "val_force_mae_meV_A": ("meV/Å", "validation force MAE of the round's ensemble members (mean)"),
    # the campaign's run
    "candidates_*": ("1", "the campaign's counts: done, converged, inconclusive, failed, ...; simulated_ns in ns"),
    # the paper benchmark's run (one per cell: <metric>.<model>.<material>)
    "force_mae_meV_A.*": ("meV/Å", "the benchmark cell's student force MAE on the oracle's held-out frames"),
    "rdf_mae.*": ("1", "the benchmark cell's RDF MAE against the oracle's MD"),
    "neg_log10_sigma_300K.*": ("-log10 mS/cm", "the benchmark cell's −log10 σ(300 K), as the study reports it"),
}
UNITS_NOTE = ("Every metric of this run, its unit and meaning: docs/metrics.md in the matscreen repository "
              "(orchestrator.campaign.tracking.METRICS).  In short: log10_sigma_300K is log10 of sigma at 300 K in "
              "mS/cm with its error budget (_err_total, _err_stat, _err_lack_of_fit, _err_model); "
              "diffusivity_cm2_s, conductivity_mS_cm and student_ps use the step for the temperature in K; the "
              "per-round diagnostics use the step for the round; every _err is one standard error.")


def glossary_markdown() -> str:
    """docs/metrics.md's table: every metric name, its unit and meaning."""
    rows = "".join(f"| `{k}` | {u} | {m} |\n" for k, (u, m) in METRICS.items())
    return "| metric | unit | meaning |\n|---|---|---|\n" + rows


def known_metric(name: str) -> bool:
    """Whether ``name`` is in :data:`METRICS` (or one of its ``*`` families)."""
    return name in METRICS or any(k.endswith("*") and name.startswith(k[:-1]) for k in METRICS)


KEY_TAG = "matscreen.internal.key"     # the ledger's key of a run: internal, for resume (never a name)
LEGACY_KEY_TAG = "matscreen.key"       # the same, as stores written before 2026-12-07 named it
KIND_TAG = "matscreen.kind"
LOGGED_TAG = "matscreen.logged"


def default_tracking_uri(cwd: str | Path | None = None) -> str:
    """``sqlite:///<cwd>/.matscreen/mlflow.db`` (``~/.matscreen`` inside a Ray job)."""
    from orchestrator.ops.ray_runtime import base_dir

    base = Path(cwd or base_dir()).resolve() / ".matscreen"
    return f"sqlite:///{base / 'mlflow.db'}"


def default_artifact_root(tracking_uri: str) -> str | None:
    """Artifacts live with their store: ``<folder of the sqlite database>/artifacts``; None for a server
    (its own artifact root), never the working directory of whoever ran the command."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()
    return None


def resolve_tracking_uri(spec_uri: str | None, cwd: str | Path | None = None) -> str:
    """Spec ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the local sqlite default."""
    return spec_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(cwd)


def experiment_name(name: str, experiment: str | None = None) -> str:
    """The campaign's MLflow experiment: ``tracking.experiment``, else ``matscreen-<name>``."""
    return experiment or f"matscreen-{name}"


def _redact(obj: Any) -> Any:
    from orchestrator.ops.secrets import redact

    return redact(obj)


def _metric_ok(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Tracker:
    """Writes the campaign to MLflow; every method is idempotent (safe to retry after a crash)."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: str | None = None):
        from mlflow import MlflowClient

        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            root = artifact_root or default_artifact_root(tracking_uri)
            # the model-training view of MLflow 3's UI, not its GenAI view
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=root, tags={"mlflow.experimentKind": "custom_model_development"})
        else:
            self.experiment_id = exp.experiment_id
            if "mlflow.experimentKind" not in exp.tags:
                self.client.set_experiment_tag(self.experiment_id, "mlflow.experimentKind", "custom_model_development")
        self.experiment = experiment

    # --- runs -----------------------------------------------------------------------------------
    def find_run(self, key: str):
        for tag in (KEY_TAG, LEGACY_KEY_TAG):
            runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{tag}` = '{key}'",
                                           max_results=5)
            if runs:
                return runs[0]
        return None

    def run_id(self, key: str, kind: str, name: str, parent_key: str | None = None,
               tags: dict | None = None, parent_run_id: str | None = None, start_time_s: float | None = None) -> str:
        """The run for ``key``, created (nested under ``parent_run_id``, or ``parent_key``'s campaign run)
        if it does not exist."""
        found = self.find_run(key)
        if found is not None:
            if found.info.status not in ("RUNNING", "FINISHED") and found.data.tags.get("reason") == V.ERROR:
                self.client.update_run(found.info.run_id, status="RUNNING")
            return found.info.run_id
        all_tags = {KEY_TAG: key, KIND_TAG: kind, "mlflow.runName": name, **(tags or {})}
        if parent_run_id is None and parent_key is not None:
            parent_run_id = self.run_id(parent_key, "campaign", parent_key)
        if parent_run_id is not None:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, tags=_redact(all_tags), run_name=name,
                                     start_time=None if start_time_s is None else int(start_time_s * 1000))
        return run.info.run_id

    def start_campaign(self, key: str, name: str, spec: dict, spec_yaml: str) -> str:
        """The parent run of this campaign execution (reused on resume); logs the spec once."""
        run_id = self.run_id(key, "campaign", name)
        run = self.client.get_run(run_id)
        resumes = int(run.data.tags.get("matscreen.executions", "0")) + 1
        self.client.set_tag(run_id, "matscreen.executions", str(resumes))
        if "campaign" not in run.data.params:
            self._params(run_id, {"campaign": spec["name"], "oracle": spec["oracle"]["name"],
                                  "architectures": ",".join(spec["models"]["architectures"]),
                                  "ensemble_size": spec["models"]["size"],
                                  "temperatures_K": ",".join(str(t) for t in spec["md"]["temperatures_K"]),
                                  "max_rounds": spec["active_learning"]["max_rounds"]})
            self.client.log_text(run_id, _redact(spec_yaml), "spec/campaign.yaml")
        return run_id

    def _params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(run_id).data.params
        todo = [Param(k, str(v)[:500]) for k, v in _redact(params).items() if k not in existing]
        if todo:
            self.client.log_batch(run_id, params=todo)

    def _metrics(self, run_id: str, metrics: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        unknown = sorted({k for k, _, _ in metrics if not known_metric(k)})
        if unknown:
            raise ValueError(f"metrics {unknown} are not in tracking.METRICS: name each metric once, with its unit")
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, int(step)) for k, v, step in metrics if _metric_ok(v)]
        for i in range(0, len(batch), 500):
            self.client.log_batch(run_id, metrics=batch[i:i + 500])

    # --- candidates -----------------------------------------------------------------------------
    def candidate_run(self, campaign_key: str, key: str, name: str | None = None) -> str:
        """The candidate's run (nested under the campaign's), named ``name`` (short: the formula)."""
        return self.run_id(f"{campaign_key}/{key}", "candidate", name or key, parent_key=campaign_key,
                           tags={"matscreen.internal.candidate_key": key, "mlflow.note.content": UNITS_NOTE})

    def log_candidate(self, campaign_key: str, key: str, params: dict, rounds: list[dict], result: dict,
                      verdict: str, reason: str, artifacts: dict[str, list[str]] | None = None,
                      name: str | None = None) -> str:
        """One nested run per candidate with its params, per-round diagnostics, transport metrics,
        verdict/reason tags and artifacts.  Skipped if this candidate run was already completed."""
        run_id = self.candidate_run(campaign_key, key, name)
        run = self.client.get_run(run_id)
        if run.data.tags.get(LOGGED_TAG) == "1" and run.data.tags.get("reason") == reason:
            return run_id  # already complete (an errored candidate retried later is logged again)
        self._params(run_id, params)
        metrics: list[tuple[str, float, int]] = []
        for d in rounds:
            for name in ("rdf_mae", "rdf_noise_floor", "rdf_critical", "log10_ratio", "log10_ratio_err",
                         "student_D_cm2_s", "reference_D_cm2_s", "accurate_fraction",
                         "selected_fraction", "failed_fraction", "trust_lo_eV_A", "labels_added", "labels_failed",
                         "own_error_eV_A", "reference_error_eV_A", "error_log10_ratio", "error_log10_ratio_err"):
                if isinstance(d.get(name), (int, float)):
                    metrics.append((name, d[name], d["round"]))
            if isinstance(d.get("force_mae_meV_A"), (int, float)):
                metrics.append(("selected_force_mae_meV_A", d["force_mae_meV_A"], d["round"]))
            for prefix, cal in (("calibration", d.get("calibration")), ("reference_calibration",
                                                                           d.get("reference_calibration")),
                                ("audit_calibration", (d.get("audit") or {}).get("calibration"))):
                for name in ("spearman", "error_to_deviation_median", "error_bound_factor", "bound_coverage",
                             "missed_failures", "failures_caught"):
                    if isinstance((cal or {}).get(name), (int, float)):
                        metrics.append((f"{prefix}_{name}", cal[name], d["round"]))
        for i, t in enumerate(result.get("temperatures_K", [])):
            for name in ("diffusivity_cm2_s", "conductivity_mS_cm"):
                metrics.append((name, result[name][i], int(round(t))))       # step = temperature in K
                metrics.append((f"{name}_err", result[f"{name}_err"][i], int(round(t))))
        for name in ("activation_energy_eV", "log10_sigma_300K"):
            if name in result:
                metrics.append((name, result[name], 0))
                if not (name == "log10_sigma_300K" and _metric_ok(result.get("log10_sigma_300K_err_stat"))):
                    metrics.append((f"{name}_err", result.get(f"{name}_err", float("nan")), 0))
        for name in ("extrapolation_ratio", "arrhenius_reduced_chi2", "log10_sigma_300K_err_stat",
                     "log10_sigma_300K_err_lack_of_fit", "log10_sigma_300K_err_model", "log10_sigma_300K_err_total",
                     "curvature_z", "production_spent_ps", "production_budget_ps", "target_log10_err",
                     "oracle_labels", "family_force_mae_meV_A"):
            if isinstance(result.get(name), (int, float)) and not isinstance(result.get(name), bool):
                metrics.append((name, result[name], 0))
        for name in ("log10_sigma_300K", "log10_sigma_300K_err_total"):     # tier 2's run shows tier 1's number too
            if isinstance((result.get("tier1") or {}).get(name), (int, float)):
                metrics.append((f"tier1_{name}", result["tier1"][name], 0))
        for t, value in (result.get("student_ps_by_T") or {}).items():
            metrics.append(("student_ps", value, int(round(float(t)))))       # step = temperature in K
        self._metrics(run_id, metrics)
        for sub, paths in (artifacts or {}).items():
            for p in paths:
                if Path(p).exists():
                    self.client.log_artifact(run_id, p, sub)
        self.client.set_tag(run_id, "reason", reason)
        if verdict != reason:       # the judge's verdict, where it says more than how the candidate ended
            self.client.set_tag(run_id, "verdict", verdict)
        if result.get("tier") is not None:     # which tier produced this run's number (the funnel)
            self.client.set_tag(run_id, "tier", str(result["tier"]))
        for k, v in (result.get("checks") or {}).items():
            if isinstance(v, str) and k != "verdict":          # the verdict is the run's own tag
                self.client.set_tag(run_id, f"check.{k}", v)
        for t, status in (result.get("certification_by_T") or {}).items():
            self.client.set_tag(run_id, f"certification.{t}K", status)
        for p in result.get("repairs") or []:
            self.client.set_tag(run_id, f"repair.r{p['round']}", f"{p['temperature_K']:g} K: {p['status']}")
        for k in ("stopped_by", "model_bound", "target_reached", "slope_checked", "slope_check_K", "non_arrhenius"):
            if k in result:
                self.client.set_tag(run_id, f"precision.{k}", str(result[k]))
        known = [f"{v['quantity']}={v['value']} ({v.get('method', '')}; {v.get('source', '')})"
                 for v in result.get("known_values") or []]
        if known:
            self.client.set_tag(run_id, "known_values", " | ".join(known)[:5000])
        self.client.set_tag(run_id, LOGGED_TAG, "1")
        self.client.set_terminated(run_id, "FINISHED" if reason in V.FINISHED_WELL else "FAILED")
        return run_id

    def candidate_progress(self, campaign_key: str, key: str, stage: str, round_: int, name: str | None = None) -> None:
        """Mark a candidate's run as live (created early so the UI shows work in progress)."""
        run_id = self.candidate_run(campaign_key, key, name)
        self.client.set_tag(run_id, "matscreen.stage", stage)
        self.client.set_tag(run_id, "matscreen.round", str(round_))

    # --- training rounds and the registry -------------------------------------------------------
    def log_training(self, campaign_key: str, key: str, info: dict, register_as: str | None,
                     name: str | None = None, parent_name: str | None = None) -> str:
        """One run per training round ``<candidate>/r<k>`` named ``name`` (``<formula> · round <k>``), nested
        under its candidate's run (``parent_name``), with the training's own start and end times; the ensemble
        files as artifacts and (optionally) a registry version of ``register_as`` (one per round) whose
        description says what it was trained on and for which candidate."""
        candidate, _, round_ = key.rpartition("/")
        parent = self.candidate_run(campaign_key, candidate, parent_name)
        run_id = self.run_id(f"{campaign_key}/{key}", "training", name or key, parent_run_id=parent,
                             start_time_s=info.get("started_s"))
        run = self.client.get_run(run_id)
        if run.data.tags.get(LOGGED_TAG) != "1":
            self._params(run_id, {k: info[k] for k in ("round", "architectures", "n_frames", "init") if k in info})
            self._metrics(run_id, [("val_force_mae_meV_A", info.get("force_mae_meV_A"), int(info.get("round", 0)))])
            for p in info.get("members", []):
                self.client.log_artifact(run_id, p, "ensemble")
            self.client.set_tag(run_id, LOGGED_TAG, "1")
            end = info.get("finished_s")
            self.client.set_terminated(run_id, "FINISHED", end_time=None if end is None else int(end * 1000))
        if register_as:
            what = (f"{parent_name or candidate}, round {info.get('round', round_)}: an ensemble of "
                    f"{info.get('architectures', '?')} ({len(info.get('members', []))} members) "
                    f"{'fine-tuned' if info.get('init') else 'trained'} on {info.get('n_frames', '?')} oracle-labelled "
                    f"frames; validation force MAE {info.get('force_mae_meV_A', float('nan')):.1f} meV/Å.  Its checks "
                    "(structure, dynamics, accuracy, ensemble) are on the candidate's run, tags check.* and "
                    "certification.*.")
            self.register(register_as, run_id, key, what)
        return run_id

    def register(self, name: str, run_id: str, key: str, description: str | None = None) -> str:
        """A version of the registered model ``name`` from ``run_id``'s ensemble (once per ``key``), described."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name, description="Force-field ensembles matscreen trained for "
                                                "this experiment's candidates; each version says which.")
        except MlflowException:
            pass  # already there
        for mv in self.client.search_model_versions(f"name='{name}'"):
            if key in (mv.tags.get(KEY_TAG), mv.tags.get(LEGACY_KEY_TAG)):
                return mv.version
        artifact_uri = self.client.get_run(run_id).info.artifact_uri
        mv = self.client.create_model_version(name, f"{artifact_uri}/ensemble", run_id=run_id,
                                              tags={KEY_TAG: key}, await_creation_for=0, description=description)
        return mv.version

    # --- the parent run at the end ----------------------------------------------------------------
    def finish_campaign(self, key: str, results_csv: str | None, summary: dict, plots: list[str] = (),
                        tables: list[str] = (), ranks: list[dict] = ()) -> None:
        """Summary counts, ``results/results.csv`` and the results tables (units in their headers); each ranked
        candidate's run gets its place: metrics ``rank``, ``p_above_threshold``, ``p_top_k`` (``ranks``: the
        result rows, ``orchestrator.campaign.results.ranked``)."""
        run_id = self.run_id(key, "campaign", key)
        self._metrics(run_id, [(f"candidates_{k}", v, 0) for k, v in summary.items() if _metric_ok(v)])
        for row in ranks:
            found = self.find_run(f"{key}/{row['candidate']}")
            if found is not None and row.get("rank") is not None:
                self._metrics(found.info.run_id, [(m, row[m], 0) for m in ("rank", "p_above_threshold", "p_top_k")
                                                  if _metric_ok(row.get(m))])
            elif found is not None and row.get("why"):
                self.client.set_tag(found.info.run_id, "not_ranked", row["why"][:5000])   # no rank: why, in words
        for f in [results_csv, *tables]:
            if f and Path(f).exists():
                self.client.log_artifact(run_id, f, "results")
        for p in plots:
            if Path(p).exists():
                self.client.log_artifact(run_id, p, "plots")
        self.client.set_terminated(run_id, "FINISHED")

    # --- the benchmark table ------------------------------------------------------------------------
    def log_benchmark(self, name: str, params: dict, rows: list[dict], files: list[str]) -> str:
        """One run (tag ``matscreen.kind=benchmark``): params, a metric ``<column>.<model>.<material>`` per
        cell, a tag ``verdict.<model>.<material>`` per row, and the table files under ``benchmark/``."""
        run = self.client.create_run(self.experiment_id, run_name=name, tags={KIND_TAG: "benchmark"})
        rid = run.info.run_id
        self._params(rid, params)
        self._metrics(rid, [(f"{m}.{r['model']}.{r['material']}", r[m], 0) for r in rows
                            for m in ("force_mae_meV_A", "rdf_mae", "neg_log10_sigma_300K")])
        for r in rows:
            self.client.set_tag(rid, f"verdict.{r['model']}.{r['material']}", r["verdict"])
        for f in files:
            self.client.log_artifact(rid, f, "benchmark")
        self.client.set_terminated(rid, "FINISHED")
        return rid

    # --- scheduled executions (experiment ``matscreen-schedules``) -----------------------------------
    def start_schedule_execution(self, schedule, execution) -> str:
        """One run per scheduler execution (tag ``matscreen.kind=schedule-execution``); returns its run id."""
        from datetime import datetime

        tags = {KIND_TAG: "schedule-execution", "matscreen.schedule": schedule.name, "outcome": execution.outcome,
                "mlflow.runName": f"{schedule.name}@{execution.slot}"}
        start = datetime.fromisoformat(execution.submitted_at.replace("Z", "+00:00"))
        run = self.client.create_run(self.experiment_id, tags=_redact(tags), start_time=int(start.timestamp() * 1000))
        self._params(run.info.run_id, {"schedule": schedule.name, "spec": schedule.spec, "cron": schedule.cron,
                                       "slot": execution.slot, "job_id": execution.job_id or "",
                                       "incremental": schedule.incremental, "working_dir": schedule.working_dir})
        if execution.message:
            self.client.set_tag(run.info.run_id, "message", _redact(execution.message)[:4000])
        return run.info.run_id

    def finish_schedule_execution(self, run_id: str, outcome: str, status: str, when) -> None:
        """Record the final ``outcome`` and close the run with MLflow ``status``."""
        self.client.set_tag(run_id, "outcome", outcome)
        self.client.set_terminated(run_id, status=status, end_time=int(when.timestamp() * 1000))

    def count_runs(self) -> dict[str, int]:
        """Runs per kind in this experiment (for status and tests)."""
        return run_counts(self.tracking_uri, self.experiment)


def run_counts(tracking_uri: str, experiment: str) -> dict[str, int]:
    """Runs per ``matscreen.kind`` in ``experiment`` (read only: {} when the experiment does not exist)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    out: dict[str, int] = {}
    for run in client.search_runs([exp.experiment_id], max_results=5000) if exp else []:
        kind = run.data.tags.get(KIND_TAG, "?")
        out[kind] = out.get(kind, 0) + 1
    return out


def mlflow_ui_command(tracking_uri: str, artifact_root: str | None = None) -> str:
    cmd = f"mlflow ui --backend-store-uri {tracking_uri}"
    if artifact_root:
        cmd += f" --default-artifact-root {artifact_root}"
    return cmd


def mlflow_ui_url(tracking_uri: str, experiment: str, base: str = "http://127.0.0.1:5000") -> str | None:
    """The experiment's runs in MLflow's model-training view (MLflow 3.x opens in its GenAI view unless the URL
    says ``workflowType=machine_learning``); an http(s) tracking URI is its own base.  None: no such experiment."""
    import mlflow

    found = mlflow.MlflowClient(tracking_uri).get_experiment_by_name(experiment)
    if found is None:
        return None
    root = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else base
    return f"{root}/#/experiments/{found.experiment_id}/runs?workflowType=machine_learning"


def mlflow_ui_lines(tracking_uri: str, experiment: str) -> str:
    """What a user runs and opens to see a campaign's results: the command (for a local store) and the URL."""
    url = mlflow_ui_url(tracking_uri, experiment)
    if tracking_uri.startswith(("http://", "https://")):
        return f"open the MLflow UI:  {url}"
    return f"open the MLflow UI:  {mlflow_ui_command(tracking_uri)}\n  then:  {url}"
