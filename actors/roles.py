"""The campaign's Ray actors: one per role, one short method per task, each calling one package function.

Settings arrive as the packages' own config dataclasses (``models.TrainConfig``, ``md.protocol.Protocol``,
``analysis.verdicts.VerdictThresholds``, ...), exactly as the spec holds them; answers are the packages'
result dataclasses as dicts (``to_dict``), file paths into the campaign directory, and the data store's root.  Fault tolerance is set on purpose: every actor is
created with ``max_restarts`` and ``max_task_retries``; that is safe because every method is
idempotent (outputs go to step-specific paths written atomically; label shards have deterministic
names), and the driver records each answer in the ledger before moving on.
"""
from __future__ import annotations

import os
import uuid

import ray


def remote(cls, *, num_cpus: float = 0.0, num_gpus: float = 0.0, max_restarts: int = 3,
           max_task_retries: int = 2, resources: dict | None = None):
    """``ray.remote(cls).options(...)`` with the campaign's restart policy (and custom ``resources``,
    see :mod:`orchestrator.ops.placement`)."""
    return ray.remote(cls).options(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts,
                                   max_task_retries=max_task_retries, resources=dict(resources or {}))


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


class CandidateGenerator(_Role):
    """chemspace -> formulas -> candidate structures (``reference.candidates``)."""

    def generate(self, out_dir: str, config, prototypes: list[str], space) -> dict:
        """``config``: ``reference.candidates.CandidateConfig``, ``space``: ``SpaceSpec``."""
        from reference.candidates import generate_candidates

        return generate_candidates(out_dir, prototypes=list(prototypes), space=space, **config.keywords()).to_dict()


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

    def reference_md(self, structure: str, protocol, trajectory: str, store: str, shard: str,
                     run_id: str) -> dict:
        """``protocol``: ``reference.reference_md.ReferenceMDProtocol``."""
        from reference.reference_md import run_reference_md
        from reference.store import LabelStore
        from reference.structures import read_atoms

        return run_reference_md(read_atoms(structure), self.oracle, protocol, trajectory,
                                LabelStore(store), run_id=run_id, shard=shard, raise_on_failure=False).to_dict()

    def import_reference(self, source, structure: str, trajectory: str, discard_fs: float, store: str,
                         shard: str, n_labels: int, labels_oracle: str | None, run_id: str,
                         holdout_fraction: float = 0.0) -> dict:
        """A user's trajectory (``source``: ``reference.user_reference.UserReference``) as the reference,
        instead of oracle MD."""
        from reference.store import LabelStore
        from reference.structures import read_atoms
        from reference.user_reference import import_reference

        return import_reference(source, read_atoms(structure), trajectory, discard_fs=discard_fs,
                                store=LabelStore(store), shard=shard, n_labels=n_labels, oracle=self.oracle,
                                labels_oracle=labels_oracle, run_id=run_id,
                                holdout_fraction=holdout_fraction).to_dict()

    def label(self, trajectories: list[str], frames: list[list[int]], temperature_K: float, store: str, shard: str,
              run_id: str) -> dict:
        """Oracle labels of ``frames[k]`` of ``trajectories[k]`` (replicas), one shard, replica after replica."""
        from md.trajectory import read_frames
        from reference.oracles import label_into_store
        from reference.store import LabelStore

        atoms = [a for path, idx in zip(trajectories, frames) if idx for a in read_frames(path, idx)]
        return label_into_store(self.oracle, atoms, LabelStore(store), shard, "active-learning", temperature_K,
                                run_id).to_dict()


class MDWorker(_Role):
    """Student-ensemble MD (exploration and production) on the device Ray assigned to this actor."""

    def run(self, members: list[str], structure: str, temperatures_K: list[float], replicas: int, protocol,
            monitor, seed: int, out_dir: str) -> list[dict]:
        """``protocol``: ``md.protocol.Protocol``; ``monitor``: ``md.monitors.MonitorConfig``."""
        from md.runner import run_temperatures
        from models import load_ensemble
        from reference.structures import read_atoms

        device = _device()
        results = run_temperatures(load_ensemble(members, device), read_atoms(structure), temperatures_K, replicas,
                                   protocol, out_dir, seed=seed, monitor=monitor,
                                   device=device, metadata={"kind": "mlff", "members": members})
        return [r.to_dict() for r in results]


def _paths(paths: list[str]) -> list[str]:
    """A list of trajectory paths; one bare path is a caller's slip (it would be read character by character)."""
    if isinstance(paths, (str, bytes)) or not hasattr(paths, "__iter__"):
        raise TypeError(f"expected a list of trajectory paths, got {paths!r}; wrap one path in a list")
    return list(paths)


class StabilityJudge(_Role):
    """Verdicts and frames to label (``analysis.selection``), force errors, transport (``analysis``)."""

    def judge(self, explore: list[str], reference: str, thresholds, n_label: int, min_rmsd_A: float,
              rdf_plot: str | None = None, reference_deviation: list[float] | None = None,
              reference_error: list[float] | None = None, audit: dict | None = None) -> dict:
        """``explore``: the exploration run's replicas, judged as one; ``thresholds``: ``VerdictThresholds``."""
        from analysis.selection import judge_exploration
        from md.trajectory import load_trajectory

        return judge_exploration([load_trajectory(p) for p in _paths(explore)], load_trajectory(reference),
                                 thresholds, n_label, min_rmsd_A, rdf_plot,
                                 reference_deviation, reference_error, audit).to_dict()

    def audit_frames(self, explore: list[str], n: int) -> list[list[int]]:
        """Frames of an exploration run's replicas for the oracle to audit (``analysis.selection.audit_frames``)."""
        from analysis.selection import audit_frames
        from md.trajectory import load_trajectory

        return audit_frames([load_trajectory(p) for p in _paths(explore)], n)

    def judge_runs(self, runs: list[str], reference: str, thresholds) -> list[dict]:
        from analysis.verdicts import judge_runs
        from md.trajectory import load_trajectory

        return [v.to_dict() for v in judge_runs([load_trajectory(p) for p in runs], load_trajectory(reference),
                                                thresholds)]

    def reference_errors(self, members: list[str], trajectory: str, th) -> dict:
        """The ensemble's deviation and true max force error on the held-out calibration block of an oracle
        trajectory (never trained on: ``reference.reference_md.calibration_block``), and the calibration of one
        against the other under the trust levels this gives."""
        from analysis.calibration import calibrate_reference
        from md.trajectory import load_trajectory, read_atoms
        from models import ensemble_errors, load_ensemble
        from reference.reference_md import calibration_block

        ref = load_trajectory(trajectory)
        holdout = (ref.metadata.get("protocol") or {}).get("holdout_fraction", 0.0)
        first = calibration_block(len(ref), ref.discard_frames, holdout) if holdout else 0   # 0: every frame
        errors = {**ensemble_errors(load_ensemble(members), read_atoms(trajectory, slice(first, None))),
                  "first_frame": first}
        return {**errors, "calibration": calibrate_reference(errors["deviation_eV_A"], errors["max_error_eV_A"], th)}

    def force_errors(self, members: list[str], shard: str, alpha: float, reference_calibration: dict | None) -> dict:
        """Force MAE of the ensemble on newly labelled frames and the calibration of its deviation there, against
        the trust band, failure level and error-bound factor of the ``reference_calibration``."""
        from analysis.calibration import calibrate
        from models import ensemble_errors, evaluate, load_ensemble, read_frames

        ensemble, frames = load_ensemble(members), read_frames(shard)
        errors = ensemble_errors(ensemble, frames)
        ref = reference_calibration or {}
        levels = (ref["trust_lo_eV_A"], ref["trust_hi_eV_A"]) if "trust_lo_eV_A" in ref else None
        return {"force_mae_meV_A": evaluate(ensemble, frames)["force_mae_meV_A"], **errors,
                "calibration": calibrate(errors["deviation_eV_A"], errors["max_error_eV_A"], levels, alpha,
                                         ref.get("failure_error_eV_A"), ref.get("error_bound_factor"))}

    def transport(self, trajectories: list[str], species: str, plot_dir: str | None = None,
                  min_msd_A2: float = 10.0) -> dict:
        from analysis.plots import plot_transport
        from analysis.transport import transport
        from md.trajectory import load_trajectory

        result = transport([load_trajectory(p) for p in trajectories], species, min_msd_A2)
        return {"transport": result.to_dict(), "plots": plot_transport(result, plot_dir) if plot_dir else []}


class Trainer(_Role):
    """Trains or fine-tunes an ensemble on a recorded store selection; publishes it as files (a model version)."""

    def train(self, store: str, selection: dict, ensemble, training, out_dir: str, seed: int,
              init: list[str] | None = None, fine_tune_epochs: int | None = None, streaming: bool = False,
              workers: int = 1) -> dict:
        """``ensemble``: ``models.EnsembleConfig``, ``training``: ``models.TrainConfig``.  ``streaming``: the selection goes to an on-disk frame cache first (bounded memory); ``workers`` > 1
        trains each member data-parallel on Ray Train (streamed); on CPUs, members train at once, one per CPU
        this actor holds."""
        from pathlib import Path

        from actors.distributed import data_parallel_fit
        from models import train_ensemble
        from models.streaming import FrameCache
        from reference.store import LabelStore, Selection

        labels, sel = LabelStore(store), Selection.from_dict(selection)
        frames = (FrameCache.build(Path(out_dir) / "frames.h5", labels.iter_frames(sel)) if streaming or workers > 1
                  else labels.frames_of(sel))
        return train_ensemble(frames, ensemble, training, out_dir, seed, init, fine_tune_epochs,
                              fit_fn=data_parallel_fit(workers, _device() == "cuda") if workers > 1 else None,
                              processes=self._cpus if _device() == "cpu" else 1).to_dict()
