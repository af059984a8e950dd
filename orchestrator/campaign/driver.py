"""The active-learning campaign: the driver that moves every candidate through the step table (``steps.STEPS``).

Each step sends one typed request (``actors.requests``) to its role through the step runner
(``runner.StepRunner``), which records the typed result in the ledger by the step's key and never runs it
again on resume.  A candidate's walk returns one :class:`Outcome`, recorded in one place (``_finish``).
Per candidate:

1. ``ref:<c>``          oracle MD at ``md.reference_temperature_K``; its labels (every
                        ``reference_steps / initial_labels`` steps) are the store shard r0.  A candidate
                        named in ``reference_data.trajectories`` uses the user's trajectory instead (its
                        temperature and length set the exploration's; ``reference.user_reference``): its
                        own labels under ``reference_data.oracle``, else the campaign oracle labels its frames
2. round r = 0, 1, ...:
   ``trainset:<c>:<r>`` the training set, fixed before training: store frames of the campaign's oracle
                        sharing >= ``active_learning.min_shared_elements`` elements with the candidate
                        (its own labels always qualify), as (shard, frame indices) + a fingerprint
   ``train:<c>:<r>``    (re)train / fine-tune the ensemble on exactly those frames
   ``explore:<c>:<r>``  student MD at the reference temperature (same protocol, stride and length as the reference),
                        ``md.exploration_replicas`` replicas in one batch, judged as one
   ``calibrate:<c>:<r>`` the ensemble's deviation and true force error on the reference's frames
   ``audit:<c>:<r>``    oracle labels of frames spread over the exploration run (shard <c>-audit r<r>) and the
                        ensemble's true error and calibration there (the accuracy check)
   ``judge:<c>:<r>``    the one judge (``analysis``): broken run / lattice / RDF against the reference's own
                        noise / D(Li) against the reference's / force error on its own MD against the
                        reference's / ensemble deviation
   stable or inconclusive -> production; else ``label:<c>:<r+1>``: oracle labels for the selected frames
   (shard r<r+1>) and ``force_errors:<c>:<r+1>`` of the ensemble on them, with the deviation's calibration
3. ``prod:<c>``         every temperature x replica as one batch, then ``transport:<c>``:
                        D(T), sigma(T), Ea, log10 sigma(300 K) with errors.  The judged exploration run is
                        production replicas at the reference temperature (not run again when they are enough)
4. ``screened:<c>``     when it finishes: the fingerprint of what its screening accounts for (the frames its
                        last training used + its own later labels; see :meth:`Campaign.seen_selection`).

``run(incremental=True)`` re-screens a finished candidate whose selection fingerprint changed (new
shared-element labels in the store) as generation g: step keys and MLflow runs use ``<c>@g<g>``, the
reference MD and its labels are reused, earlier results stay in the ledger (``history:<c>:g<n>``).

Reasons a candidate ends: converged (every check against the reference passed), inconclusive (nothing
failed, but a check could not be decided with the runs' lengths: production still runs and its numbers
are reported, flagged), budget_spent (max_rounds without a stable model), oracle_failing
(the oracle fails in its reference MD or on too many frames), no_structure; ``error`` (with the
message) for anything unexpected, so one broken candidate never stops the campaign.
"""
from __future__ import annotations

import os
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from common.atomic import atomic_write_text
from common import vocabulary as V
from common.errors import InputError
from actors.requests import Runs
from orchestrator.campaign import steps
from orchestrator.campaign.results import ranked, results_markdown, rows_csv
from orchestrator.campaign.runner import Roles, StepRunner
from orchestrator.campaign.spec import USER_REFERENCE, Spec, store_root
from orchestrator.campaign.state import Ledger, ledger_path
from orchestrator.campaign.steps import STEPS
from analysis.verdicts import check_summary
from reference.reference_md import ReferenceRun
from reference.store import Selection


@dataclass
class Outcome:
    """How a candidate ended: its reason (``common.vocabulary.REASONS``), the last verdict, why, its numbers
    and the plots drawn for it."""
    reason: str
    verdict: str
    detail: str = ""
    result: dict = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)


@dataclass
class Usable:
    """The active-learning loop's exit towards production: the members, the verdict that let them through
    and the judged exploration run."""
    members: list[str]
    verdict: Any                 # analysis.verdicts.Verdict
    explored: Runs
    errors: Any = None           # actors.requests.Errors: the ensemble's on the reference's held-out block
    round: int = 0               # the active-learning round that trained the members


@dataclass
class Repair:
    """Production stopped at a temperature whose certification failed: the model of ``round`` goes back to
    active learning (round + 1 trains on the oracle's labels there, then production starts again)."""
    round: int
    temperature_K: float
    status: str
    passed: tuple = ()           # the temperatures this model's production had certified before (K)

    def to_dict(self) -> dict:
        return {"round": self.round, "temperature_K": self.temperature_K, "status": self.status,
                "passed_K": sorted(self.passed)}


class Campaign:
    """Runs (or resumes) a campaign described by a validated :class:`Spec`."""

    def __init__(self, spec: Spec, store: str | Path | None = None, tracking_uri: str | None = None,
                 on_progress: Callable[[dict], None] | None = None):
        from orchestrator.campaign.tracking import experiment_name, resolve_tracking_uri

        spec.check_production_budget()     # before anything is written
        self.spec = spec
        self.name = spec.name
        self.store_root = store_root(store, spec)
        self.root = self.store_root / self.name
        self.ledger = Ledger(ledger_path(self.store_root, self.name))
        self.tracking_uri = resolve_tracking_uri(tracking_uri or spec.tracking.uri)
        self.experiment = experiment_name(spec.name, spec.tracking.experiment)
        self.key = f"{self.name}:{spec.science_hash()}"
        self.on_progress = on_progress
        self.rescreened: list[str] = []
        self.ctx = steps.Context(spec, self.root, self.store_root)
        self.roles: Roles | None = None
        self.tracker = None
        self.steps = StepRunner(self.ledger)
        self._store_lock = threading.Lock()
        self._tracker_lock = threading.RLock()
        self._elements: dict[str, set[str]] = {}
        self._check_spec()

    # --- setup ----------------------------------------------------------------------------------
    def _check_spec(self) -> None:
        old = self.ledger.get_meta("science_hash")
        if old is None:
            self.ledger.set_meta("science_hash", self.spec.science_hash())
            self.ledger.set_meta("spec", self.spec.to_dict())
            self.ledger.set_meta("tracking_uri", self.tracking_uri)
            self.ledger.set_meta("experiment", self.experiment)
        elif old != self.spec.science_hash():
            raise InputError(f"campaign '{self.name}' in {self.root} was started with a different spec; "
                             "resume with the same file, or give the changed campaign a new `name`")

    def _actors(self) -> None:
        import ray

        from actors.roles import remote
        from orchestrator.campaign.tracking import Tracker
        from orchestrator.ops.placement import placement

        r = self.spec.resources
        gpus = r.gpus_per_md_worker
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        self.placement = placement(ray.cluster_resources(), gpus, r.cpus_per_oracle)
        self.roles = Roles(self.spec, use_ray=True, placement=self.placement, gpus_per_md_worker=gpus)
        self.steps.roles = self.roles
        # the single MLflow writer, on the head when the cluster marks it (MLflow listens on its 127.0.0.1)
        self.tracker = remote(Tracker, resources=self.placement["tracker"], max_restarts=r.max_restarts,
                              max_task_retries=r.max_task_retries).remote(self.tracking_uri, self.experiment)

    def _track(self, send: Callable[[Any], Any]) -> Any:
        """``send(tracker)`` makes one call on the MLflow tracker actor (``tracking.Tracker``); waited for, one
        at a time (the tracker is the single writer)."""
        import ray

        with self._tracker_lock:
            return ray.get(send(self.tracker))

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

        if self.roles is not None:
            self.roles.close()
        if self.tracker is not None:
            try:
                ray.kill(self.tracker, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass

    def _run(self, incremental: bool) -> dict:
        self._track(lambda t: t.start_campaign.remote(self.key, self.name, self.spec.to_dict(), self.spec.to_yaml()))
        generated = self.ledger.step("candidates")
        if generated is None or incremental:
            fresh = self.roles.call(steps.candidates(self.ctx)).to_dict()
            known = {r["key"] for r in (generated or {}).get("rows", [])}
            generated = {"rows": (generated or {}).get("rows", []) + [r for r in fresh["rows"] if r["key"] not in known],
                         "skipped_known": fresh["skipped_known"]}
            self.ledger.record_step("candidates", generated)
        rows = generated["rows"]
        self.ledger.add_candidates(rows)
        if incremental:
            self.rescreened = self._new_generations(rows)
        self._notify()
        with ThreadPoolExecutor(max_workers=self.spec.resources.queue_size) as pool:
            list(pool.map(self._candidate_safe, rows))
        rows = ranked(self.ledger, **self.spec.candidates.ranking())
        csv_path = self.write_results_csv(rows)
        summary = self.ledger.summary()
        table = self.write_results_table(rows)
        ranks = [{k: r[k] for k in ("candidate", "rank", "p_above_threshold", "p_top_k")} for r in rows]
        self._track(lambda t: t.finish_campaign.remote(self.key, csv_path, summary, [], [table], ranks))
        self._notify()
        return summary

    def _notify(self) -> None:
        if self.on_progress:
            self.on_progress(self.ledger.summary())

    def _candidate_safe(self, row: dict) -> None:
        """Screen one candidate and record how it ended, in this one place."""
        try:
            outcome = self._screen(row)
        except Exception as exc:  # noqa: BLE001 - record and go on with the other candidates
            detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
            outcome = Outcome(V.ERROR, V.ERROR, detail)
            traceback.print_exc()
        self._finish(row, outcome)

    def _finish(self, row: dict, outcome: Outcome) -> None:
        key = row["key"]
        gkey = self.gkey(key)
        cand = self.ledger.candidate(key)
        params = {"formula": row["formula"], "prototype": row.get("prototype") or "",
                  "model_version": cand.get("model_version") or "", "oracle": self.spec.oracle.name}
        ref_meta = (self.ledger.step(STEPS["reference"].at(c=key)) or {}).get("metadata") or {}
        if ref_meta.get("kind") == USER_REFERENCE:     # the user's trajectory the checks compared against
            params.update(reference="user", reference_path=ref_meta["source"], reference_sha256=ref_meta["sha256"],
                          reference_labels=ref_meta["labels_by"])
        if outcome.reason != V.ERROR:  # an errored candidate is retried on the next run, not "screened"
            self._record_screened(row, gkey)
        result = outcome.result
        if row.get("known_values"):          # measured values beside whatever was computed (or not)
            result = {**result, "known_values": row["known_values"]}
        self.ledger.update_candidate(key, stage="done", reason=outcome.reason, verdict=outcome.verdict,
                                     detail=outcome.detail, results=result)
        rounds, files, name = self.ledger.rounds(gkey), self._artifacts(gkey, outcome.plots), self.display_name(row)
        self._track(lambda t: t.log_candidate.remote(self.key, gkey, params, rounds, result, outcome.verdict,
                                                     outcome.reason, files, name))
        self._notify()

    def _artifacts(self, gkey: str, plots: list[str]) -> dict[str, list[str]]:
        """Files for the candidate's MLflow run: every plot the steps drew, and (optionally) trajectories."""
        plot_dir = self.root / "plots" / gkey
        out = {"plots": sorted({*plots, *(str(p) for p in plot_dir.glob("*.png"))}) if plot_dir.exists() else list(plots)}
        if self.spec.tracking.log_trajectories:
            md_dir = self.root / "md" / gkey
            out["trajectories"] = sorted(str(p) for p in md_dir.glob("*/*.h5")) if md_dir.exists() else []
        return out

    def _stage(self, key: str, stage: str, round_: int | None = None) -> None:
        fields: dict[str, Any] = {"stage": stage}
        if round_ is not None:
            fields["round"] = round_
        self.ledger.update_candidate(key, **fields)
        self._notify()

    def _step(self, cand: str, name: str, request=None, work: Callable[[], Any] | None = None,
              simulated_ps: float | None = None, **ids) -> Any:
        """Step ``name`` of the table (``steps.STEPS``) at ``ids``: its recorded result, else the answer to
        ``request`` (or ``work()``), recorded; MD adds its simulated time to candidate ``cand`` (``simulated_ps``
        when given: a chunk that extends runs)."""
        step = STEPS[name]
        key = step.at(**ids)
        found = self.steps.done(key, step.result)
        if found is not None:
            return found
        value = self.steps.run(key, request) if request is not None else self.steps.once(key, step.result, work)
        runs = value.runs if isinstance(value, Runs) else [value]
        ps = simulated_ps if simulated_ps is not None else sum(getattr(r, "simulated_ps", 0.0) or 0.0 for r in runs)
        if ps:
            self.ledger.add_simulated_ps(cand, ps)
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
            from reference.store import elements_of

            path = row.get("structure_path")
            if path and Path(path).exists():
                from reference.structures import structure_atoms

                self._elements[row["key"]] = elements_of(structure_atoms(path))
            else:
                self._elements[row["key"]] = elements_of(row["formula"])
        return self._elements[row["key"]]

    def min_shared(self, row: dict) -> int:
        """``active_learning.min_shared_elements`` (default: all but one of the candidate's elements, >= 1),
        never above the candidate's own element count, so its own labels always qualify."""
        n = len(self._candidate_elements(row))
        wanted = self.spec.active_learning.min_shared_elements or max(1, n - 1)
        return max(1, min(wanted, n))

    def training_selection(self, row: dict, oracle: str) -> Selection:
        """Store frames of ``oracle`` sharing >= :meth:`min_shared` elements with the candidate (a ``Selection``)."""
        with self._store_lock:
            return steps.training_set(self.ctx, self._candidate_elements(row), self.min_shared(row), oracle)

    def _new_generations(self, rows: list[dict]) -> list[str]:
        """``--incremental``: a finished candidate whose training selection in the store changed since it was
        screened starts a new generation (fresh step keys ``<c>@g<n>``; old steps and results stay)."""
        out = []
        for row in rows:
            key = row["key"]
            cand = self.ledger.candidate(key)
            if cand["stage"] != "done" or cand["reason"] in (V.ERROR, V.NO_STRUCTURE):
                continue
            g = self.generation(key)
            then = self.ledger.step(STEPS["screened"].at(g=self.gkey(key)))
            if not then or not then.get("fingerprint"):
                continue
            now = self.training_selection(row, then["oracle"])
            if now.fingerprint != then["fingerprint"]:
                snapshot = {k: cand[k] for k in ("stage", "round", "model_version", "verdict", "reason", "detail",
                                                 "results")}
                self.ledger.new_generation(key, g + 1, {**snapshot, "generation": g, "screened": then})
                out.append(key)
        return out

    def _record_screened(self, row: dict, gkey: str) -> None:
        """The fingerprint of the candidate's training data in the store when it finished (for --incremental)."""
        key = STEPS["screened"].at(g=gkey)
        if self.ledger.step(key) is not None:
            return
        ref = self.steps.done(STEPS["reference"].at(c=row["key"]), ReferenceRun)
        if ref is None or ref.failed:
            return  # nothing a new model could change (no structure, or the oracle reference itself failed)
        sel = self.seen_selection(row, gkey, ref.oracle)
        self.steps.once(key, steps.Screened, lambda: steps.Screened(sel.fingerprint, sel.n_frames, ref.oracle,
                                                                   self.generation(row["key"])))

    def seen_selection(self, row: dict, gkey: str, oracle: str) -> Selection:
        """The store selection this screening accounts for: the frames its last training round used plus the
        candidate's own labels added after it (those of a final labelling round and its audits).  Frames other candidates or
        campaigns added after that training are left out, so the next ``--incremental`` run sees them as new."""
        now = self.training_selection(row, oracle)
        trains = [(int(k.rsplit(":", 1)[1]), v) for k, v in self.ledger.steps("train:").items()
                  if k.rsplit(":", 1)[0] == f"train:{gkey}" and v.get("training_set")]
        if not trains:
            return now
        used = Selection.from_dict(max(trains, key=lambda t: t[0])[1]["training_set"]).addresses()
        own = self.ctx.shard(row["key"], 0)[:-len("-r0.extxyz")]  # campaign-<name>-<c>

        def mine(shard: str) -> bool:
            return shard.startswith((own + "-r", own + "-audit-r", own + "@g"))

        return now.keep(lambda name, i: mine(name) or (name, i) in used)

    # --- one candidate: the steps of ``steps.STEPS`` in order ---------------------------------------------
    def _screen(self, row: dict) -> Outcome:
        """Reference, active learning, production: how the candidate ended."""
        key = row["key"]
        cand = self.ledger.candidate(key)
        if cand["stage"] == "done" and cand["reason"] == V.ERROR:
            self.ledger.update_candidate(key, stage="pending", reason=None, detail=None)  # retry; steps are kept
            cand = self.ledger.candidate(key)
        if cand["stage"] == "done":  # logged again: a crash may have hit between the ledger and MLflow
            return Outcome(cand["reason"], cand["verdict"] or "", cand["detail"] or "", cand["results"])
        if not row.get("structure_path"):
            return Outcome(V.NO_STRUCTURE, "none", row.get("reason") or "no structure")
        gkey = self.gkey(key)  # generation 2+ (--incremental): fresh steps, the reference is shared
        self._stage(key, "reference")
        name = self.display_name(row)
        self._track(lambda t: t.candidate_progress.remote(self.key, gkey, "reference", 0, name))
        ref = self._step(key, "reference", steps.reference(self.ctx, row), c=key)
        if ref.failed:
            return Outcome(V.ORACLE_FAILING, "reference_failed", f"oracle reference MD failed: {ref.error}")
        user_slope = self.spec.user_reference(row, slope=True)
        if user_slope is not None:           # its labels train the student from the first round
            slope = self._slope_reference(row, key, float(user_slope.temperature_K))
            if isinstance(slope, str):
                return Outcome(V.ORACLE_FAILING, "reference_failed", slope)
        start, repairs, usable = 0, [], {}
        while True:
            reached = self._active_learning(row, gkey, ref, start, repairs[-1] if repairs else None)
            if isinstance(reached, Outcome):
                if not repairs:
                    return reached
                # the repair gave no usable model: the production of the model it started from, the failing
                # temperature left out of its fit (its steps are in the ledger up to there)
                return self._unrepaired(row, gkey, ref, usable[repairs[-1].round], repairs,
                                        f"repair at {repairs[-1].temperature_K:g} K failed: {reached.detail}")
            usable[reached.round] = reached
            out = self._production(row, gkey, ref, reached, repairs)
            if not isinstance(out, Repair):
                return out
            repairs.append(out)
            earlier = repairs[:-1]
            again = any(p.temperature_K == out.temperature_K for p in earlier)
            if again or any(out.temperature_K in p.passed for p in earlier):
                # the repaired model fails where a repair was tried, or where an earlier model passed: the
                # repairs did not help, and the model before them is kept
                why = "failed there again" if again else "an earlier model passed there"
                return self._unrepaired(row, gkey, ref, usable[repairs[0].round], repairs,
                                        f"the repair did not help: round {out.round}'s model failed its "
                                        f"certification at {out.temperature_K:g} K ({out.status}; {why})")
            start = out.round + 1

    def _unrepaired(self, row: dict, gkey: str, ref: ReferenceRun, model: Usable, repairs: list[Repair],
                    why: str) -> Outcome:
        """The production of ``model`` (a model a repair started from) finished without repairs: the temperature
        it failed at left out of the fit, ``why`` added to the detail."""
        out = self._production(row, gkey, ref, model, repairs, allow_repair=False)
        out.detail = "; ".join(x for x in (out.detail, why) if x)
        return out

    def _active_learning(self, row: dict, gkey: str, ref: ReferenceRun, start: int = 0,
                         repair: Repair | None = None) -> Usable | Outcome:
        """Train, explore, judge, label until the judge finds the model stable (or can say no more:
        inconclusive), or the candidate ends here (budget spent, oracle failing).  ``start`` > 0: a repair of
        round ``start - 1``'s model, whose production failed a certification (``repair``): the oracle's labels
        there are in the store, so round ``start`` fine-tunes on them."""
        key, al = row["key"], self.spec.active_learning
        can_label = ref.metadata.get("can_label", True)   # a user's labels: more only from the same level of theory
        members: list[str] | None = None
        if start:
            members = self.steps.done(STEPS["train"].at(g=gkey, r=start - 1), steps.Trained).trained.members
        for r in range(start, al.max_rounds + 1):
            self._stage(key, "active_learning", r)
            init = members if al.fine_tune else None
            ids = dict(g=gkey, r=r)
            sel = self._step(key, "trainset", work=lambda: self.training_selection(row, ref.oracle), **ids)
            request = steps.train(self.ctx, gkey, r, sel, init)
            train = self._step(key, "train", work=lambda: steps.Trained(self.roles.call(request), sel.to_dict()), **ids)
            members = train.trained.members
            self.ledger.update_candidate(key, model_version=f"{gkey}/r{r}")
            self._log_training(row, gkey, r, train, init)
            explored = self._step(key, "explore", steps.explore(self.ctx, gkey, r, members, row["structure_path"], ref),
                                  **ids)
            errors = (self._step(key, "calibrate", steps.reference_errors(self.ctx, members, ref), **ids)
                      if len(members) > 1 and ref.metadata.get("calibration_forces", True) else None)
            audit = (self._step(key, "audit", work=lambda: self._audit(gkey, r, members, explored, ref, errors), **ids)
                     if errors and can_label and al.audit_labels
                     and all(run.verdict == V.STABLE for run in explored.runs) else None)
            report = self._step(key, "judge", steps.judge(self.ctx, gkey, r, explored, ref, errors, audit), **ids)
            verdict = report.verdict
            diag = {"round": r, "verdict": verdict.status, **_numbers(verdict.evidence),
                    "train_force_mae_meV_A": train.trained.force_mae_meV_A, "train_frames": sel.n_frames,
                    "train_epochs": train.trained.epochs, "train_stopped_by": train.trained.stop_reasons}
            if repair is not None and r == start:
                diag["repair_of"] = repair.to_dict()
            if errors:
                diag["reference_calibration"] = errors.calibration
            if audit:
                diag["audit"] = {"n_labels": audit.labels.n_labels, "n_failed": audit.labels.n_failed,
                                 "force_mae_meV_A": audit.errors.force_mae_meV_A if audit.errors else None,
                                 "calibration": audit.errors.calibration if audit.errors else None}
            if verdict.status in V.JUDGED_USABLE:   # labels cannot settle a check that lacks length
                self.ledger.record_round(gkey, r, diag)
                return Usable(members, verdict, explored, errors, r)
            picked = any(report.frames)
            if r == al.max_rounds or not picked or not can_label:
                self.ledger.record_round(gkey, r, diag)
                why = (f"no stable model after {r + 1} rounds (last verdict {verdict.status})" if picked
                       else "no frame could be selected for labelling (exploration collapsed)")
                if not can_label and picked and r < al.max_rounds:
                    why = (f"verdict {verdict.status}; new labels would need the reference's level of theory "
                           f"({ref.oracle}), and this campaign's oracle is another: labels are never mixed")
                return Outcome(V.BUDGET_SPENT, verdict.status, why, {"checks": check_summary(verdict)})
            nxt = dict(g=gkey, r=r + 1)
            lab = self._step(key, "label", steps.label(self.ctx, gkey, r + 1, explored, report.frames, ref), **nxt)
            asked = lab.n_labels + lab.n_failed
            diag.update(labels_added=lab.n_labels, labels_failed=lab.n_failed)
            if lab.shard:
                band = errors.calibration if errors else verdict.evidence   # configured levels, if any
                force = self._step(key, "force_errors", steps.force_errors(self.ctx, members, lab.shard, band), **nxt)
                diag.update(force_mae_meV_A=force.force_mae_meV_A, calibration=force.calibration)
            self.ledger.record_round(gkey, r, diag)
            if asked and lab.n_failed / asked > al.max_failure_fraction:
                return Outcome(V.ORACLE_FAILING, verdict.status,
                               f"oracle failed on {lab.n_failed}/{asked} frames: {'; '.join(lab.errors[:2])}")
        raise AssertionError("not reached: the last round always returns above")

    def _audit(self, gkey: str, r: int, members: list[str], explored: Runs, ref: ReferenceRun,
               errors: steps.Errors, n: int | None = None, temperature_K: float | None = None,
               n_transit: int = 0) -> steps.Audit:
        """Oracle labels of ``n`` (default ``active_learning.audit_labels``) frames spread over the replicas of
        ``explored`` and ``n_transit`` with the most ions in transit (shard ``<gkey>-audit`` r<r>: they train
        later rounds), and the ensemble's errors and calibration there."""
        frames = self.roles.call(steps.audit_frames(self.ctx, explored, n, n_transit)).frames
        lab = self.roles.call(steps.label(self.ctx, f"{gkey}-audit", r, explored, frames, ref, temperature_K))
        found = (self.roles.call(steps.force_errors(self.ctx, members, lab.shard, errors.calibration))
                 if lab.shard else None)
        return steps.Audit(frames, lab, found)

    def _log_training(self, row: dict, gkey: str, r: int, train: steps.Trained, init) -> None:
        info = {**{k: v for k, v in train.trained.to_dict().items() if k != "val_metrics"}, "candidate": gkey,
                "round": r, "init": bool(init), "architectures": ",".join(self.spec.models.architectures)}
        registry = f"{self.experiment}-ensemble" if self.spec.tracking.register_models else None
        self._track(lambda t: t.log_training.remote(self.key, f"{gkey}/r{r}", info, registry,
                                                    f"{self.display_name(row)} r{r}"))

    def display_name(self, row: dict) -> str:
        """Short, distinct MLflow run name: the formula (with the prototype when two candidates share a
        formula), and ``@g<n>`` from the second generation on."""
        rows = (self.ledger.step("candidates") or {}).get("rows", [])
        shared = sum(1 for r in rows if r["formula"] == row["formula"]) > 1
        name = f"{row['formula']} ({row.get('prototype')})" if shared else row["formula"]
        g = self.generation(row["key"])
        return name if g == 1 else f"{name} @g{g}"

    def _production(self, row: dict, gkey: str, ref: ReferenceRun, usable: Usable,
                    repairs: list[Repair] = (), allow_repair: bool = True) -> Outcome | Repair:
        """Production planned from the precision target, each temperature certified, then transport.

        The planner (``plan:<g>:<r>:<k>``, ``analysis.planning``) sends each chunk of ``md.steps`` to the
        temperature that shrinks the error of log10 sigma(300 K) most, until the target is reached or the budget
        spent.  The judged exploration replicas are production at the reference temperature.  The slope check's
        reference (``precision.slope_check_temperature_K``: the user's trajectory, else oracle MD) is at one of
        the temperatures.  After its first chunk every other temperature is certified (``certify:<g>:<r>:<T>K``):
        the oracle audits frames of it and the judge rules on breakage, accuracy and deviation there (and
        structure and dynamics at the slope check's temperature).  A temperature that fails goes back to active
        learning while rounds are left (a :class:`Repair`: round r + 1 trains on the oracle's labels there and
        production starts again), else it is left out of the fit with its reason, as is one whose runs break.
        The verdict that let the members through ends ``converged`` when stable, ``inconclusive`` otherwise."""
        key, verdict, s = row["key"], usable.verdict, self.spec
        self._stage(key, "production")
        r, name = usable.round, self.display_name(row)
        self._track(lambda t: t.candidate_progress.remote(self.key, gkey, "production", r, name))
        explored = usable.explored.runs
        t_ref = float(explored[0].temperature_K)
        user_slope = s.user_reference(row, slope=True)
        slope_K = float(user_slope.temperature_K) if user_slope is not None else None
        temps = s.production_temperatures(ref, verdict.evidence.get("reference_D_cm2_s"), slope_K)
        slope_K = slope_K if slope_K is not None else s.precision.slope_temperature(temps, t_ref)
        runs = {t: [] for t in temps}
        ps = {t: 0.0 for t in temps}
        if s.exploration_is_production() and t_ref in runs:
            runs[t_ref] = [run.trajectory for run in explored if run.verdict == V.STABLE]
            ps[t_ref] = sum(run.simulated_ps for run in explored if run.verdict == V.STABLE) / s.md.replicas
        left_out: dict[float, str] = {}
        certified: dict[float, str] = {t_ref: verdict.status} if t_ref in runs else {}
        checks = [_model_check(t_ref, verdict.evidence)]
        slope = self._slope_reference(row, key, slope_K)
        if isinstance(slope, str):
            return Outcome(V.ORACLE_FAILING, verdict.status, slope)
        can_repair = allow_repair and r < s.active_learning.max_rounds and ref.metadata.get("can_label", True)
        chunks = {t: 0 for t in temps}
        spent, stop, k = 0.0, None, 0
        while True:
            chunk = self._step(key, "plan", steps.plan_chunk(self.ctx, runs, ps, left_out, spent,
                                                               [c for c in checks if c]), g=gkey, r=r, k=k)
            if chunk.temperature_K is None:
                stop = chunk
                break
            t = float(chunk.temperature_K)
            chunks[t] += 1
            cost = s.chunk_ps() * s.md.replicas
            done = self._step(key, "production", steps.production(self.ctx, gkey, r, usable.members,
                                                                   row["structure_path"], t, chunks[t],
                                                                   temps.index(t)),
                              simulated_ps=cost, g=gkey, r=r, k=k)
            spent, ps[t] = spent + cost, ps[t] + s.chunk_ps()
            mine = [run.trajectory for run in done.runs if run.verdict == V.STABLE]
            runs[t] = [p for p in runs[t] if p not in mine] + mine      # a chunk extends the same files
            broken = [run for run in done.runs if run.verdict != V.STABLE]
            if broken:
                left_out[t] = f"production {broken[0].verdict} at {t:g} K"
            elif chunks[t] == 1 and t not in certified:
                cert = self._step(key, "certify", work=lambda: self._certify(gkey, r, t, usable, done, ref,
                                                                            slope if t == slope_K else None),
                                  g=gkey, r=r, t=t)
                status = cert.report.verdict.status
                certified[t] = status
                if t == slope_K:
                    checks.append(_model_check(t, cert.report.verdict.evidence))
                if status not in V.JUDGED_USABLE:
                    if can_repair and (cert.audit is not None and cert.audit.labels.shard or t == slope_K):
                        return Repair(r, t, status, tuple(x for x, v in certified.items() if v in V.JUDGED_USABLE))
                    left_out[t] = f"certification at {t:g} K: {status}"
            k += 1
        kept = [p for t, paths in runs.items() if t not in left_out for p in paths]
        if not kept:
            return Outcome(V.BUDGET_SPENT, verdict.status, "no production temperature left: " +
                           "; ".join(left_out.values()))
        out = self._step(key, "transport", steps.transport(self.ctx, gkey, kept, [c for c in checks if c]), g=gkey)
        notes = [f"repaired: round {p.round}'s model failed its certification at {p.temperature_K:g} K "
                 f"({p.status})" for p in repairs]
        notes += [f"left out of the fit: {why}" for why in left_out.values()]
        if slope_K is None:
            notes.append("slope unchecked: " + ("precision.slope_check_temperature_K is null"
                                                if s.precision.slope_check_temperature_K is None
                                                else f"no production temperature below {t_ref:g} K"))
        if verdict.status == V.INCONCLUSIVE:
            notes = [*verdict.evidence.get("inconclusive", []), *notes]
        plan = {"stopped_by": stop.stop, "target_log10_err": s.precision.target_log10_err,
                "target_reached": stop.stop == "target reached", "student_ps_by_T": {f"{t:g}": ps[t] for t in temps},
                "certification_by_T": {f"{t:g}": certified.get(t, "uncertified") for t in temps},
                "left_out_K": sorted(left_out), "production_budget_ps": s.precision.budget_ps,
                "production_spent_ps": spent, "slope_check_K": slope_K,
                "repairs": [p.to_dict() for p in repairs]}
        result = {**out.transport, **plan, "checks": check_summary(verdict)}
        reason = V.CONVERGED if verdict.status == V.STABLE else V.INCONCLUSIVE
        return Outcome(reason, verdict.status, "; ".join(notes), result, out.plots)

    def _slope_reference(self, row: dict, key: str, temperature_K: float | None) -> ReferenceRun | str | None:
        """The slope check's reference at ``temperature_K`` (``steps.slope_reference``), a reason when it failed,
        or None when there is no slope check."""
        if temperature_K is None:
            return None
        t = float(temperature_K)
        ref = self._step(key, "slope_reference", steps.slope_reference(self.ctx, row, t), c=key, t=t)
        return f"the slope check's reference at {t:g} K failed: {ref.error}" if ref.failed else ref

    def _certify(self, gkey: str, r: int, t: float, usable: Usable, done: Runs, ref: ReferenceRun,
                 slope: ReferenceRun | None) -> steps.Certified:
        """The oracle's audit of the first chunk at ``t`` (shard ``<g>-<T>K-audit`` r<r>) and the judge's verdict
        on it, against ``slope`` (the slope check's reference, at ``t``) when given, else the candidate's
        reference (breakage, accuracy and deviation only: another temperature)."""
        n, errors = self.spec.precision.audit_labels, usable.errors
        can_label = ref.metadata.get("can_label", True)
        audit = (self._audit(f"{gkey}-{t:g}K", r, usable.members, done, ref, errors, n, t,
                             self.spec.precision.transit_labels) if n and errors and can_label else None)
        against = slope if slope is not None else ref
        report = self.roles.call(steps.certify_judge(self.ctx, done, against.trajectory, errors, audit))
        return steps.Certified(t, report, audit)

    # --- results --------------------------------------------------------------------------------
    def write_results_csv(self, rows: list[dict]) -> str:
        """``results.csv`` of the ranked rows (``orchestrator.campaign.results.ranked``)."""
        path = self.root / "results.csv"
        atomic_write_text(path, rows_csv(rows))
        return str(path)

    def write_results_table(self, rows: list[dict]) -> str:
        """``results.md``: the ranked table with units in its headers (an artifact of the campaign's run)."""
        path = self.root / "results.md"
        atomic_write_text(path, results_markdown(rows))
        return str(path)


def _model_check(temperature_K: float, evidence: dict):
    """The dynamics check's log10(D_student / D_oracle) as an ``analysis.planning.ModelCheck`` (None without one)."""
    from analysis.planning import ModelCheck

    if evidence.get("log10_ratio") is None or evidence.get("log10_ratio_err") is None:
        return None
    d, e = evidence.get("reference_D_cm2_s"), evidence.get("reference_D_err_cm2_s")
    return ModelCheck(float(temperature_K), float(evidence["log10_ratio"]), float(evidence["log10_ratio_err"]),
                      float(d) if d else None, float(e) if e is not None else None)


def _numbers(evidence: dict) -> dict:
    """The judge's evidence numbers the round diagnostics keep (RDF and its noise, D vs reference, trust band)."""
    keep = ("rdf_mae", "rdf_noise_floor", "rdf_critical", "rdf_status", "student_D_cm2_s", "reference_D_cm2_s",
            "log10_ratio", "log10_ratio_err", "dynamics_status", "accurate_fraction", "selected_fraction",
            "failed_fraction", "trust_lo_eV_A", "trust_hi_eV_A", "min_distance_ratio", "framework_drift_A",
            "own_error_eV_A", "reference_error_eV_A", "error_log10_ratio", "error_log10_ratio_err", "accuracy_status",
            "transit_own_error_eV_A", "transit_reference_error_eV_A", "transit_log10_ratio", "transit_status")
    return {k: evidence[k] for k in keep if k in evidence}
