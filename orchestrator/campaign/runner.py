"""The one step runner: the roles that answer typed requests, and the ledger that makes every step happen once.

* :class:`Roles` holds a pool of workers per role (``actors.roles``): Ray actors with the campaign's
  restart policy and placement, or plain objects in this process (``use_ray=False``).  ``call`` runs one
  request on an idle worker of its role; ``map`` spreads many over the role's pool at once.
* :class:`StepRunner` records each step's typed result in a :class:`~orchestrator.campaign.state.Ledger`
  under the step's key; a recorded step is read back (``result.from_dict``) and never redone.

The campaign driver and the transferability benchmark both run on these two.
"""
from __future__ import annotations

import math
import os
import queue
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from actors import requests as rq
from orchestrator.campaign.state import Ledger


class ActorPool:
    """A bounded, thread-safe pool: a driver thread borrows an idle worker, runs a request, gives it back."""

    def __init__(self, actors: list, use_ray: bool = True):
        self.actors = list(actors)
        self.use_ray = use_ray
        self._idle: queue.Queue = queue.Queue()
        for a in self.actors:
            self._idle.put(a)

    @contextmanager
    def borrow(self) -> Iterator[Any]:
        actor = self._idle.get()
        try:
            yield actor
        finally:
            self._idle.put(actor)

    def call(self, request: rq.Request) -> Any:
        """The typed result of ``request`` from an idle worker."""
        with self.borrow() as actor:
            if not self.use_ray:
                return actor.handle(request)
            import ray

            return ray.get(actor.handle.remote(request))

    def map(self, requests: list[rq.Request]) -> list:
        """The results of ``requests`` in order, spread over every worker (in parallel with Ray)."""
        if not self.use_ray:
            return [self.call(r) for r in requests]
        import ray

        return ray.get([self.actors[i % len(self.actors)].handle.remote(r) for i, r in enumerate(requests)])


class Roles:
    """One pool per role class of ``actors.roles``, sized and placed by the spec's ``resources``.

    ``use_ray``: Ray actors (``placement``: custom resources per kind, ``orchestrator.ops.placement``);
    otherwise one plain object per role in this process.  ``progress_dir``: where the workers' tasks report their
    progress (:mod:`common.progress`)."""

    def __init__(self, spec, use_ray: bool = True, placement: dict | None = None, gpus_per_md_worker: float = 0.0,
                 progress_dir: str | None = None):
        from actors import roles
        from common.progress import DIR_ENV

        r, place = spec.resources, placement or {}
        make = {  # role -> (constructor args, CPUs, GPUs, workers, placement kind)
            roles.CandidateGenerator: ((), 0.0, 0.0, 1, None),
            roles.ReferenceWorker: ((spec.oracle, r.cpus_per_oracle), r.cpus_per_oracle, 0.0, r.reference_workers,
                                    "reference"),
            roles.MDWorker: ((r.cpus_per_md_worker,), r.cpus_per_md_worker, gpus_per_md_worker, r.md_workers, "md"),
            roles.StabilityJudge: ((), 0.0, 0.0, 1, None),
            roles.Trainer: ((r.cpus_per_trainer,), r.cpus_per_trainer, 0.0, 1, None)}
        self.use_ray = use_ray
        if use_ray:
            policy = dict(max_restarts=r.max_restarts, max_task_retries=r.max_task_retries,
                          env={DIR_ENV: progress_dir} if progress_dir else None)
            self.pools = {cls: ActorPool([roles.remote(cls, num_cpus=cpus, num_gpus=gpus, resources=place.get(kind),
                                                       **policy).remote(*args) for _ in range(n)])
                          for cls, (args, cpus, gpus, n, kind) in make.items()}
        else:
            if progress_dir:
                os.environ[DIR_ENV] = str(progress_dir)
            self.pools = {cls: ActorPool([cls(*args)], use_ray=False) for cls, (args, *_rest) in make.items()}

    @staticmethod
    def cpus(spec) -> int:
        """CPUs a private local Ray needs for every role's workers at once."""
        r = spec.resources
        return max(1, math.ceil(r.reference_workers * r.cpus_per_oracle + r.md_workers * r.cpus_per_md_worker
                                + r.cpus_per_trainer))

    def pool(self, request: rq.Request) -> ActorPool:
        from actors.roles import role_of

        return self.pools[role_of(request)]

    def call(self, request: rq.Request) -> Any:
        """The typed result of one request (``type(request).result``)."""
        return self.pool(request).call(request)

    def map(self, requests: list[rq.Request]) -> list:
        """The typed results of requests of one role, run at once over its pool."""
        return self.pool(requests[0]).map(requests) if requests else []

    def actors(self) -> list:
        return [a for p in self.pools.values() for a in p.actors]

    def close(self) -> None:
        """Release the workers (a Ray actor's CPUs/GPUs go back to the cluster)."""
        if not self.use_ray:
            return
        import ray

        for a in self.actors():
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass


class StepRunner:
    """Steps recorded in a ledger by key: a recorded step's result is read back, never redone.

    ``on_record(key, result)`` is told of every newly recorded step (the driver adds simulated time)."""

    def __init__(self, ledger: Ledger, roles: Roles | None = None,
                 on_record: Callable[[str, Any], None] | None = None):
        self.ledger, self.roles, self.on_record = ledger, roles, on_record
        self._lock = threading.Lock()

    def done(self, key: str, result: type) -> Any | None:
        """The recorded result of step ``key`` as ``result``, or None."""
        value = self.ledger.step(key)
        return None if value is None else result.from_dict(value)

    def once(self, key: str, result: type, work: Callable[[], Any]) -> Any:
        """Step ``key``: its recorded result, else ``work()`` recorded (its ``to_dict``)."""
        found = self.done(key, result)
        if found is not None:
            return found
        value = work()
        self._record(key, value)
        return value

    def run(self, key: str, request: rq.Request) -> Any:
        """Step ``key`` answered by the role that runs ``request``."""
        return self.once(key, type(request).result, lambda: self.roles.call(request))

    def map(self, keyed: dict[Any, tuple[str, rq.Request]]) -> dict:
        """Many steps of one role, ``{id: (key, request)}``: the recorded ones read back, the rest run at once.
        A result whose ``error`` is set is returned but not recorded (it runs again next time)."""
        out, todo = {}, []
        for ident, (key, request) in keyed.items():
            found = self.done(key, type(request).result)
            if found is None:
                todo.append(ident)
            else:
                out[ident] = found
        for ident, value in zip(todo, self.roles.map([keyed[i][1] for i in todo])):
            out[ident] = value
            if not getattr(value, "error", None):
                self._record(keyed[ident][0], value)
        return {i: out[i] for i in keyed}

    def _record(self, key: str, value: Any) -> None:
        self.ledger.record_step(key, value.to_dict())
        if self.on_record:
            self.on_record(key, value)
