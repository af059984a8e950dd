"""The campaign's Ray actors: one per role, one short method per task, each calling one package function.

Each method takes one typed request (``actors.requests``) and answers with its typed result; ``handle``
runs any request of the role by ``ROUTES``.  Settings inside a request are the packages' own config
dataclasses exactly as the spec holds them; paths point into the campaign directory and the data store.
Fault tolerance is set on purpose: every actor is created with ``max_restarts`` and ``max_task_retries``;
that is safe because every method is idempotent (outputs go to step-specific paths written atomically; label shards have deterministic
names), and the driver records each answer in the ledger before moving on.
"""
from __future__ import annotations

import os
import uuid

import ray

from actors import requests as rq
from actors.requests import (Chunk, CandidateSet, EnsembleTrainResult, ExplorationReport, LabelResult,  # noqa: F401
                             ReferenceRun)


def remote(cls, *, num_cpus: float = 0.0, num_gpus: float = 0.0, max_restarts: int = 3,
           max_task_retries: int = 2, resources: dict | None = None, env: dict | None = None):
    """``ray.remote(cls).options(...)`` with the campaign's restart policy (and custom ``resources``,
    see :mod:`orchestrator.ops.placement`; ``env``: environment variables of the actor's process, e.g.
    ``common.progress.DIR_ENV``, where its tasks report their progress)."""
    extra = {"runtime_env": {"env_vars": {k: str(v) for k, v in env.items()}}} if env else {}
    return ray.remote(cls).options(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts,
                                   max_task_retries=max_task_retries, resources=dict(resources or {}), **extra)


def _device() -> str:
    """The GPU Ray assigned to this actor, else the CPU; outside an actor, what the machine has."""
    if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
        return "cuda" if ray.get_gpu_ids() else "cpu"
    from md.runner import default_device

    return default_device()


class _Role:
    """Threads as Ray granted (this actor owns its process), and an incarnation id for tests."""

    def __init__(self, num_cpus: float = 1.0):
        import torch

        self._cpus = max(1, int(num_cpus or 1))
        torch.set_num_threads(self._cpus)
        self._incarnation = f"{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def instance(self) -> str:
        """``pid:uuid`` of this actor incarnation (changes when Ray restarts the actor)."""
        return self._incarnation

    def handle(self, request: rq.Request):
        """Run one typed request (``actors.requests``) by this role's method for its type (``ROUTES``)."""
        role, method = ROUTES.get(type(request), (None, None))
        if role is None or not isinstance(self, role):
            raise TypeError(f"{type(self).__name__} does not run {type(request).__name__}")
        from common import progress

        folder = os.environ.get(progress.DIR_ENV)
        with progress.reporting(f"{folder}/{type(self).__name__}-{os.getpid()}.json" if folder else None):
            return method(self, request)


class CandidateGenerator(_Role):
    """chemspace -> formulas -> candidate structures (``reference.candidates``)."""

    def generate(self, req: rq.GenerateCandidates) -> CandidateSet:
        from reference.candidates import generate_candidates

        return generate_candidates(req.out_dir, prototypes=list(req.prototypes), space=req.space,
                                   **req.config.keywords())


class ReferenceWorker(_Role):
    """Oracle work on the CPU: reference MD (its labels are the first training set) and labels."""

    def __init__(self, oracle, num_cpus: float = 1.0):
        """``oracle``: ``reference.oracles.OracleConfig``."""
        super().__init__(num_cpus)
        self._oracle_cfg, self._oracle = oracle, None

    @property
    def oracle(self):
        if self._oracle is None:            # loaded once per actor, not once per task
            self._oracle = self._oracle_cfg.make()
        return self._oracle

    def reference_md(self, req: rq.ReferenceMD) -> ReferenceRun:
        from reference.reference_md import run_reference_md
        from reference.store import LabelStore
        from reference.structures import structure_atoms

        return run_reference_md(structure_atoms(req.structure), self.oracle, req.plan, req.trajectory,
                                LabelStore(req.store), run_id=req.run_id, shard=req.shard, raise_on_failure=False,
                                monitor=req.monitor)

    def import_reference(self, req: rq.ImportReference) -> ReferenceRun:
        from reference.store import LabelStore
        from reference.structures import structure_atoms
        from reference.user_reference import import_reference

        return import_reference(req.source, structure_atoms(req.structure), req.trajectory, discard_fs=req.discard_fs,
                                store=LabelStore(req.store), shard=req.shard, n_labels=req.n_labels,
                                oracle=self.oracle, labels_oracle=req.labels_oracle, run_id=req.run_id,
                                holdout_fraction=req.holdout_fraction)

    def seed_labels(self, req: rq.SeedLabels) -> LabelResult:
        from reference.oracles import label_into_store
        from reference.seeding import seed_frames
        from reference.store import LabelStore
        from reference.structures import structure_atoms

        frames = seed_frames(structure_atoms(req.structure), req.n, req.rattle_A, req.seed)
        return label_into_store(self.oracle, frames, LabelStore(req.store), req.shard, "seed", None, req.run_id)

    def label(self, req: rq.Label) -> LabelResult:
        """Replica after replica, one shard."""
        from md.trajectory import read_atoms
        from reference.oracles import label_into_store
        from reference.store import LabelStore

        from analysis.transit import transit_mask
        from md.trajectory import load_trajectory

        atoms = []
        for path, idx in zip(req.trajectories, req.frames):
            if idx:
                moving = transit_mask(load_trajectory(path), req.species)
                for i, a in zip(idx, read_atoms(path, list(idx))):
                    a.arrays["in_transit"] = moving[i]
                    atoms.append(a)
        return label_into_store(self.oracle, atoms, LabelStore(req.store), req.shard, "active-learning",
                                req.temperature_K, req.run_id)


class MDWorker(_Role):
    """Student-ensemble MD (exploration and production) on the device Ray assigned to this actor."""

    def run(self, req: rq.RunMD) -> rq.Runs:
        from md.runner import run_temperatures
        from models import load_ensemble
        from reference.structures import structure_atoms

        device = req.device or _device()
        members = list(req.members)
        atoms = structure_atoms(req.structure).repeat(tuple(req.supercell))
        return rq.Runs(run_temperatures(load_ensemble(members, device), atoms,
                                        list(req.temperatures_K), req.replicas, req.protocol, req.out_dir,
                                        seed=req.seed, monitor=req.monitor, device=device,
                                        metadata={"kind": "mlff", "members": members}))


def _paths(paths: list[str]) -> list[str]:
    """A list of trajectory paths; one bare path is a caller's slip (it would be read character by character)."""
    if isinstance(paths, (str, bytes)) or not hasattr(paths, "__iter__"):
        raise TypeError(f"expected a list of trajectory paths, got {paths!r}; wrap one path in a list")
    return list(paths)


class StabilityJudge(_Role):
    """Verdicts and frames to label (``analysis.selection``), force errors, transport (``analysis``)."""

    def judge(self, req: rq.Judge) -> ExplorationReport:
        """The exploration run's replicas, judged as one."""
        from analysis.selection import judge_exploration
        from md.trajectory import load_trajectory

        return judge_exploration([load_trajectory(p) for p in _paths(req.explore)], load_trajectory(req.reference),
                                 req.thresholds, req.n_label, req.min_rmsd_A, req.rdf_plot,
                                 req.reference_deviation, req.reference_error, req.audit, req.reference_transit,
                                 req.same_material)

    def audit_frames(self, req: rq.AuditFrames) -> rq.Frames:
        from analysis.selection import audit_frames
        from md.trajectory import load_trajectory

        return rq.Frames(audit_frames([load_trajectory(p) for p in _paths(req.explore)], req.n, req.n_transit,
                                      req.species))

    def judge_runs(self, req: rq.JudgeRuns) -> rq.Verdicts:
        from analysis.verdicts import judge_runs
        from md.trajectory import load_trajectory

        groups = [[load_trajectory(p) for p in _paths(group)] for group in req.groups]
        return rq.Verdicts(judge_runs(groups, load_trajectory(req.reference), req.thresholds))

    def reference_errors(self, req: rq.ReferenceErrors) -> rq.Errors:
        """On the held-out calibration block of an oracle trajectory (never trained on:
        ``reference.reference_md.calibration_block``; every frame when it has none)."""
        from analysis.calibration import calibrate_reference
        from md.trajectory import load_trajectory, read_atoms
        from models import ensemble_errors, load_ensemble
        from reference.reference_md import calibration_block

        from analysis.transit import transit_mask

        ref = load_trajectory(req.trajectory)
        plan = ref.metadata.get("reference_plan") or ref.metadata.get("protocol") or {}   # oracle MD, or a user's
        holdout = plan.get("holdout_fraction", 0.0)
        first = calibration_block(len(ref), ref.discard_frames, holdout) if holdout else 0
        frames = read_atoms(req.trajectory, slice(first, None))
        for a, moving in zip(frames, transit_mask(ref, req.thresholds.mobile_species)[first:]):
            a.arrays["in_transit"] = moving
        errors = ensemble_errors(load_ensemble(list(req.members)), frames)
        return rq.Errors(**errors, first_frame=first, calibration=calibrate_reference(
            errors["deviation_eV_A"], errors["max_error_eV_A"], req.thresholds))

    def force_errors(self, req: rq.ForceErrors) -> rq.Errors:
        """Against the trust band, failure level and error-bound factor of ``reference_calibration``; no errors
        (``calibration.unknown_elements``) when the frames hold elements the ensemble has never seen."""
        from analysis.calibration import calibrate
        from models import ensemble_errors, evaluate, load_ensemble, read_frames
        from models.ensemble import unknown_elements

        ensemble, frames = load_ensemble(list(req.members)), read_frames(req.shard)
        missing = unknown_elements(ensemble, frames)
        if missing:
            return rq.Errors([], [], [], {"unknown_elements": missing})
        errors = ensemble_errors(ensemble, frames)
        ref = req.reference_calibration or {}
        levels = (ref["trust_lo_eV_A"], ref["trust_hi_eV_A"]) if "trust_lo_eV_A" in ref else None
        return rq.Errors(**errors, force_mae_meV_A=evaluate(ensemble, frames)["force_mae_meV_A"],
                         calibration=calibrate(errors["deviation_eV_A"], errors["max_error_eV_A"], levels, req.alpha,
                                               ref.get("failure_error_eV_A"), ref.get("error_bound_factor")))

    def transport(self, req: rq.TransportRequest) -> rq.Transport:
        from analysis.plots import plot_transport
        from analysis.transport import transport
        from md.trajectory import load_trajectory

        from analysis.planning import ModelCheck, error_budget

        result = transport([load_trajectory(p) for p in _paths(req.trajectories)], req.species, req.min_msd_A2)
        record = result.to_dict()
        budget = error_budget(record, [ModelCheck(**c) for c in req.checks], req.alpha, req.model_prior)
        if budget is not None:
            record.update(budget.to_dict())
        plots = (plot_transport(result, req.plot_dir, req.title, record.get("log10_sigma_300K_err_total"))
                 if req.plot_dir else [])
        return rq.Transport(record, plots)

    def plan_chunk(self, req: rq.PlanChunk) -> Chunk:
        from analysis.planning import ModelCheck, plan_from_runs
        from md.trajectory import load_trajectory

        runs = {float(t): [load_trajectory(p) for p in _paths(paths)] for t, paths in req.runs}
        return plan_from_runs(runs, {float(t): float(p) for t, p in req.ps}, req.failed, req.plan, req.chunk_ps,
                              req.replicas, req.spent_ps, req.species, req.discard_ps, req.min_msd_A2,
                              [ModelCheck(**c) for c in req.checks], req.model_prior)


class Trainer(_Role):
    """Trains or fine-tunes an ensemble on a recorded store selection; publishes it as files (a model version)."""

    def train(self, req: rq.Train) -> EnsembleTrainResult:
        """``streaming``: the selection goes to an on-disk frame cache first (bounded memory); ``workers`` > 1
        trains each member data-parallel on Ray Train (streamed); on CPUs, members train at once, one per CPU
        this actor holds."""
        from dataclasses import replace
        from pathlib import Path

        from actors.distributed import data_parallel_fit
        from models import train_ensemble
        from models.streaming import FrameCache
        from reference.store import LabelStore, Selection

        labels, sel = LabelStore(req.store), Selection.from_dict(req.selection)
        frames = (FrameCache.build(Path(req.out_dir) / "frames.h5", labels.iter_frames(sel))
                  if req.streaming or req.workers > 1 else labels.frames_of(sel))
        gpu = _device() == "cuda"
        result = train_ensemble(frames, req.ensemble, req.training, req.out_dir, req.seed,
                                list(req.init) if req.init else None, req.fine_tune_epochs,
                                fit_fn=data_parallel_fit(req.workers, gpu) if req.workers > 1 else None,
                                processes=self._cpus if not gpu else 1)
        return replace(result, models=[])   # the answer crosses processes: files, not modules


# request type -> (the role that runs it, its method): the one route from a request to the code
ROUTES = {rq.GenerateCandidates: (CandidateGenerator, CandidateGenerator.generate),
          rq.ReferenceMD: (ReferenceWorker, ReferenceWorker.reference_md),
          rq.ImportReference: (ReferenceWorker, ReferenceWorker.import_reference),
          rq.Label: (ReferenceWorker, ReferenceWorker.label),
          rq.SeedLabels: (ReferenceWorker, ReferenceWorker.seed_labels),
          rq.RunMD: (MDWorker, MDWorker.run),
          rq.Judge: (StabilityJudge, StabilityJudge.judge),
          rq.JudgeRuns: (StabilityJudge, StabilityJudge.judge_runs),
          rq.AuditFrames: (StabilityJudge, StabilityJudge.audit_frames),
          rq.ReferenceErrors: (StabilityJudge, StabilityJudge.reference_errors),
          rq.ForceErrors: (StabilityJudge, StabilityJudge.force_errors),
          rq.TransportRequest: (StabilityJudge, StabilityJudge.transport),
          rq.PlanChunk: (StabilityJudge, StabilityJudge.plan_chunk),
          rq.Train: (Trainer, Trainer.train)}


def role_of(request) -> type:
    """The role class that runs ``request``."""
    try:
        return ROUTES[type(request)][0]
    except KeyError:
        raise TypeError(f"{type(request).__name__} is not a request of actors.requests") from None
