"""The candidate's steps, as one table: each step's name, ledger key, the role that runs it, its typed request
and typed result.  The request builders below turn the spec into each step's request; the driver
(``driver.Campaign``) walks the steps in this order and records each result under its key.  No science here.

==============  =========================  ================  ==========================  =========================
step            ledger key                 role              request                     result
==============  =========================  ================  ==========================  =========================
candidates      ``candidates``             CandidateGen.     GenerateCandidates          CandidateSet
reference       ``ref:<c>``                ReferenceWorker   ReferenceMD/ImportReference ReferenceRun
trainset        ``trainset:<g>:<r>``       (the driver)      -                           Selection
train           ``train:<g>:<r>``          Trainer           Train                       Trained
explore         ``explore:<g>:<r>``        MDWorker          RunMD                       Runs
calibrate       ``calibrate:<g>:<r>``      StabilityJudge    ReferenceErrors             Errors
audit           ``audit:<g>:<r>``          Judge + Reference AuditFrames, Label, Force.  Audit
judge           ``judge:<g>:<r>``          StabilityJudge    Judge                       ExplorationReport
label           ``label:<g>:<r+1>``        ReferenceWorker   Label                       LabelResult
force_errors    ``force_errors:<g>:<r+1>`` StabilityJudge    ForceErrors                 Errors
slope_reference ``ref:<c>:<T>K``           ReferenceWorker   ReferenceMD/ImportReference ReferenceRun
plan            ``plan:<g>:<r>:<k>``       StabilityJudge    PlanChunk                   Chunk
production      ``prod:<g>:<r>:<k>``       MDWorker          RunMD                       Runs
certify         ``certify:<g>:<r>:<T>K``   Judge + Reference AuditFrames, Label, Force., Certified
                                                             Judge
transport       ``transport:<g>``          StabilityJudge    TransportRequest            Transport
screened        ``screened:<g>``           (the driver)      -                           Screened
seed            ``seed:<c>``               ReferenceWorker   SeedLabels                  LabelResult
family_errors   ``family_errors:<c>``      StabilityJudge    ForceErrors                 Errors
warmup          ``warmup:<g>``             MDWorker          RunMD                       Runs
family          ``family:<c>``             (the driver)      -                           Family
tier2           ``tier2``                  (the driver)      -                           Tier2
==============  =========================  ================  ==========================  =========================

The funnel (``funnel.enabled``): a tier-1 candidate (``<g>`` = ``<c>@t1``) has no ``ref``, ``explore``,
``calibrate``'s reference of its own or ``judge``: ``seed`` labels its structure and rattled copies,
``family_errors`` measures the family model on them before any fine-tuning, ``train`` fine-tunes the family
model, ``warmup`` runs it briefly at every production temperature and ``label`` labels frames of it, then
``plan``/``production``/``certify``/``transport`` as for tier 2, the accuracy checks against the family's
verified reference.  ``family`` records which model later candidates start from; ``tier2`` which tier-1
candidates get oracle MD.

``<c>``: the candidate's key; ``<g>``: its generation's key (``<c>``, then ``<c>@g2``...); ``<r>``: the round
(production: the round of the model it runs; a repaired model's production starts again); ``<k>``: the
production chunk; ``<T>``: a production temperature.
Paths depend only on the step, so a step retried after a crash overwrites its own half-finished work.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from actors import requests as rq
from actors.requests import Errors, Runs, Transport
from analysis.planning import Chunk, ModelCheck
from analysis.selection import ExplorationReport
from models.ensemble_training import EnsembleTrainResult
from orchestrator.campaign.spec import CampaignSpec
from reference.candidates import CandidateSet
from reference.oracles import LabelResult
from reference.reference_md import ReferenceRun
from reference.store import LabelStore, Selection, shard_name


# --- results the driver composes ------------------------------------------------------------------------
@dataclass
class Trained:
    """A round's training: the ensemble's result and the store selection it trained on (fixed before)."""
    trained: EnsembleTrainResult
    training_set: dict

    def to_dict(self) -> dict:
        return {**self.trained.to_dict(), "training_set": self.training_set}

    @classmethod
    def from_dict(cls, d: dict) -> "Trained":
        d = dict(d)
        sel = d.pop("training_set")
        return cls(EnsembleTrainResult.from_dict(d), sel)


@dataclass
class Audit:
    """The oracle's audit of an exploration run: the frames (per replica), their labels, and the ensemble's
    errors there (None when nothing could be labelled)."""
    frames: list[list[int]]
    labels: LabelResult
    errors: Errors | None = None

    def to_dict(self) -> dict:
        return {"frames": self.frames, **self.labels.to_dict(), **(self.errors.to_dict() if self.errors else {})}

    @classmethod
    def from_dict(cls, d: dict) -> "Audit":
        labels = LabelResult.from_dict({k: d[k] for k in ("n_labels", "n_failed", "errors", "shard")})
        return cls(d["frames"], labels, Errors.from_dict(d) if "deviation_eV_A" in d else None)


@dataclass
class Screened:
    """What a finished candidate's screening accounts for: the fingerprint of its training data in the store."""
    fingerprint: str
    n_frames: int
    oracle: str
    generation: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "Screened":
        return cls(**d)


@dataclass
class Certified:
    """The student certified at a production temperature: the oracle's audit of its first chunk there (None
    with ``precision.audit_labels`` 0) and the judge's verdict on it (breakage, accuracy, deviation; against
    the slope-check reference also structure and dynamics)."""
    temperature_K: float
    report: ExplorationReport
    audit: Audit | None = None

    def to_dict(self) -> dict:
        return {"temperature_K": self.temperature_K, "report": self.report.to_dict(),
                "audit": self.audit.to_dict() if self.audit else None}

    @classmethod
    def from_dict(cls, d: dict) -> "Certified":
        return cls(d["temperature_K"], ExplorationReport.from_dict(d["report"]),
                   Audit.from_dict(d["audit"]) if d.get("audit") else None)


@dataclass
class Family:
    """The model a tier-1 candidate starts from: ``members`` (checkpoint paths), the candidate that trained them
    (``source``), the verified tier-2 candidate whose oracle reference is the accuracy baseline (``verified``)
    and that candidate's model term of log10 sigma(300 K) (None without one)."""
    members: list[str]
    source: str
    verified: str
    model_term: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "Family":
        return cls(**d)


@dataclass
class Tier2:
    """Which tier-1 candidates get tier 2 (oracle MD), and which could be in the top k but found no budget."""
    picked: list[str]
    over_budget: list[str]
    top_k: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "Tier2":
        return cls(**d)


@dataclass(frozen=True)
class Step:
    """One row of the step table."""
    name: str
    key: str             # the ledger key, ``str.format`` with c (candidate), g (generation key), r (round)
    role: str            # which role answers (``actors.roles``), or "driver"
    request: tuple       # the request types it sends
    result: type

    def at(self, **ids) -> str:
        return self.key.format(**ids)


STEPS = {s.name: s for s in [
    Step("candidates", "candidates", "CandidateGenerator", (rq.GenerateCandidates,), CandidateSet),
    Step("reference", "ref:{c}", "ReferenceWorker", (rq.ReferenceMD, rq.ImportReference), ReferenceRun),
    Step("trainset", "trainset:{g}:{r}", "driver", (), Selection),
    Step("train", "train:{g}:{r}", "Trainer", (rq.Train,), Trained),
    Step("explore", "explore:{g}:{r}", "MDWorker", (rq.RunMD,), Runs),
    Step("calibrate", "calibrate:{g}:{r}", "StabilityJudge", (rq.ReferenceErrors,), Errors),
    Step("audit", "audit:{g}:{r}", "StabilityJudge, ReferenceWorker", (rq.AuditFrames, rq.Label, rq.ForceErrors),
         Audit),
    Step("judge", "judge:{g}:{r}", "StabilityJudge", (rq.Judge,), ExplorationReport),
    Step("label", "label:{g}:{r}", "ReferenceWorker", (rq.Label,), LabelResult),
    Step("force_errors", "force_errors:{g}:{r}", "StabilityJudge", (rq.ForceErrors,), Errors),
    Step("slope_reference", "ref:{c}:{t:g}K", "ReferenceWorker", (rq.ReferenceMD, rq.ImportReference), ReferenceRun),
    Step("plan", "plan:{g}:{r}:{k}", "StabilityJudge", (rq.PlanChunk,), Chunk),
    Step("production", "prod:{g}:{r}:{k}", "MDWorker", (rq.RunMD,), Runs),
    Step("certify", "certify:{g}:{r}:{t:g}K", "StabilityJudge, ReferenceWorker",
         (rq.AuditFrames, rq.Label, rq.ForceErrors, rq.Judge), Certified),
    Step("transport", "transport:{g}", "StabilityJudge", (rq.TransportRequest,), Transport),
    Step("screened", "screened:{g}", "driver", (), Screened),
    Step("seed", "seed:{c}", "ReferenceWorker", (rq.SeedLabels,), LabelResult),
    Step("family_errors", "family_errors:{c}", "StabilityJudge", (rq.ForceErrors,), Errors),
    Step("warmup", "warmup:{g}", "MDWorker", (rq.RunMD,), Runs),
    Step("family", "family:{c}", "driver", (), Family),
    Step("tier2", "tier2", "driver", (), Tier2),
]}


@dataclass
class Context:
    """What every request builder needs: the validated spec, the campaign directory and the store."""
    spec: CampaignSpec
    root: Path              # <store>/<campaign name>
    store: Path             # the data store root (labels in <store>/shards)
    _labels: LabelStore | None = field(default=None, repr=False)

    @property
    def labels(self) -> LabelStore:
        """The store, opened once: its per-shard summaries are cached between selections."""
        if self._labels is None:
            self._labels = LabelStore(self.store)
        return self._labels

    @property
    def name(self) -> str:
        return self.spec.name

    def shard(self, key: str, n: int) -> str:
        return shard_name(self.name, key, n)


# --- request builders: spec -> request ------------------------------------------------------------------
def candidates(ctx: Context) -> rq.GenerateCandidates:
    """Structures in ``candidates/<c>/``."""
    s = ctx.spec
    return rq.GenerateCandidates(str(ctx.root / "candidates"), s.candidates, list(s.prototypes), s.space)


def reference(ctx: Context, row: dict) -> rq.Request:
    """Oracle MD at the reference temperature (its labels are the shard r0), or the user's trajectory
    (``reference_data.trajectories``: the service's HDF5 copy and the shard r0) instead."""
    key, s = row["key"], ctx.spec
    trajectory, run_id = str(ctx.root / "reference" / f"{key}.h5"), f"{ctx.name}/{key}/r0"
    source = s.user_reference(row)
    if source is None:
        return rq.ReferenceMD(row["structure_path"], s.reference_plan(), trajectory, str(ctx.store),
                              ctx.shard(key, 0), run_id)
    return _import(ctx, source, row, trajectory, ctx.shard(key, 0), run_id, s.active_learning.initial_labels)


def _import(ctx: Context, source, row: dict, trajectory: str, shard: str, run_id: str,
            labels: int) -> rq.ImportReference:
    s = ctx.spec
    return rq.ImportReference(source, row["structure_path"], trajectory,
                              s.md.equilibration_steps * s.md.protocol.timestep_fs, str(ctx.store), shard,
                              labels, s.reference_data.oracle, run_id, s.active_learning.calibration_holdout)


def training_set(ctx: Context, elements: set[str], min_shared: int, oracle: str) -> Selection:
    """The store selection a round trains on, fixed before training."""
    return ctx.labels.select(elements, min_shared, oracle)


def train(ctx: Context, gkey: str, r: int, selection: Selection, init: list[str] | None) -> rq.Train:
    """Train (round 0) or fine-tune the ensemble on exactly ``selection``."""
    s = ctx.spec
    return rq.Train(str(ctx.store), selection.to_dict(), s.models, s.training,
                    str(ctx.root / "models" / gkey / f"r{r}"), s.seed + r, init,
                    s.active_learning.fine_tune_epochs if init else None, s.resources.streaming,
                    s.resources.trainer_workers)


def explore(ctx: Context, gkey: str, r: int, members: list[str], structure: str, ref: ReferenceRun) -> rq.RunMD:
    """Student MD at the reference's temperature, same protocol and length as the reference, in
    ``md.exploration_replicas`` replicas as one batch."""
    s = ctx.spec
    return rq.RunMD(members, structure, [s.reference_temperature(ref)], s.md.exploration_replicas,
                    s.md.run_protocol(s.exploration_steps(ref), s.md.equilibration_steps), s.monitor(),
                    s.seed + 1000 * r, str(ctx.root / "md" / gkey / f"explore_r{r}"))


def reference_errors(ctx: Context, members: list[str], ref: ReferenceRun) -> rq.ReferenceErrors:
    """The ensemble's force deviation and true error on the reference's held-out block."""
    return rq.ReferenceErrors(members, ref.trajectory, ctx.spec.stability)


def audit_frames(ctx: Context, explored: Runs, n: int | None = None, n_transit: int = 0) -> rq.AuditFrames:
    """``n`` frames (default ``active_learning.audit_labels``) spread over the replicas of ``explored``, and
    ``n_transit`` with the most mobile ions in transit."""
    return rq.AuditFrames(explored.trajectories, ctx.spec.active_learning.audit_labels if n is None else n,
                          n_transit, tuple(ctx.spec.stability.mobile_species))


def judge(ctx: Context, gkey: str, r: int, explored: Runs, ref: ReferenceRun, errors: Errors | None,
          audit: Audit | None) -> rq.Judge:
    """The exploration replicas judged as one; ``errors``: the ensemble's on the reference's held-out block,
    ``audit``: on audited frames of the run."""
    plot = str(ctx.root / "plots" / gkey / f"rdf_round{r}.png")
    return certify_judge(ctx, explored, ref.trajectory, errors, audit, plot)


def label(ctx: Context, gkey: str, n: int, explored: Runs, frames: list[list[int]], ref: ReferenceRun,
          temperature_K: float | None = None) -> rq.Label:
    """Oracle labels of the selected frames (one list per replica) as the shard ``r<n>``; the runs'
    temperature (default the reference's) is recorded with them."""
    t = ctx.spec.reference_temperature(ref) if temperature_K is None else temperature_K
    return rq.Label(explored.trajectories, frames, t, str(ctx.store),
                    ctx.shard(gkey, n), f"{ctx.name}/{gkey}/r{n}", tuple(ctx.spec.stability.mobile_species))


def force_errors(ctx: Context, members: list[str], shard: str, reference_calibration: dict | None) -> rq.ForceErrors:
    """The ensemble's force MAE on the frames just labelled and its deviation's calibration there, tested
    against the reference's (trust band, failure level, error-bound factor)."""
    return rq.ForceErrors(members, shard, ctx.spec.stability.false_alarm_rate, reference_calibration)


def slope_reference(ctx: Context, row: dict, temperature_K: float) -> rq.Request:
    """The slope check's reference at ``temperature_K`` (its labels are the shard ``<c>-<T>K`` r0): the user's
    trajectory (``reference_data.slope_trajectories``), else oracle MD of ``md.reference_steps``."""
    key, s = row["key"], ctx.spec
    trajectory, run_id = str(ctx.root / "reference" / f"{key}_{temperature_K:g}K.h5"), f"{ctx.name}/{key}/{temperature_K:g}K"
    shard = ctx.shard(f"{key}-{temperature_K:g}K", 0)
    labels = s.precision.slope_labels or s.active_learning.initial_labels
    source = s.user_reference(row, slope=True)
    if source is not None:
        return _import(ctx, source, row, trajectory, shard, run_id, labels)
    return rq.ReferenceMD(row["structure_path"], s.reference_plan(temperature_K=temperature_K, labels=labels),
                          trajectory, str(ctx.store), shard, run_id)


def plan_chunk(ctx: Context, runs: dict, ps: dict, failed: dict, spent_ps: float,
               checks: list[ModelCheck], prior: float | None = None) -> rq.PlanChunk:
    """The planner's next chunk from the stable runs per temperature so far (``prior``: a tier-1 candidate's
    model term)."""
    s = ctx.spec
    return rq.PlanChunk([[t, list(p)] for t, p in runs.items()], [[t, v] for t, v in ps.items()], sorted(failed),
                        s.precision, s.chunk_ps(), s.md.replicas, spent_ps, s.md.species,
                        s.md.equilibration_steps * s.md.protocol.timestep_fs / 1000.0, s.stability.min_msd_A2,
                        [c.__dict__ for c in checks], prior)


def production(ctx: Context, gkey: str, r: int, members: list[str], structure: str, temperature_K: float,
               chunks: int, index: int) -> rq.RunMD:
    """The production runs at ``temperature_K`` (``md.replicas`` in one batch, ``md.supercell``) of round
    ``r``'s model extended to ``chunks`` chunks of ``md.steps``: the run in ``production_r<r>/<T>K`` resumes
    from its checkpoint."""
    s = ctx.spec
    return rq.RunMD(members, structure, [temperature_K], s.md.replicas,
                    s.md.run_protocol(chunks * s.md.steps, s.md.equilibration_steps), s.monitor(),
                    s.seed + 77 + 1000 * index + 7919 * r,
                    str(ctx.root / "md" / gkey / f"production_r{r}" / f"{temperature_K:g}K"),
                    supercell=tuple(s.md.supercell))


def certify_judge(ctx: Context, runs: Runs, reference: str, errors: Errors | None, audit: Audit | None,
                  rdf_plot: str | None = None, same_material: bool = True) -> rq.Judge:
    """The verdict on ``runs`` (an exploration run, or a temperature's first production chunk) judged against
    ``reference`` (structure and dynamics only when at its temperature), with the ensemble's errors on the
    reference and the audit; the RDF plot drawn to ``rdf_plot`` when given.  ``same_material`` False: the
    reference is another material's (tier 1), only its errors are compared."""
    al = ctx.spec.active_learning
    audited = ({"frames": audit.frames, "mean_error_eV_A": audit.errors.mean_error_eV_A,
                "transit_error_eV_A": audit.errors.transit_error_eV_A} if audit and audit.errors else None)
    return rq.Judge(runs.trajectories, reference, ctx.spec.stability, al.labels_per_round, al.min_frame_distance_A,
                    rdf_plot, errors.deviation_eV_A if errors else None, errors.mean_error_eV_A if errors else None,
                    audited, errors.transit_error_eV_A if errors else None, same_material)


def transport(ctx: Context, gkey: str, trajectories: list[str], checks: list[ModelCheck],
              prior: float | None = None, title: str | None = None) -> rq.TransportRequest:
    """D(T), sigma(T), Ea, log10 sigma(300 K) of the certified stable runs with its error budget
    (``checks``: the dynamics checks against the oracle; ``prior``: a tier-1 candidate's model term instead),
    and their plots."""
    s = ctx.spec
    return rq.TransportRequest(trajectories, s.md.species, str(ctx.root / "plots" / gkey), s.stability.min_msd_A2,
                               [c.__dict__ for c in checks], s.stability.false_alarm_rate, prior, title)


# --- the funnel's tier 1 ----------------------------------------------------------------------------------
def seed(ctx: Context, row: dict) -> rq.SeedLabels:
    """Oracle labels of the candidate's structure and ``funnel.seed_labels - 1`` rattled copies (shard
    ``<c>-seed`` r0)."""
    s, key = ctx.spec, row["key"]
    return rq.SeedLabels(row["structure_path"], s.funnel.seed_labels, s.funnel.rattle_A, s.seed, str(ctx.store),
                         ctx.shard(f"{key}-seed", 0), f"{ctx.name}/{key}/seed")


def warmup(ctx: Context, gkey: str, members: list[str], structure: str, temperatures_K: list[float]) -> rq.RunMD:
    """Short student MD (``funnel.warmup_steps``) at every production temperature, one replica each, one batch."""
    s = ctx.spec
    return rq.RunMD(members, structure, list(temperatures_K), 1, s.md.run_protocol(s.funnel.warmup_steps, 0),
                    s.monitor(), s.seed + 31, str(ctx.root / "md" / gkey / "warmup"))

