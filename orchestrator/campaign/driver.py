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

import dataclasses
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
from analysis.verdicts import Verdict, check_summary
from reference.reference_md import ReferenceRun
from reference.store import Selection

TIER1 = "@t1"          # a tier-1 screening's step/MLflow key: <c>@t1 (tier 2 keeps <c>)


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
        # tier 1's view: the funnel's precision target and budget, no slope check (the same store and directory)
        self.ctx1 = steps.Context(dataclasses.replace(spec, precision=spec.funnel.tier1_precision(spec.precision)),
                                  self.root, self.store_root)
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
        self.roles = Roles(self.spec, use_ray=True, placement=self.placement, gpus_per_md_worker=gpus,
                           progress_dir=str(self.progress_dir))
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
        stop = threading.Event()
        ticker = threading.Thread(target=self._tick, args=(stop,), daemon=True)
        try:
            self._actors()
            if self.on_progress:
                ticker.start()
            try:
                return self._run(incremental)
            finally:
                stop.set()
                self.close()
        finally:
            lock.close()  # releases the flock

    @property
    def progress_dir(self) -> Path:
        """Where the workers' tasks report their progress (``common.progress``)."""
        return self.root / "progress"

    def _tick(self, stop: threading.Event, every_s: float = 2.0) -> None:
        """Every ``every_s`` seconds: the ledger's counts and the newest task report to ``on_progress``."""
        from common.progress import describe, latest

        while not stop.wait(every_s):
            try:
                now = latest(self.progress_dir, max_age_s=60.0)
                self.on_progress({**self.ledger.summary(), "activity": describe(now) if now else None})
            except Exception:  # noqa: BLE001 - the view must never stop the campaign
                pass

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
        if self.spec.funnel.enabled:
            self._funnel(rows)
        else:
            with ThreadPoolExecutor(max_workers=self.spec.resources.queue_size) as pool:
                list(pool.map(self._candidate_safe, rows))
        rows = ranked(self.ledger, **self.spec.candidates.ranking())
        csv_path = self.write_results_csv(rows)
        summary = self.ledger.summary()
        table = self.write_results_table(rows)
        plot = self.plot_ranking(rows)
        ranks = [{**{k: r[k] for k in ("candidate", "rank", "p_above_threshold", "p_top_k")}, "why": r["why"]}
                 for r in rows]
        self._track(lambda t: t.finish_campaign.remote(self.key, csv_path, summary, [plot], [table], ranks))
        self._notify()
        return summary

    def _notify(self) -> None:
        if self.on_progress:
            self.on_progress(self.ledger.summary())

    def _candidate_safe(self, row: dict, tier: int = 2) -> None:
        """Screen one candidate (``tier`` 1: the funnel's first tier) and record how it ended, in this one place."""
        try:
            outcome = self._tier1(row) if tier == 1 else self._screen(row)
        except Exception as exc:  # noqa: BLE001 - record and go on with the other candidates
            detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
            outcome = Outcome(V.ERROR, V.ERROR, detail)
            traceback.print_exc()
        self._finish(row, outcome, tier)
        if self.spec.funnel.enabled:
            self._record_family(row, outcome, tier)

    def _finish(self, row: dict, outcome: Outcome, tier: int = 2) -> None:
        key = row["key"]
        gkey = self.gkey(key) + (TIER1 if tier == 1 else "")
        cand = self.ledger.candidate(key)
        params = {"formula": row["formula"], "prototype": row.get("prototype") or "",
                  "model_version": cand.get("model_version") or "", "oracle": self.spec.oracle.name}
        ref_meta = (self.ledger.step(STEPS["reference"].at(c=key)) or {}).get("metadata") or {}
        if ref_meta.get("kind") == USER_REFERENCE:     # the user's trajectory the checks compared against
            params.update(reference="user", reference_path=ref_meta["source"], reference_sha256=ref_meta["sha256"],
                          reference_labels=ref_meta["labels_by"])
        if outcome.reason != V.ERROR:  # an errored candidate is retried on the next run, not "screened"
            self._record_screened(row, gkey)
        result = {**outcome.result, "tier": tier}
        if row.get("known_values"):          # measured values beside whatever was computed (or not)
            result = {**result, "known_values": row["known_values"]}
        first = self.ledger.step(f"tier1:{key}")
        if tier == 1 and (first is None or first["reason"] == V.ERROR):
            self.ledger.record_step(f"tier1:{key}", {"reason": outcome.reason, **{
                k: result.get(k) for k in ("log10_sigma_300K", "log10_sigma_300K_err_total", "activation_energy_eV",
                                           "activation_energy_eV_err")}})
        elif first is not None:              # tier 2 supersedes tier 1; the table shows both
            result["tier1"] = first
        self.ledger.update_candidate(key, stage="done", reason=outcome.reason, verdict=outcome.verdict,
                                     detail=outcome.detail, results=result)
        rounds, files, name = self.ledger.rounds(gkey), self._artifacts(gkey, outcome.plots), self.run_name(row, gkey)
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
    def _recorded(self, row: dict, tier: int) -> Outcome | None:
        """How the candidate already ended at ``tier`` or above (returned again: a crash may have hit between the
        ledger and MLflow), ``no_structure``, or None: screen it.  An errored candidate is retried (its steps are
        kept)."""
        key = row["key"]
        cand = self.ledger.candidate(key)
        if cand["stage"] == "done" and cand["reason"] == V.ERROR:
            self.ledger.update_candidate(key, stage="pending", reason=None, detail=None)
            cand = self.ledger.candidate(key)
        if cand["stage"] == "done" and (cand["results"] or {}).get("tier", 2) >= tier:
            return Outcome(cand["reason"], cand["verdict"] or "", cand["detail"] or "", cand["results"])
        if not row.get("structure_path"):
            return Outcome(V.NO_STRUCTURE, "none", row.get("reason") or "no structure")
        return None

    def _screen(self, row: dict) -> Outcome:
        """Reference, active learning, production: how the candidate ended."""
        key = row["key"]
        recorded = self._recorded(row, 2)
        if recorded is not None:
            return recorded
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
        return self._repairing(row, gkey, ref, lambda start, repair: self._active_learning(row, gkey, ref, start,
                                                                                             repair))

    def _repairing(self, row: dict, gkey: str, ref: ReferenceRun, learn: Callable[[int, Any], Any],
                   tier1: "Family | None" = None) -> Outcome:
        """Models from ``learn(start round, the repair it answers or None)`` (a :class:`Usable`, or the
        :class:`Outcome` that ends the candidate) go to production until one finishes it; a model whose
        certification fails is repaired (``learn`` again from the next round), and when the repairs do not
        help the model before them is kept.  ``tier1``: a tier-1 candidate's production (from that family)."""
        start, repairs, usable = 0, [], {}
        while True:
            reached = learn(start, repairs[-1] if repairs else None)
            if isinstance(reached, Outcome):
                if not repairs:
                    return reached
                # the repair gave no usable model: the production of the model it started from, the failing
                # temperature left out of its fit (its steps are in the ledger up to there)
                return self._unrepaired(row, gkey, ref, usable[repairs[-1].round], repairs,
                                        f"repair at {repairs[-1].temperature_K:g} K failed: {reached.detail}", tier1)
            usable[reached.round] = reached
            out = self._production(row, gkey, ref, reached, repairs, tier1=tier1)
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
                                        f"certification at {out.temperature_K:g} K ({out.status}; {why})", tier1)
            start = out.round + 1

    def _unrepaired(self, row: dict, gkey: str, ref: ReferenceRun, model: Usable, repairs: list[Repair],
                    why: str, tier1: "Family | None" = None) -> Outcome:
        """The production of ``model`` (a model a repair started from) finished without repairs: the temperature
        it failed at left out of the fit, ``why`` added to the detail."""
        out = self._production(row, gkey, ref, model, repairs, allow_repair=False, tier1=tier1)
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
        name = self.run_name(row, gkey)
        self._track(lambda t: t.log_training.remote(self.key, f"{gkey}/r{r}", info, registry,
                                                    f"{name} · round {r}", name))

    def run_name(self, row: dict, gkey: str) -> str:
        """:meth:`display_name`, with " · tier 1" for a tier-1 screening's runs."""
        return self.display_name(row) + (" · tier 1" if gkey.endswith(TIER1) else "")

    def display_name(self, row: dict) -> str:
        """Short, distinct MLflow run name: the formula (with the prototype when two candidates share a
        formula), and ``@g<n>`` from the second generation on."""
        rows = (self.ledger.step("candidates") or {}).get("rows", [])
        shared = sum(1 for r in rows if r["formula"] == row["formula"]) > 1
        name = f"{row['formula']} ({row.get('prototype')})" if shared else row["formula"]
        g = self.generation(row["key"])
        return name if g == 1 else f"{name} @g{g}"

    def _production(self, row: dict, gkey: str, ref: ReferenceRun, usable: Usable,
                    repairs: list[Repair] = (), allow_repair: bool = True,
                    tier1: "steps.Family | None" = None) -> Outcome | Repair:
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
        The verdict that let the members through ends ``converged`` when stable and every kept temperature's
        certification is, ``inconclusive`` otherwise.

        ``tier1``: a tier-1 candidate (the family it came from): tier 1's precision (``funnel``), no exploration
        run and no slope check (no oracle MD of it), every temperature certified against the family's verified
        reference's errors, and the model term the transfer prior (:meth:`_prior`)."""
        key, verdict = row["key"], usable.verdict
        ctx = self.ctx1 if tier1 is not None else self.ctx
        s = ctx.spec
        self._stage(key, "production")
        r, name = usable.round, self.run_name(row, gkey)
        self._track(lambda t: t.candidate_progress.remote(self.key, gkey, "production", r, name))
        explored = usable.explored.runs
        prior = self._prior(tier1) if tier1 is not None else None
        if tier1 is not None:
            t_ref, slope_K = s.md.reference_temperature_K, None
            temps = s.production_temperatures()
        else:
            t_ref = float(explored[0].temperature_K)
            user_slope = s.user_reference(row, slope=True)
            slope_K = float(user_slope.temperature_K) if user_slope is not None else None
            temps = s.production_temperatures(ref, verdict.evidence.get("reference_D_cm2_s"), slope_K)
            slope_K = slope_K if slope_K is not None else s.precision.slope_temperature(temps, t_ref)
        runs = {t: [] for t in temps}
        ps = {t: 0.0 for t in temps}
        if explored and s.exploration_is_production() and t_ref in runs:
            runs[t_ref] = [run.trajectory for run in explored if run.verdict == V.STABLE]
            ps[t_ref] = sum(run.simulated_ps for run in explored if run.verdict == V.STABLE) / s.md.replicas
        left_out: dict[float, str] = {}
        certified: dict[float, str] = {t_ref: verdict.status} if explored and t_ref in runs else {}
        checks = [_model_check(t_ref, verdict.evidence)] if explored else []
        slope = self._slope_reference(row, key, slope_K)
        if isinstance(slope, str):
            return Outcome(V.ORACLE_FAILING, verdict.status, slope)
        can_repair = allow_repair and r < s.active_learning.max_rounds and ref.metadata.get("can_label", True)
        chunks = {t: 0 for t in temps}
        spent, stop, k = 0.0, None, 0
        while True:
            chunk = self._step(key, "plan", steps.plan_chunk(ctx, runs, ps, left_out, spent,
                                                               [c for c in checks if c], prior), g=gkey, r=r, k=k)
            if chunk.temperature_K is None:
                stop = chunk
                break
            t = float(chunk.temperature_K)
            chunks[t] += 1
            cost = s.chunk_ps() * s.md.replicas
            done = self._step(key, "production", steps.production(ctx, gkey, r, usable.members,
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
                                                                            slope if t == slope_K else None,
                                                                            tier1 is None),
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
        out = self._step(key, "transport", steps.transport(ctx, gkey, kept, [c for c in checks if c], prior,
                                                            self.run_name(row, gkey)), g=gkey)
        notes = [f"repaired: round {p.round}'s model failed its certification at {p.temperature_K:g} K "
                 f"({p.status})" for p in repairs]
        notes += [f"left out of the fit: {why}" for why in left_out.values()]
        if tier1 is not None:
            notes.append(f"tier 1: no oracle MD of this candidate; model term {prior:.2f} (funnel.transfer_log10_err "
                         f"with the model term of {tier1.verified}, the verified start of its family)")
        elif slope_K is None:
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
                "repairs": [p.to_dict() for p in repairs], "production_model": f"{gkey}/r{r}"}
        result = {**out.transport, **plan, "checks": check_summary(verdict)}
        undecided = [t for t, v in certified.items() if v == V.INCONCLUSIVE and t not in left_out]
        if undecided and verdict.status == V.STABLE:
            notes.append("certification inconclusive at " + ", ".join(f"{t:g} K" for t in sorted(undecided)))
        reason = V.CONVERGED if verdict.status == V.STABLE and not undecided else V.INCONCLUSIVE
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
                 slope: ReferenceRun | None, same_material: bool = True) -> steps.Certified:
        """The oracle's audit of the first chunk at ``t`` (shard ``<g>-<T>K-audit`` r<r>) and the judge's verdict
        on it, against ``slope`` (the slope check's reference, at ``t``) when given, else the candidate's
        reference (breakage, accuracy and deviation only: another temperature; ``same_material`` False: ``ref`` is
        another material's, a tier-1 candidate's accuracy baseline)."""
        n, errors = self.spec.precision.audit_labels, usable.errors
        can_label = ref.metadata.get("can_label", True)
        audit = (self._audit(f"{gkey}-{t:g}K", r, usable.members, done, ref, errors, n, t,
                             self.spec.precision.transit_labels) if n and errors and can_label else None)
        against = slope if slope is not None else ref
        report = self.roles.call(steps.certify_judge(self.ctx, done, against.trajectory, errors, audit,
                                                     same_material=same_material))
        return steps.Certified(t, report, audit)

    # --- the funnel: tier 1 for every candidate, tier 2 for those that could be in the top k ----------------
    def _funnel(self, rows: list[dict]) -> None:
        """The verified start (the candidates with a ``reference_data`` trajectory, else the first one) at tier 2,
        every other candidate at tier 1 from the family model, then tier 2 for the tier-1 candidates whose upper
        error reaches the top ``candidates.top_k`` (``funnel.tier2_candidates`` of them, highest upper end
        first; step ``tier2``)."""
        seeds = [r for r in rows if self.spec.user_reference(r) is not None] or rows[:1]
        for row in seeds:
            self._candidate_safe(row)
        for row in rows:        # (a rerun: a candidate tier 2 already superseded stays as it is)
            if row not in seeds and (self.ledger.candidate(row["key"])["results"] or {}).get("tier") != 2:
                self._candidate_safe(row, tier=1)
        pick = self.steps.once(STEPS["tier2"].at(), steps.Tier2, lambda: self._pick_tier2(rows))
        for row in rows:
            if row["key"] in pick.picked:
                self._candidate_safe(row, tier=2)

    def _pick_tier2(self, rows: list[dict]) -> steps.Tier2:
        """The tier-1 candidates that could be in the top k (``analysis.ranking.could_be_top_k``, every finished
        candidate's value and total error; one without a number is uncertain, never dropped for it), within the
        oracle-MD budget: those without a number first, then by their probability of being in the top k."""
        from analysis.ranking import could_be_top_k, p_top_k

        f, k = self.spec.funnel, self.spec.candidates.top_k
        pool = [c for c in (self.ledger.candidate(r["key"]) for r in rows)
                if c["reason"] in (*V.FINISHED_WELL, V.BUDGET_SPENT)]
        values = [(c["results"] or {}).get("log10_sigma_300K") for c in pool]
        errors = [(c["results"] or {}).get("log10_sigma_300K_err_total") for c in pool]
        could = could_be_top_k(values, errors, k, f.upper_z)

        known = [i for i, (v, e) in enumerate(zip(values, errors)) if v is not None and e is not None]
        p = dict(zip(known, p_top_k([values[i] for i in known], [errors[i] for i in known], k))) if known else {}
        wanted = sorted([(p.get(i, 2.0), c["key"]) for i, (c, ok) in enumerate(zip(pool, could))
                         if ok and (c["results"] or {}).get("tier") == 1], key=lambda x: -x[0])
        keys = [key for _, key in wanted]
        return steps.Tier2(keys[:f.tier2_candidates], keys[f.tier2_candidates:], k)

    def _family(self) -> steps.Family | None:
        """The model tier-1 candidates start from now (the latest ``family:<c>`` step), None before any."""
        found = list(self.ledger.steps("family:").values())
        return steps.Family.from_dict(found[-1]) if found else None

    def _record_family(self, row: dict, outcome: Outcome, tier: int) -> None:
        """After a candidate finished well: the first verified (tier-2) one starts the family; then, every
        ``funnel.refresh_every`` tier-1 candidates, the latest one's model (it trained on every shared-element
        label so far) replaces it."""
        key, f = row["key"], self.spec.funnel
        model = outcome.result.get("production_model")
        if outcome.reason not in V.FINISHED_WELL or not model or self.ledger.step(STEPS["family"].at(c=key)):
            return
        g, r = model.rsplit("/r", 1)
        trained = self.steps.done(STEPS["train"].at(g=g, r=int(r)), steps.Trained)
        now = self._family()
        if trained is None and now is None:
            return
        members = trained.trained.members if trained is not None else now.members   # tier 1: the family as is
        if now is None and tier == 2:
            fam = steps.Family(members, key, key, outcome.result.get("log10_sigma_300K_err_model"))
        elif now is not None and tier == 1 and f.refresh_every:
            done = sum(1 for c in self.ledger.candidates()
                       if (c["results"] or {}).get("tier") == 1 and c["reason"] in V.FINISHED_WELL)
            if done % f.refresh_every:
                return
            fam = steps.Family(members, key, now.verified, now.model_term)
        else:
            return
        self.steps.once(STEPS["family"].at(c=key), steps.Family, lambda: fam)

    def _prior(self, family: steps.Family) -> float:
        """A tier-1 candidate's model term: ``funnel.transfer_log10_err`` in quadrature with the verified
        candidate's model term (its student-vs-oracle error, measured)."""
        import math

        return math.hypot(self.spec.funnel.transfer_log10_err, family.model_term or 0.0)

    def _tier1(self, row: dict) -> Outcome:
        """Tier 1: no oracle MD.  The oracle labels the structure and rattled copies (``seed:<c>``); the family
        model's error on them is recorded (``family_errors:<c>``); the family model is fine-tuned on the
        shared-element store, runs briefly at every production temperature, is fine-tuned again on oracle labels
        of those frames, and goes to planned production with every temperature certified by the oracle's
        audits (:meth:`_production`)."""
        key = row["key"]
        recorded = self._recorded(row, 1)
        if recorded is not None:
            return recorded
        family = self._family()
        if family is None:
            return Outcome(V.BUDGET_SPENT, "none", "tier 1 needs a family model, and no verified (tier-2) candidate "
                           "finished with one; it stays a tier-2 candidate")
        gkey = self.gkey(key) + TIER1
        ref = self.steps.done(STEPS["reference"].at(c=family.verified), ReferenceRun)
        self._stage(key, "tier1")
        name = self.run_name(row, gkey)
        self._track(lambda t: t.candidate_progress.remote(self.key, gkey, "tier 1", 0, name))
        seeded = self._step(key, "seed", steps.seed(self.ctx, row), c=key)
        if not seeded.shard:
            return Outcome(V.ORACLE_FAILING, "none", f"the oracle failed on every seed frame: {'; '.join(seeded.errors[:2])}")
        before = self._step(key, "family_errors", steps.force_errors(self.ctx, family.members, seeded.shard, None), c=key)
        base = self._step(key, "calibrate", steps.reference_errors(self.ctx, family.members, ref), g=gkey, r="family")
        # ready: the family model as is (it knows every element and errs no more on the seed than on its reference)
        ready = bool(before.mean_error_eV_A) and _mean(before.mean_error_eV_A) <= _mean(base.mean_error_eV_A)
        out = self._repairing(row, gkey, ref, lambda start, repair: self._tier1_model(row, gkey, family, ref, start,
                                                                                      ready), tier1=family)
        out.result = {**out.result, "family_source": family.source, "family_verified": family.verified,
                      "family_force_mae_meV_A": before.force_mae_meV_A, "family_ready": ready,
                      "family_error_eV_A": _mean(before.mean_error_eV_A) if before.mean_error_eV_A else None,
                      "family_unknown_elements": before.calibration.get("unknown_elements", []),
                      "family_reference_error_eV_A": _mean(base.mean_error_eV_A),
                      "oracle_labels": self._labels_used(key, gkey)}
        return out

    def _labels_used(self, key: str, gkey: str) -> int:
        """The oracle single points a tier-1 candidate needed: seed, warm-up and repair labels and every audit."""
        found = self.ledger.steps
        n = (self.ledger.step(STEPS["seed"].at(c=key)) or {}).get("n_labels", 0)
        n += sum(v.get("n_labels", 0) for v in found(f"label:{gkey}:").values())
        n += sum(((v.get("audit") or {}).get("n_labels", 0)) for v in found(f"certify:{gkey}:").values())
        return int(n)

    def _train_round(self, row: dict, gkey: str, r: int, oracle: str, init: list[str] | None) -> list[str]:
        """Round ``r``'s training set (the shared-element store now) and its (fine-)tuned members."""
        key, ids = row["key"], dict(g=gkey, r=r)
        sel = self._step(key, "trainset", work=lambda: self._training_selection(row, gkey, oracle), **ids)
        request = steps.train(self.ctx, gkey, r, sel, init)
        train = self._step(key, "train", work=lambda: steps.Trained(self.roles.call(request), sel.to_dict()), **ids)
        self.ledger.update_candidate(key, model_version=f"{gkey}/r{r}")
        self._log_training(row, gkey, r, train, init)
        return train.trained.members

    def _training_selection(self, row: dict, gkey: str, oracle: str) -> Selection:
        """The store selection a round trains on: the shared-element store; at tier 1 the candidate's own labels
        and at most ``funnel.replay_frames`` of the others (:meth:`reference.store.Selection.thinned`)."""
        sel, cap = self.training_selection(row, oracle), self.spec.funnel.replay_frames
        if not gkey.endswith(TIER1) or cap is None:
            return sel
        own = self.ctx.shard(row["key"], 0)[:-len("-r0.extxyz")]  # campaign-<name>-<c>
        return sel.thinned(lambda shard: shard.startswith((own + "-", own + "@")), cap)

    def _tier1_model(self, row: dict, gkey: str, family: steps.Family, ref: ReferenceRun, start: int,
                     ready: bool = False) -> Usable:
        """A tier-1 model.  ``ready`` (the family model's mean force error on the seed frames is at most its error
        on the verified reference's held-out block): the family model itself, round 0, no training.  Otherwise
        round 0 fine-tunes the family model on the shared-element store (seed labels included); its warm-up MD at
        every production temperature (``warmup:<g>``) is labelled (``label:<g>:1``, ``funnel.md_labels`` frames)
        and round 1 fine-tunes on them.  A repair (``start`` > 0) fine-tunes the previous round's model on the
        store, the audit labels that failed it included.  The members' errors on the verified reference's
        held-out block are the accuracy baseline."""
        key, f, al = row["key"], self.spec.funnel, self.spec.active_learning
        self._stage(key, "tier1", start)
        if start == 0 and ready:
            members, r = list(family.members), 0
            self.ledger.record_round(gkey, 0, {"round": 0, "verdict": "family model as is"})
        elif start == 0:
            members = self._train_round(row, gkey, 0, ref.oracle, family.members if al.fine_tune else None)
            r = 0
            if f.md_labels:
                temps = self.ctx1.spec.production_temperatures()
                warm = self._step(key, "warmup", steps.warmup(self.ctx1, gkey, members, row["structure_path"], temps),
                                  g=gkey)
                stable = Runs([run for run in warm.runs if run.verdict == V.STABLE])
                diag = {"round": 0, "verdict": "warm-up", "warmup_broken_K": [run.temperature_K for run in warm.runs
                                                                               if run.verdict != V.STABLE]}
                if stable.runs:
                    frames = self.roles.call(steps.audit_frames(self.ctx1, stable, f.md_labels)).frames
                    lab = self._step(key, "label", steps.label(self.ctx1, gkey, 1, stable, frames, ref, max(temps)),
                                     g=gkey, r=1)
                    diag.update(labels_added=lab.n_labels, labels_failed=lab.n_failed)
                    if lab.shard:
                        members, r = self._train_round(row, gkey, 1, ref.oracle, members), 1
                self.ledger.record_round(gkey, 0, diag)
        else:
            r = start
            before = self.steps.done(STEPS["train"].at(g=gkey, r=start - 1), steps.Trained)
            init = before.trained.members if before is not None else list(family.members)
            members = self._train_round(row, gkey, r, ref.oracle, init)
        errors = (self._step(key, "calibrate", steps.reference_errors(self.ctx1, members, ref), g=gkey, r=r)
                  if len(members) > 1 and ref.metadata.get("calibration_forces", True) else None)
        return Usable(members, Verdict(V.STABLE, None, {}), Runs([]), errors, r)

    # --- results --------------------------------------------------------------------------------
    def write_results_csv(self, rows: list[dict]) -> str:
        """``results.csv`` of the ranked rows (``orchestrator.campaign.results.ranked``)."""
        path = self.root / "results.csv"
        atomic_write_text(path, rows_csv(rows))
        return str(path)

    def plot_ranking(self, rows: list[dict]) -> str:
        """``plots/ranking.png``: every candidate's log10 σ(300 K) with its total error, the known value beside it
        (the campaign run's first plot)."""
        from analysis.plots import plot_ranking

        path = self.root / "plots" / "ranking.png"
        plot_ranking([f"{r['name']} (tier {r['tier']})" if r.get("tier") else r["name"] for r in rows],
                     [r.get("log10_sigma_300K") for r in rows],
                     [r.get("log10_sigma_300K_err_total") or r.get("log10_sigma_300K_err") for r in rows],
                     [r.get("known_log10_sigma_300K") for r in rows], path,
                     f"{self.name}: log10 σ(300 K) of {len(rows)} candidates, measured values beside them")
        return str(path)

    def write_results_table(self, rows: list[dict]) -> str:
        """``results.md``: the ranked table with units in its headers (an artifact of the campaign's run)."""
        path = self.root / "results.md"
        atomic_write_text(path, results_markdown(rows))
        return str(path)


def _mean(values) -> float:
    """Mean of a list of numbers (inf when empty)."""
    return sum(values) / len(values) if values else float("inf")


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
