"""The campaign's Ray actors and a small thread-safe actor pool.

Fault tolerance is set on purpose: every actor is created with ``max_restarts`` (Ray re-creates a
dead actor process) and ``max_task_retries`` (Ray re-sends the calls that were in flight).  That is
safe because every method is idempotent: outputs go to step-specific paths, written atomically,
and the driver records each answer in the ledger before moving on.
"""
from __future__ import annotations

import os
import queue
import uuid
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import ray

from actors import science


def remote(cls, *, num_cpus: float = 0.0, num_gpus: float = 0.0, max_restarts: int = 3,
           max_task_retries: int = 2, name: str | None = None, max_concurrency: int = 1,
           resources: dict | None = None):
    """``ray.remote(cls).options(...)`` with the campaign's restart policy (and custom ``resources``,
    see :mod:`actors.placement`)."""
    opts: dict[str, Any] = dict(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts,
                                max_task_retries=max_task_retries, max_concurrency=max_concurrency)
    if name:
        opts["name"] = name
    if resources:
        opts["resources"] = dict(resources)
    return ray.remote(cls).options(**opts)


def _instance(actor) -> str:
    if not hasattr(actor, "_incarnation"):
        actor._incarnation = f"{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return actor._incarnation


def _threads(num_cpus: float) -> None:
    import torch

    n = max(1, int(num_cpus or 1))
    torch.set_num_threads(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))


class CandidateGenerator:
    """chemspace -> formulas -> candidate structures (reference prototypes), written to the store."""

    def generate(self, spec: dict, out_dir: str) -> list[dict]:
        return science.generate_candidates(spec, out_dir)


class ReferenceWorker:
    """Oracle work on the CPU: short reference MD and labels for selected frames."""

    def __init__(self, num_cpus: float = 1.0):
        _threads(num_cpus)

    def instance(self) -> str:
        """``pid:uuid`` of this actor incarnation (changes when Ray restarts the actor)."""
        return _instance(self)

    def reference_md(self, structure_path: str, oracle: dict, md: dict, seed: int, out_path: str) -> dict:
        return science.reference_md(structure_path, oracle, md["reference_temperature_K"], md["reference_steps"],
                                    md["timestep_fs"], max(1, md["reference_steps"] // 20), seed, out_path)

    def initial_labels(self, ref: dict, n: int, out_path: str, run_id: str) -> dict:
        """The first training set: ``n`` evenly spaced frames of the reference trajectory (already labelled),
        appended to the data store as the shard ``out_path`` (source ``oracle-md``)."""
        frames = science.trajectory_frames(ref["path"], labelled=True, oracle=ref.get("oracle"), source="oracle-md")
        take = frames if len(frames) <= n else [frames[int(i)] for i in
                                                 sorted({round(x) for x in _linspace(0, len(frames) - 1, n)})]
        science.append_labels(out_path, take, run_id)
        return {"path": out_path, "n_labels": len(take), "n_failed": 0, "errors": []}

    def label(self, trajectory_path: str, indices: list[int], oracle: dict, temperature_K: float,
              run_id: str, out_path: str) -> dict:
        """Oracle labels (source ``active-learning``) for the selected frames, appended to the store as the
        shard ``out_path`` (a deterministic name: a retried call rewrites the same shard)."""
        frames = science.frames_at(trajectory_path, indices)
        good, n_failed, errors = science.label_frames(frames, oracle, "active-learning", temperature_K, run_id)
        if good:
            science.append_labels(out_path, good, run_id)
        return {"path": out_path if good else None, "n_labels": len(good), "n_failed": n_failed,
                "errors": errors[:5]}


def _linspace(a: float, b: float, n: int) -> list[float]:
    if n <= 1:
        return [a]
    return [a + (b - a) * k / (n - 1) for k in range(n)]


class MDWorker:
    """Student-ensemble MD (exploration and production); one GPU when the cluster has one."""

    def __init__(self, num_cpus: float = 1.0):
        _threads(num_cpus)

    def instance(self) -> str:
        """``pid:uuid`` of this actor incarnation (changes when Ray restarts the actor)."""
        return _instance(self)

    def run(self, members: list[str], structure_path: str, temperatures_K: list[float], replicas: int, steps: int,
            md: dict, stability: dict, seed: int, out_dir: str, with_deviation: bool = False) -> list[dict]:
        """All temperatures x replicas of one structure as one batched MD run (resumes from its checkpoint)."""
        return science.student_md_batched(members, structure_path, temperatures_K, replicas, steps, md, stability,
                                          seed, out_dir, with_deviation)


class StabilityJudge:
    """Verdicts (RDF against the reference, fusion/explosion, ensemble deviation), frame selection,
    force errors on new labels and the transport analysis."""

    def judge(self, explore: dict, reference: dict, stability: dict, al: dict) -> dict:
        return science.judge(explore, reference, stability, al)

    def force_errors(self, members: list[str], label_path: str) -> dict:
        return science.force_errors(members, label_path)

    def transport(self, runs: list[dict], structure_path: str, equilibration_steps: int) -> dict:
        return science.transport(runs, structure_path, equilibration_steps)


class Trainer:
    """Trains or fine-tunes an ensemble on labelled frames and publishes it as files (a model version)."""

    def __init__(self, num_cpus: float = 1.0):
        _threads(num_cpus)

    def instance(self) -> str:
        """``pid:uuid`` of this actor incarnation (changes when Ray restarts the actor)."""
        return _instance(self)

    def train(self, label_paths: list[str], models: dict, training: dict, init: list[str] | None,
              out_dir: str, seed: int) -> dict:
        return science.train_ensemble(label_paths, models, training, init, out_dir, seed)


class ActorPool:
    """A bounded, thread-safe pool: a driver thread borrows an idle actor, calls it, gives it back."""

    def __init__(self, actors: list):
        self.actors = list(actors)
        self._idle: queue.Queue = queue.Queue()
        for a in self.actors:
            self._idle.put(a)
        self._lock = threading.Lock()

    @contextmanager
    def borrow(self) -> Iterator[Any]:
        actor = self._idle.get()
        try:
            yield actor
        finally:
            self._idle.put(actor)

    def call(self, method: str, *args, **kwargs) -> Any:
        """Run ``actor.method.remote(*args)`` on an idle actor and wait for the answer."""
        with self.borrow() as actor:
            return ray.get(getattr(actor, method).remote(*args, **kwargs))
