"""The active-learning campaign: the driver that moves every candidate through the loop.

Per candidate (each step recorded in the ledger by a stable key and never redone on resume):

1. ``ref:<c>``        short oracle reference MD at ``md.reference_temperature_K`` (ReferenceWorker)
2. ``label:<c>:0``    its frames become the first labels, appended to the data store
3. round r = 0, 1, ...:
   ``trainset:<c>:<r>`` the training set, fixed before training: store frames of the campaign's oracle
                        sharing >= ``active_learning.min_shared_elements`` elements with the candidate
                        (its own labels always qualify), as (shard, frame indices) + a fingerprint
   ``train:<c>:<r>``   (re)train / fine-tune the ensemble on exactly those frames (Trainer)
   ``explore:<c>:<r>`` MLFF MD with the ensemble at the reference temperature (MDWorker)
   ``judge:<c>:<r>``   RDF vs the reference, fusion/explosion, force deviation vs the trust band
   reliable -> production; else ``label:<c>:<r+1>``: oracle labels for the selected frames, appended
   to the store
4. ``prod:<c>`` production MD, every temperature x replica as one batch, then ``transport:<c>``:
   D(T), sigma(T), Ea, log10 sigma(300 K) with errors.
5. ``screened:<c>``   when it finishes: the fingerprint of what its screening accounts for (the frames its
                     last training used + its own later labels; see :meth:`Campaign.seen_selection`).

The data store (``reference.store.LabelStore`` layout) is ``<store>/shards/*.extxyz``; this campaign's
shards have deterministic names (``campaign-<name>-<c>-r<n>.extxyz``) written atomically, so a label
step re-run after a crash rewrites its own shard instead of adding the frames twice.  Every frame
carries oracle, source (``oracle-md`` / ``active-learning``), temperature_K and
run_id ``<campaign>/<c>/r<n>``.

``run(incremental=True)`` re-screens a finished candidate whose selection fingerprint changed (new
shared-element labels in the store) as generation g: step keys and MLflow runs use ``<c>@g<g>``, the
reference MD and first labels are reused, earlier results stay in the ledger (``history:<c>:g<n>``).

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
from orchestrator.spec import Spec, store_root
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
        self.store_root = store_root(store, self.cfg)
        self.root = self.store_root / self.name
        self.ledger = Ledger(ledger_path(self.store_root, self.name))
        self.tracking_uri = resolve_tracking_uri(tracking_uri or self.cfg["tracking"]["uri"])
        self.experiment = experiment_name(self.cfg)
        self.key = f"{self.name}:{spec.science_hash()}"
        self.on_progress = on_progress
        self.rescreened: list[str] = []
        self._index = None
        self._index_lock = threading.Lock()
        self._elements: dict[str, set[str]] = {}
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
        from actors.placement import placement

        self.placement = placement(ray.cluster_resources(), gpus, r["cpus_per_oracle"])
        self.generator = roles.remote(roles.CandidateGenerator, **policy).remote()
        self.judge = roles.remote(roles.StabilityJudge, **policy).remote()
        self.trainer = roles.remote(roles.Trainer, num_cpus=r["cpus_per_trainer"], **policy).remote(
            r["cpus_per_trainer"])
        self.reference = roles.ActorPool([
            roles.remote(roles.ReferenceWorker, num_cpus=r["cpus_per_oracle"], resources=self.placement["reference"],
                         **policy).remote(r["cpus_per_oracle"])
            for _ in range(r["reference_workers"])])
        self.md = roles.ActorPool([
            roles.remote(roles.MDWorker, num_cpus=r["cpus_per_md_worker"], num_gpus=gpus,
                         resources=self.placement["md"], **policy).remote(r["cpus_per_md_worker"])
            for _ in range(r["md_workers"])])
        # the single MLflow writer: one actor, calls processed one at a time; on the head when the
        # cluster marks it (MLflow listens on the head's 127.0.0.1)
        self.tracker = roles.remote(Tracker, resources=self.placement["tracker"], **policy).remote(
            self.tracking_uri, self.experiment, self._artifact_root())
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
        if incremental:
            self.rescreened = self._new_generations(rows)
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
        gkey = self.gkey(key)
        cand = self.ledger.candidate(key)
        params = {"formula": row["formula"], "prototype": row.get("prototype") or "",
                  "model_version": cand.get("model_version") or "", "oracle": self.cfg["oracle"]["name"]}
        with self._tracker_lock:  # matplotlib's pyplot is not thread-safe
            artifacts = self._artifacts(gkey, result)
        if reason != "error":  # an errored candidate is retried on the next run, not "screened"
            self._record_screened(row, gkey)
        self.ledger.update_candidate(key, stage="done", reason=reason, verdict=verdict, detail=detail,
                                     results=result)
        with self._tracker_lock:
            self._track("log_candidate", self.key, gkey, params, self.ledger.rounds(gkey), result, verdict, reason,
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

    # --- the data store: shared-element training sets, generations ----------------------------------
    def generation(self, key: str) -> int:
        """How many times this candidate has been screened (1 = first; ``--incremental`` adds one when its
        training data in the store changed)."""
        done = self.ledger.step(f"generation:{key}")
        return int(done["generation"]) if done else 1

    def gkey(self, key: str) -> str:
        """Step/MLflow key of the candidate's current generation: ``<c>`` then ``<c>@g2``, ``<c>@g3``, ..."""
        g = self.generation(key)
        return key if g == 1 else f"{key}@g{g}"

    def _candidate_elements(self, row: dict) -> set[str]:
        """Elements of the candidate's structure (its formula when no structure)."""
        if row["key"] not in self._elements:
            if row.get("structure_path") and Path(row["structure_path"]).exists():
                from actors.science import read_frames

                self._elements[row["key"]] = set(read_frames(row["structure_path"])[0].get_chemical_symbols())
            else:
                self._elements[row["key"]] = _elements(row["formula"])
        return self._elements[row["key"]]

    def min_shared(self, row: dict) -> int:
        """``active_learning.min_shared_elements`` (default: all but one of the candidate's elements, >= 1),
        never above the candidate's own element count, so its own labels always qualify."""
        n = len(self._candidate_elements(row))
        wanted = self.cfg["active_learning"]["min_shared_elements"] or max(1, n - 1)
        return max(1, min(wanted, n))

    def training_selection(self, row: dict, oracle: str) -> dict:
        """Store frames of ``oracle`` sharing >= :meth:`min_shared` elements with the candidate, by
        (shard, index), with a fingerprint of the selection."""
        from actors.science import StoreIndex

        with self._index_lock:
            if self._index is None:
                self._index = StoreIndex(str(self.store_root))
            return self._index.select(self._candidate_elements(row), self.min_shared(row), oracle)

    def _shard(self, step_key: str, n: int) -> str:
        from actors.science import store_shard_path

        return store_shard_path(str(self.store_root), self.name, step_key, n)

    def _new_generations(self, rows: list[dict]) -> list[str]:
        """``--incremental``: a finished candidate whose training selection in the store changed since it was
        screened starts a new generation (fresh step keys ``<c>@g<n>``; old steps and results stay)."""
        out = []
        for row in rows:
            key = row["key"]
            cand = self.ledger.candidate(key)
            if cand["stage"] != "done" or cand["reason"] in ("error", "no_structure"):
                continue
            g = self.generation(key)
            then = self.ledger.step(f"screened:{self.gkey(key)}")
            if not then or not then.get("fingerprint"):
                continue
            now = self.training_selection(row, then["oracle"])
            if now["fingerprint"] != then["fingerprint"]:
                snapshot = {k: cand[k] for k in ("stage", "round", "model_version", "verdict", "reason", "detail",
                                                 "results")}
                self.ledger.new_generation(key, g + 1, {**snapshot, "generation": g, "screened": then})
                out.append(key)
        return out

    def _record_screened(self, row: dict, gkey: str) -> None:
        """The fingerprint of the candidate's training data in the store when it finished (for --incremental)."""
        if self.ledger.step(f"screened:{gkey}") is not None:
            return
        ref = self.ledger.step(f"ref:{row['key']}")
        if not ref or not ref.get("oracle") or ref.get("exploded") or ref.get("fusion"):
            return  # nothing a new model could change (no structure, or the oracle reference itself failed)
        sel = self.seen_selection(row, gkey, ref["oracle"])
        self.ledger.record_step(f"screened:{gkey}", {"fingerprint": sel["fingerprint"], "n_frames": sel["n_frames"],
                                                     "oracle": ref["oracle"], "generation": self.generation(row["key"])})

    def seen_selection(self, row: dict, gkey: str, oracle: str) -> dict:
        """The store selection this screening accounts for: the frames its last training round used plus the
        candidate's own labels added after it (those of a final labelling round).  Frames other candidates or
        campaigns added after that training are left out, so the next ``--incremental`` run sees them as new."""
        from actors.science import selection

        now = self.training_selection(row, oracle)
        trains = [(int(k.rsplit(":", 1)[1]), v) for k, v in self.ledger.steps("train:").items()
                  if k.rsplit(":", 1)[0] == f"train:{gkey}" and v.get("training_set")]
        if not trains:
            return now
        used = {(name, i) for name, idx in max(trains, key=lambda t: t[0])[1]["training_set"]["shards"] for i in idx}
        own = Path(self._shard(row["key"], 0)).name[:-len("-r0.extxyz")]  # campaign-<name>-<c>

        def mine(shard: str) -> bool:
            return shard.startswith(own + "-r") or shard.startswith(own + "@g")

        return selection([[name, [i for i in idx if mine(name) or (name, i) in used]] for name, idx in now["shards"]],
                         oracle)

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
        gkey = self.gkey(key)  # generation 2+ (--incremental): fresh steps, the reference is shared
        self._stage(key, "reference")
        with self._tracker_lock:
            self._track("candidate_progress", self.key, gkey, "reference", 0)
        ref = self._once(f"ref:{key}", key, lambda: self.reference.call(
            "reference_md", row["structure_path"], cfg["oracle"], md, seed, str(base / "reference" / f"{key}.h5")))
        if ref.get("exploded") or ref.get("fusion"):
            self._finish(row, "oracle_failing", "reference_failed",
                         f"oracle reference MD failed at step {ref.get('failed_step')}: {ref.get('error', 'unstable')}", {})
            return
        self._once(f"label:{key}:0", key, lambda: self.reference.call(
            "initial_labels", ref, al["initial_labels"], self._shard(key, 0), f"{self.name}/{key}/r0"))
        self._stage(key, "active_learning")
        members: list[str] | None = None
        verdict: dict = {}
        for r in range(al["max_rounds"] + 1):
            self._stage(key, "active_learning", r)
            init = members if cfg["training"]["fine_tune"] else None
            # the training set is fixed (recorded) before training, so a resumed step trains on the same frames
            sel = self._once(f"trainset:{gkey}:{r}", key, lambda: self.training_selection(row, ref["oracle"]))
            train = self._once(f"train:{gkey}:{r}", key, lambda: {**self._get(self.trainer.train.remote(
                [{"store": str(self.store_root), **sel}], cfg["models"], cfg["training"], init,
                str(base / "models" / gkey / f"r{r}"), seed + r)), "training_set": sel})
            members = train["members"]
            self.ledger.update_candidate(key, model_version=f"{gkey}/r{r}")
            info = {**{k: v for k, v in train.items() if k != "training_set"}, "candidate": gkey, "round": r,
                    "init": bool(init), "architectures": ",".join(cfg["models"]["architectures"])}
            with self._tracker_lock:  # every training round: a nested MLflow run (+ a registry version)
                self._track("log_training", self.key, f"{gkey}/r{r}", info,
                            f"{self.experiment}-ensemble" if cfg["tracking"]["register_models"] else None)
            explore = self._once(f"explore:{gkey}:{r}", key, lambda: self.md.call(
                "run", members, row["structure_path"], [md["reference_temperature_K"]], 1, md["exploration_steps"],
                md, st, seed + 1000 * r, str(base / "md" / gkey / f"explore_r{r}"), True)[0])
            verdict = self._once(f"judge:{gkey}:{r}", key, lambda: self._get(self.judge.judge.remote(
                explore, ref, st, al)))
            diag = {"round": r, "verdict": verdict["status"], "rdf_mae": verdict["rdf_mae"],
                    "accurate_fraction": verdict["accurate_fraction"],
                    "selected_fraction": verdict["selected_fraction"],
                    "failed_fraction": verdict["failed_fraction"], "train_force_mae_meV_A": train.get("force_mae_meV_A"),
                    "train_frames": sel["n_frames"]}
            if verdict["status"] == "reliable":
                self.ledger.record_round(gkey, r, diag)
                break
            if r == al["max_rounds"]:
                self.ledger.record_round(gkey, r, diag)
                self._finish(row, "budget_spent", verdict["status"],
                             f"no reliable model after {r + 1} rounds (last verdict {verdict['status']})", {})
                return
            if not verdict["frames"]:
                self.ledger.record_round(gkey, r, diag)
                self._finish(row, "budget_spent", verdict["status"],
                             "no frame could be selected for labelling (exploration collapsed)", {})
                return
            lab = self._once(f"label:{gkey}:{r + 1}", key, lambda: self.reference.call(
                "label", explore["path"], verdict["frames"], cfg["oracle"], md["reference_temperature_K"],
                f"{self.name}/{gkey}/r{r + 1}", self._shard(gkey, r + 1)))
            asked = lab["n_labels"] + lab["n_failed"]
            diag.update(labels_added=lab["n_labels"], labels_failed=lab["n_failed"])
            if lab["path"]:
                diag.update(self._once(f"force_errors:{gkey}:{r + 1}", key, lambda: self._get(
                    self.judge.force_errors.remote(members, lab["path"]))))
            self.ledger.record_round(gkey, r, diag)
            if asked and lab["n_failed"] / asked > cfg["oracle"]["max_failure_fraction"]:
                self._finish(row, "oracle_failing", verdict["status"],
                             f"oracle failed on {lab['n_failed']}/{asked} frames: {'; '.join(lab['errors'][:2])}", {})
                return
        # production: every temperature and replica, spread over the MD pool
        self._stage(key, "production")
        with self._tracker_lock:
            self._track("candidate_progress", self.key, gkey, "production", self.ledger.candidate(key)["round"])
        runs = self._once(f"prod:{gkey}", key, lambda: {"runs": self.md.call(
            "run", members, row["structure_path"], md["temperatures_K"], md["replicas"], md["steps"], md, st,
            seed + 77, str(base / "md" / gkey / "production"))})["runs"]
        stable = [run for run in runs if not (run.get("exploded") or run.get("fusion"))]
        unstable_t = sorted({run["temperature_K"] for run in runs if run not in stable})
        if not stable:
            self._finish(row, "budget_spent", "exploded",
                         f"production MD unstable at every temperature {unstable_t}", {})
            return
        result = self._once(f"transport:{gkey}", key, lambda: self._get(self.judge.transport.remote(
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
