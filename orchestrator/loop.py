"""The active-learning campaign: the driver that moves every candidate through the loop.

Per candidate (each step recorded in the ledger by a stable key and never redone on resume):

1. ``ref:<c>``        short oracle reference MD at ``md.reference_temperature_K`` (ReferenceWorker)
2. ``label:<c>:0``    its frames become the first labels
3. round r = 0, 1, ...:
   ``train:<c>:<r>``   (re)train / fine-tune the ensemble on shared-element labels (Trainer)
   ``explore:<c>:<r>`` MLFF MD with the ensemble at the reference temperature (MDWorker)
   ``judge:<c>:<r>``   RDF vs the reference, fusion/explosion, force deviation vs the trust band
   reliable -> production; else ``label:<c>:<r+1>``: oracle labels for the selected frames
4. ``prod:<c>`` production MD, every temperature x replica as one batch, then ``transport:<c>``:
   D(T), sigma(T), Ea, log10 sigma(300 K) with errors.

Reasons a candidate ends: converged, budget_spent (max_rounds without a reliable model),
oracle_failing (the oracle fails on too many frames), no_structure; ``error`` (with the message)
for anything unexpected, so one broken candidate never stops the campaign.
"""
from __future__ import annotations

import csv
import io
import os
import re
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from common.atomic import atomic_write_text
from common.errors import InputError
from orchestrator.spec import Spec
from orchestrator.state import Ledger, ledger_path


def _elements(formula: str) -> set[str]:
    return set(re.findall(r"[A-Z][a-z]?", formula))


class Campaign:
    """Runs (or resumes) a campaign described by a validated :class:`Spec`."""

    def __init__(self, spec: Spec, store: str | Path | None = None, tracking_uri: str | None = None,
                 on_progress: Callable[[dict], None] | None = None):
        from orchestrator.tracking import experiment_name, resolve_tracking_uri

        self.spec = spec
        self.cfg = spec.to_dict()
        self.name = self.cfg["name"]
        self.root = Path(store or self.cfg["store"]["path"]).resolve() / self.name
        self.ledger = Ledger(ledger_path(self.root.parent, self.name))
        self.tracking_uri = resolve_tracking_uri(tracking_uri or self.cfg["tracking"]["uri"])
        self.experiment = experiment_name(self.cfg)
        self.key = f"{self.name}:{spec.science_hash()}"
        self.on_progress = on_progress
        self._check_spec()

    # --- setup ----------------------------------------------------------------------------------
    def _check_spec(self) -> None:
        old = self.ledger.get_meta("science_hash")
        if old is None:
            self.ledger.set_meta("science_hash", self.spec.science_hash())
            self.ledger.set_meta("spec", self.cfg)
            self.ledger.set_meta("tracking_uri", self.tracking_uri)
            self.ledger.set_meta("experiment", self.experiment)
        elif old != self.spec.science_hash():
            raise InputError(f"campaign '{self.name}' in {self.root} was started with a different spec; "
                             "resume with the same file, or give the changed campaign a new `name`")

    def _actors(self) -> None:
        import ray

        from actors import roles
        from orchestrator.tracking import Tracker

        r = self.cfg["resources"]
        policy = dict(max_restarts=r["max_restarts"], max_task_retries=r["max_task_retries"])
        gpus = r["gpus_per_md_worker"]
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        self.generator = roles.remote(roles.CandidateGenerator, **policy).remote()
        self.judge = roles.remote(roles.StabilityJudge, **policy).remote()
        self.trainer = roles.remote(roles.Trainer, num_cpus=r["cpus_per_trainer"], **policy).remote(
            r["cpus_per_trainer"])
        self.reference = roles.ActorPool([
            roles.remote(roles.ReferenceWorker, num_cpus=r["cpus_per_oracle"], **policy).remote(r["cpus_per_oracle"])
            for _ in range(r["reference_workers"])])
        self.md = roles.ActorPool([
            roles.remote(roles.MDWorker, num_cpus=r["cpus_per_md_worker"], num_gpus=gpus, **policy).remote(
                r["cpus_per_md_worker"])
            for _ in range(r["md_workers"])])
        # the single MLflow writer: one actor, calls processed one at a time
        self.tracker = roles.remote(Tracker, **policy).remote(self.tracking_uri, self.experiment,
                                                              self._artifact_root())
        self._tracker_lock = threading.RLock()

    def _artifact_root(self) -> str | None:
        from orchestrator.tracking import default_artifact_root

        return default_artifact_root() if self.tracking_uri.startswith("sqlite") else None

    def _track(self, method: str, *args) -> Any:
        import ray

        return ray.get(getattr(self.tracker, method).remote(*args))

    def _get(self, ref) -> Any:
        import ray

        return ray.get(ref)

    # --- the run --------------------------------------------------------------------------------
    def run(self, incremental: bool = False) -> dict:
        """Run every candidate to a final reason; returns the summary counts.

        ``incremental``: generate the candidate list again and screen the new ones (finished
        candidates are kept as they are), e.g. for a scheduled campaign whose space grew.
        """
        lock = self._lock()
        try:
            self._actors()
            try:
                return self._run(incremental)
            finally:
                self.close()
        finally:
            lock.close()  # releases the flock

    def _lock(self):
        """One driver per campaign: an exclusive flock on ``<store>/<name>/campaign.lock`` (freed by the OS
        when the driver dies, so a killed driver never blocks the resume)."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        fh = open(self.root / "campaign.lock", "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise InputError(f"campaign '{self.name}' is already running ({holder}); wait for it or stop it first") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        return fh

    def close(self) -> None:
        """Release this campaign's actors (their CPUs/GPUs go back to the cluster)."""
        import ray

        handles = [getattr(self, n, None) for n in ("generator", "judge", "trainer", "tracker")]
        handles += [a for pool in (getattr(self, "reference", None), getattr(self, "md", None)) if pool
                    for a in pool.actors]
        for h in handles:
            if h is not None:
                try:
                    ray.kill(h, no_restart=True)
                except Exception:  # noqa: BLE001 - already gone
                    pass

    def _run(self, incremental: bool) -> dict:
        self._track("start_campaign", self.key, self.name, self.cfg, self.spec.to_yaml())
        generate = lambda: self._get(self.generator.generate.remote(self.cfg, str(self.root / "candidates")))  # noqa: E731
        rows = self.ledger.step("candidates")
        if rows is None or incremental:
            fresh = generate()
            known = {r["key"] for r in rows or []}
            rows = (rows or []) + [r for r in fresh if r["key"] not in known]
            self.ledger.record_step("candidates", rows)
        self.ledger.add_candidates(rows)
        self._notify()
        with ThreadPoolExecutor(max_workers=self.cfg["resources"]["queue_size"]) as pool:
            list(pool.map(self._candidate_safe, rows))
        csv_path = self.write_results_csv()
        summary = self.ledger.summary()
        self._track("finish_campaign", self.key, csv_path, summary, [])
        self._notify()
        return summary

    def _notify(self) -> None:
        if self.on_progress:
            self.on_progress(self.ledger.summary())

    def _candidate_safe(self, row: dict) -> None:
        try:
            self._candidate(row)
        except Exception as exc:  # noqa: BLE001 - record and go on with the other candidates
            detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
            self._finish(row, "error", "error", detail, {})
            traceback.print_exc()

    def _finish(self, row: dict, reason: str, verdict: str, detail: str, result: dict) -> None:
        key = row["key"]
        cand = self.ledger.candidate(key)
        params = {"formula": row["formula"], "prototype": row.get("prototype") or "",
                  "model_version": cand.get("model_version") or "", "oracle": self.cfg["oracle"]["name"]}
        with self._tracker_lock:  # matplotlib's pyplot is not thread-safe
            artifacts = self._artifacts(key, result)
        self.ledger.update_candidate(key, stage="done", reason=reason, verdict=verdict, detail=detail,
                                     results=result)
        with self._tracker_lock:
            self._track("log_candidate", self.key, key, params, self.ledger.rounds(key), result, verdict, reason,
                        artifacts)
        self._notify()

    def _artifacts(self, key: str, result: dict) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        try:
            from orchestrator.campaign_plots import candidate_plots

            out["plots"] = candidate_plots(self.root / "plots" / key, self.ledger, key, result)
        except Exception:  # noqa: BLE001 - plots are a convenience, never fatal
            out["plots"] = []
        if self.cfg["tracking"]["log_trajectories"]:
            md_dir = self.root / "md" / key
            out["trajectories"] = sorted(str(p) for p in md_dir.glob("*/*.h5")) if md_dir.exists() else []
        return out

    def _stage(self, key: str, stage: str, round_: int | None = None) -> None:
        fields: dict[str, Any] = {"stage": stage}
        if round_ is not None:
            fields["round"] = round_
        self.ledger.update_candidate(key, **fields)
        self._notify()

    def _once(self, step: str, key: str, work: Callable[[], Any]) -> Any:
        """A ledger step; MD steps add their simulated time to the candidate."""
        done = self.ledger.step(step)
        if done is not None:
            return done
        value = work()
        self.ledger.record_step(step, value)
        runs = value.get("runs", [value]) if isinstance(value, dict) else []
        ps = sum(r.get("simulated_ps", 0.0) for r in runs if isinstance(r, dict))
        if ps:
            self.ledger.add_simulated_ps(key, ps)
        return value

    def _training_set(self, key: str, formula: str) -> list[str]:
        """This candidate's labels plus labels of candidates whose elements are a subset of its own."""
        mine = _elements(formula)
        formulas = {c["key"]: c["formula"] for c in self.ledger.candidates()}
        paths = []
        for step, value in self.ledger.steps("label:").items():
            owner = step.split(":")[1]
            if not value.get("path"):
                continue
            if owner == key or _elements(formulas.get(owner, "")) <= mine:
                paths.append(value["path"])
        return paths

    def _candidate(self, row: dict) -> None:
        cfg, key = self.cfg, row["key"]
        cand = self.ledger.candidate(key)
        if cand["stage"] == "done" and cand["reason"] == "error":
            self.ledger.update_candidate(key, stage="pending", reason=None, detail=None)  # retry; steps are kept
            cand = self.ledger.candidate(key)
        if cand["stage"] == "done":  # make sure MLflow has it (a crash may have hit between the two)
            self._finish(row, cand["reason"], cand["verdict"] or "", cand["detail"] or "", cand["results"])
            return
        if not row.get("structure_path"):
            self._finish(row, "no_structure", "none", row.get("reason") or "no structure", {})
            return
        md, st, al = cfg["md"], cfg["stability"], cfg["active_learning"]
        seed = cfg["seed"]
        base = self.root
        self._stage(key, "reference")
        with self._tracker_lock:
            self._track("candidate_progress", self.key, key, "reference", 0)
        ref = self._once(f"ref:{key}", key, lambda: self.reference.call(
            "reference_md", row["structure_path"], cfg["oracle"], md, seed, str(base / "reference" / f"{key}.h5")))
        if ref.get("exploded") or ref.get("fusion"):
            self._finish(row, "oracle_failing", "reference_failed",
                         f"oracle reference MD failed at step {ref.get('failed_step')}: {ref.get('error', 'unstable')}", {})
            return
        self._once(f"label:{key}:0", key, lambda: self.reference.call(
            "initial_labels", ref, al["initial_labels"], str(base / "labels" / "shards" / f"{key}_r0.extxyz")))
        self._stage(key, "active_learning")
        members: list[str] | None = None
        verdict: dict = {}
        for r in range(al["max_rounds"] + 1):
            self._stage(key, "active_learning", r)
            labels = self._training_set(key, row["formula"])
            init = members if cfg["training"]["fine_tune"] else None
            train = self._once(f"train:{key}:{r}", key, lambda: self._get(self.trainer.train.remote(
                labels, cfg["models"], cfg["training"], init, str(base / "models" / key / f"r{r}"), seed + r)))
            members = train["members"]
            self.ledger.update_candidate(key, model_version=f"{key}/r{r}")
            info = {**train, "candidate": key, "round": r, "init": bool(init),
                    "architectures": ",".join(cfg["models"]["architectures"])}
            with self._tracker_lock:  # every training round: a nested MLflow run (+ a registry version)
                self._track("log_training", self.key, f"{key}/r{r}", info,
                            f"{self.experiment}-ensemble" if cfg["tracking"]["register_models"] else None)
            explore = self._once(f"explore:{key}:{r}", key, lambda: self.md.call(
                "run", members, row["structure_path"], [md["reference_temperature_K"]], 1, md["exploration_steps"],
                md, st, seed + 1000 * r, str(base / "md" / key / f"explore_r{r}"), True)[0])
            verdict = self._once(f"judge:{key}:{r}", key, lambda: self._get(self.judge.judge.remote(
                explore, ref, st, al)))
            diag = {"round": r, "verdict": verdict["status"], "rdf_mae": verdict["rdf_mae"],
                    "accurate_fraction": verdict["accurate_fraction"],
                    "selected_fraction": verdict["selected_fraction"],
                    "failed_fraction": verdict["failed_fraction"], "train_force_mae_meV_A": train.get("force_mae_meV_A")}
            if verdict["status"] == "reliable":
                self.ledger.record_round(key, r, diag)
                break
            if r == al["max_rounds"]:
                self.ledger.record_round(key, r, diag)
                self._finish(row, "budget_spent", verdict["status"],
                             f"no reliable model after {r + 1} rounds (last verdict {verdict['status']})", {})
                return
            if not verdict["frames"]:
                self.ledger.record_round(key, r, diag)
                self._finish(row, "budget_spent", verdict["status"],
                             "no frame could be selected for labelling (exploration collapsed)", {})
                return
            lab = self._once(f"label:{key}:{r + 1}", key, lambda: self.reference.call(
                "label", explore["path"], verdict["frames"], cfg["oracle"], md["reference_temperature_K"],
                f"{key}/r{r}", str(base / "labels" / "shards" / f"{key}_r{r + 1}.extxyz")))
            asked = lab["n_labels"] + lab["n_failed"]
            diag.update(labels_added=lab["n_labels"], labels_failed=lab["n_failed"])
            if lab["path"]:
                diag.update(self._once(f"force_errors:{key}:{r + 1}", key, lambda: self._get(
                    self.judge.force_errors.remote(members, lab["path"]))))
            self.ledger.record_round(key, r, diag)
            if asked and lab["n_failed"] / asked > cfg["oracle"]["max_failure_fraction"]:
                self._finish(row, "oracle_failing", verdict["status"],
                             f"oracle failed on {lab['n_failed']}/{asked} frames: {'; '.join(lab['errors'][:2])}", {})
                return
        # production: every temperature and replica, spread over the MD pool
        self._stage(key, "production")
        with self._tracker_lock:
            self._track("candidate_progress", self.key, key, "production", self.ledger.candidate(key)["round"])
        runs = self._once(f"prod:{key}", key, lambda: {"runs": self.md.call(
            "run", members, row["structure_path"], md["temperatures_K"], md["replicas"], md["steps"], md, st,
            seed + 77, str(base / "md" / key / "production"))})["runs"]
        stable = [run for run in runs if not (run.get("exploded") or run.get("fusion"))]
        unstable_t = sorted({run["temperature_K"] for run in runs if run not in stable})
        if not stable:
            self._finish(row, "budget_spent", "exploded",
                         f"production MD unstable at every temperature {unstable_t}", {})
            return
        result = self._once(f"transport:{key}", key, lambda: self._get(self.judge.transport.remote(
            stable, row["structure_path"], md["equilibration_steps"])))
        detail = f"unstable at {unstable_t} K (dropped)" if unstable_t else ""
        self._finish(row, "converged", "reliable", detail, result)

    # --- results --------------------------------------------------------------------------------
    def write_results_csv(self) -> str:
        path = self.root / "results.csv"
        atomic_write_text(path, results_csv(self.ledger, self.cfg["candidates"]["rank_by"]))
        return str(path)


RESULT_COLUMNS = ["rank", "candidate", "formula", "prototype", "reason", "verdict", "rounds",
                  "log10_sigma_300K", "log10_sigma_300K_err", "activation_energy_eV", "activation_energy_eV_err",
                  "simulated_ns", "detail"]


def ranked(ledger: Ledger, rank_by: str = "log10_sigma_300K") -> list[dict]:
    """Candidates as result rows: converged ones ranked by ``rank_by`` (Ea: lower is better), then the rest."""
    rows = []
    for c in ledger.candidates():
        res = c["results"] or {}
        rows.append({"candidate": c["key"], "formula": c["formula"], "prototype": c["prototype"] or "",
                     "stage": c["stage"], "reason": c["reason"] or "", "verdict": c["verdict"] or "",
                     "rounds": c["round"] + (1 if c["stage"] != "pending" else 0),
                     "log10_sigma_300K": res.get("log10_sigma_300K"),
                     "log10_sigma_300K_err": res.get("log10_sigma_300K_err"),
                     "activation_energy_eV": res.get("activation_energy_eV"),
                     "activation_energy_eV_err": res.get("activation_energy_eV_err"),
                     "conductivity_mS_cm": res.get("conductivity_mS_cm"),
                     "temperatures_K": res.get("temperatures_K"),
                     "simulated_ns": round(c["simulated_ps"] / 1000.0, 6), "detail": c["detail"] or ""})

    def score(row):
        value = row.get(rank_by)
        if isinstance(value, list):
            value = value[-1] if value else None
        if row["reason"] != "converged" or value is None:
            return (1, 0.0)
        return (0, value if rank_by == "activation_energy_eV" else -value)

    rows.sort(key=score)
    for i, row in enumerate(rows, 1):
        row["rank"] = i if row["reason"] == "converged" and score(row)[0] == 0 else None
    return rows


def results_csv(ledger: Ledger, rank_by: str = "log10_sigma_300K") -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in ranked(ledger, rank_by):
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in RESULT_COLUMNS})
    return buf.getvalue()


def format_table(rows: list[dict]) -> str:
    """The ranked table for the console."""

    def pm(v, e, fmt="{:.2f}"):
        if v is None:
            return "-"
        return (fmt.format(v) + (" ± " + fmt.format(e) if e is not None else ""))

    head = ["rank", "candidate", "reason", "rounds", "log10 σ300K (mS/cm)", "Ea (eV)", "sim ps"]
    body = [[str(r["rank"] or "-"), r["candidate"], r["reason"] or r["stage"], str(r["rounds"]),
             pm(r["log10_sigma_300K"], r["log10_sigma_300K_err"]),
             pm(r["activation_energy_eV"], r["activation_energy_eV_err"], "{:.3f}"), f"{r['simulated_ns'] * 1000:.1f}"]
            for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)


def ray_init(num_cpus: int | None = None) -> bool:
    """Connect to ``$RAY_ADDRESS`` or start a local Ray (no dashboard); True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return True
