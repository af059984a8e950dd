"""Scheduled campaigns: cron schedules persisted in a JSON file, submitted as Ray jobs when due.

A schedule is ``name -> (campaign spec, cron expression)``.  :func:`run_due` is one tick of the
scheduler (``matscreen schedule run-due``; ``matscreen schedule daemon`` calls it periodically):

1. refresh the outcome of every execution still in flight (``PENDING``/``RUNNING`` -> ``SUCCEEDED``
   / ``FAILED`` / ``STOPPED``) from the job backend, and close its MLflow run;
2. for every schedule whose most recent cron slot (UTC) is later than the last one it handled:
   skip it when its previous job is still running (a campaign never overlaps itself), else
   validate the spec and submit ``matscreen campaign run SPEC --incremental`` as a job with a
   deterministic submission id (so a crash between submit and save cannot start it twice);
   ``--incremental`` screens new candidates and re-screens finished ones whose shared-element
   training data in the store changed since they were screened (a new generation ``<c>@g<n>``);
3. record the execution (time, slot, job id, outcome) in the schedule file and as one MLflow run
   in the experiment ``matscreen-schedules``.

Missed slots are coalesced: a scheduler that was down for three slots runs the campaign once.
The whole tick holds an exclusive lock on the schedule file, so two daemons never double-submit.
The clock is an argument (``now``) so tests and back-fills can drive it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator, Protocol

from common.atomic import atomic_write_text
from common.errors import InputError

SCHEDULES_ENV = "MATSCREEN_SCHEDULES"
DEFAULT_SCHEDULES_FILE = Path(".matscreen") / "schedules.json"
EXPERIMENT = "matscreen-schedules"
# The campaign-run option for re-runs: regenerate the candidate list, screen only candidates not seen before.
INCREMENTAL_FLAG = "--incremental"
ACTIVE = ("SUBMITTED", "PENDING", "RUNNING")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED", "LOST")
SKIPPED = "SKIPPED_STILL_RUNNING"
REJECTED = "REJECTED_INVALID_SPEC"
HISTORY_KEPT = 100
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_time(text: str) -> datetime:
    """An ISO-8601 time (``2026-01-02T03:04``, ``...Z`` or with offset); naive times are UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"time {text!r} is not ISO-8601; write it like 2026-01-02T02:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def campaign_entrypoint(spec: str, incremental: bool = False) -> str:
    """``matscreen campaign run SPEC [--incremental]`` (the campaign finds the data store through the
    job's ``MATSCREEN_STORE``, forwarded by the backends, else the spec's ``store.path``)."""
    words = ["matscreen", "campaign", "run", str(spec)] + ([INCREMENTAL_FLAG] if incremental else [])
    return shlex.join(words)


def check_cron(expr: str) -> str:
    """Return ``expr`` when it is a valid 5-field cron expression (UTC), else raise InputError."""
    from croniter import croniter

    if len(expr.split()) != 5 or not croniter.is_valid(expr):
        raise InputError(f'cron expression {expr!r} is invalid; use 5 fields "min hour day month weekday", e.g. "0 2 * * *"')
    return expr


def latest_slot(expr: str, now: datetime) -> datetime:
    """The most recent cron time <= ``now`` (UTC)."""
    from croniter import croniter

    return croniter(expr, now + timedelta(seconds=1)).get_prev(datetime).astimezone(timezone.utc)


def next_slot(expr: str, after: datetime) -> datetime:
    """The first cron time strictly after ``after`` (UTC)."""
    from croniter import croniter

    return croniter(expr, after).get_next(datetime).astimezone(timezone.utc)


@dataclass
class Execution:
    """One firing of a schedule: the cron slot, when it was handled, the job and its outcome."""

    slot: str
    submitted_at: str
    job_id: str | None
    outcome: str  # SUBMITTED, PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED, LOST, SKIPPED_..., REJECTED_...
    mlflow_run_id: str | None = None
    message: str = ""
    finished_at: str | None = None


@dataclass
class Schedule:
    """A campaign spec run on a cron schedule (UTC)."""

    name: str
    spec: str  # path relative to working_dir (or absolute)
    cron: str
    working_dir: str  # uploaded to the cluster as the job's working_dir
    created_at: str
    address: str | None = None  # Ray dashboard address; None -> $RAY_ADDRESS or http://127.0.0.1:8265
    incremental: bool = True
    command: list[str] | None = None  # API only: a job command other than `matscreen campaign run SPEC`
    last_slot: str | None = None
    last_job_id: str | None = None
    history: list[Execution] = field(default_factory=list)

    def due_slot(self, now: datetime) -> datetime | None:
        """The cron slot to fire at ``now``, or None when nothing new is due."""
        slot = latest_slot(self.cron, now)
        handled = parse_time(self.last_slot or self.created_at)
        return slot if slot > handled else None

    def next_run(self, now: datetime) -> datetime:
        return next_slot(self.cron, max(now, parse_time(self.last_slot or self.created_at)))

    def entrypoint(self) -> str:
        """The job's shell command: ``matscreen campaign run SPEC [--incremental]``."""
        if self.command:
            return shlex.join(self.command)
        return campaign_entrypoint(self.spec, self.incremental)

    def spec_path(self) -> Path:
        path = Path(self.spec)
        return path if path.is_absolute() else Path(self.working_dir) / path

    @classmethod
    def from_dict(cls, data: dict) -> "Schedule":
        data = dict(data)
        data["history"] = [Execution(**h) for h in data.get("history", [])]
        return cls(**data)


class JobBackend(Protocol):
    """Where due campaigns run: Ray jobs (:class:`~orchestrator.ops.scheduler_backends.RayJobBackend`)
    or local processes (:class:`~orchestrator.ops.scheduler_backends.LocalProcessBackend`)."""

    def submit(self, entrypoint: str, submission_id: str, working_dir: str, metadata: dict[str, str]) -> str: ...

    def status(self, job_id: str) -> str:
        """One of PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED, or LOST (the backend forgot it)."""
        ...


def schedules_path(path: str | os.PathLike | None = None) -> Path:
    """The schedule file: the argument, else ``$MATSCREEN_SCHEDULES``, else ``.matscreen/schedules.json``."""
    return Path(path or os.environ.get(SCHEDULES_ENV) or DEFAULT_SCHEDULES_FILE)


class ScheduleStore:
    """Schedules persisted as one JSON file, rewritten atomically under an exclusive file lock."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = schedules_path(path)

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Schedule]]:
        """Read-modify-write: yields the schedules by name; saves them on a clean exit."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                schedules = self._read()
                yield schedules
                self._write(schedules)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def load(self) -> dict[str, Schedule]:
        """The schedules by name (read-only snapshot)."""
        return self._read()

    def _read(self) -> dict[str, Schedule]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text() or "{}")
            return {name: Schedule.from_dict(s) for name, s in data.get("schedules", {}).items()}
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise InputError(f"schedule file {self.path} is corrupt ({exc}); fix or remove it") from None

    def _write(self, schedules: dict[str, Schedule]) -> None:
        data = {"version": 1, "schedules": {n: asdict(s) for n, s in sorted(schedules.items())}}
        atomic_write_text(self.path, json.dumps(data, indent=2) + "\n")

    # -- user operations ------------------------------------------------------------------------
    def add(self, name: str, spec: str, cron: str, *, working_dir: str | os.PathLike | None = None,
            address: str | None = None, incremental: bool = True, now: datetime | None = None,
            replace: bool = False, validate: Callable[[Path], object] | None = None,
            command: list[str] | None = None) -> Schedule:
        """Add a schedule; the spec is validated now (a malformed spec never gets scheduled)."""
        if not _NAME.fullmatch(name):
            raise InputError(f"schedule name {name!r} is invalid; use letters, digits, '.', '_' or '-' (max 64)")
        check_cron(cron)
        working_dir = str(Path(working_dir or Path.cwd()).resolve())
        schedule = Schedule(name=name, spec=str(spec), cron=cron, working_dir=working_dir,
                            created_at=_iso(now or utcnow()), address=address, incremental=incremental,
                            command=command)
        if not schedule.spec_path().is_file():
            raise InputError(f"campaign spec {schedule.spec_path()} not found; give a path relative to --working-dir")
        (validate or validate_spec)(schedule.spec_path())
        with self.locked() as schedules:
            if name in schedules and not replace:
                raise InputError(f"schedule {name!r} already exists; remove it first or pass --replace")
            schedules[name] = schedule
        return schedule

    def remove(self, name: str) -> Schedule:
        with self.locked() as schedules:
            if name not in schedules:
                raise InputError(f"no schedule named {name!r}; see `matscreen schedule list`")
            return schedules.pop(name)


def validate_spec(path: Path) -> object:
    """Load and validate a campaign spec with the campaign's own validator; InputError names the key."""
    from orchestrator.campaign.spec import load_spec

    return load_spec(path)


def submission_id(name: str, slot: datetime) -> str:
    """Deterministic Ray submission id for one slot: resubmitting the same slot is refused by Ray."""
    return f"matscreen-{name}-{slot.astimezone(timezone.utc):%Y%m%dT%H%MZ}"


@dataclass
class TickReport:
    """What one :func:`run_due` tick did, per schedule name."""

    submitted: dict[str, str] = field(default_factory=dict)  # name -> job id
    skipped: dict[str, str] = field(default_factory=dict)  # name -> running job id
    rejected: dict[str, str] = field(default_factory=dict)  # name -> error message
    finished: dict[str, str] = field(default_factory=dict)  # job id -> outcome

    def lines(self) -> list[str]:
        out = [f"submitted {n}: job {j}" for n, j in self.submitted.items()]
        out += [f"skipped {n}: job {j} is still running" for n, j in self.skipped.items()]
        out += [f"rejected {n}: {m}" for n, m in self.rejected.items()]
        out += [f"finished job {j}: {o}" for j, o in self.finished.items()]
        return out or ["nothing due"]


def run_due(store: ScheduleStore, backend: JobBackend | Callable[[Schedule], JobBackend], *,
            now: datetime | None = None, recorder=None, validate: Callable[[Path], object] | None = None,
            only: str | None = None) -> TickReport:
    """One scheduler tick at time ``now`` (UTC; default: the wall clock). See the module docstring.

    ``backend`` is a JobBackend or a factory ``schedule -> JobBackend`` (one Ray address per
    schedule); ``recorder`` (an :class:`~orchestrator.ops.scheduler_tracking.ExecutionRecorder` or None)
    mirrors every execution into MLflow.
    """
    now = now or utcnow()
    validate = validate or validate_spec
    report = TickReport()
    backend_for = backend if callable(backend) and not hasattr(backend, "submit") else (lambda _s: backend)
    with store.locked() as schedules:
        for sched in schedules.values():
            if only and sched.name != only:
                continue
            jobs = backend_for(sched)
            _refresh(sched, jobs, now, recorder, report)
            slot = sched.due_slot(now)
            if slot is None:
                continue
            running = sched.last_job_id and any(
                e.job_id == sched.last_job_id and e.outcome in ACTIVE for e in sched.history)
            if running:
                execution = Execution(_iso(slot), _iso(now), None, SKIPPED,
                                      message=f"job {sched.last_job_id} still running")
                report.skipped[sched.name] = sched.last_job_id
            else:
                try:
                    validate(sched.spec_path())
                except (InputError, OSError) as exc:
                    execution = Execution(_iso(slot), _iso(now), None, REJECTED, message=str(exc))
                    report.rejected[sched.name] = str(exc)
                else:
                    sub_id = submission_id(sched.name, slot)
                    metadata = {"matscreen.schedule": sched.name, "matscreen.slot": _iso(slot)}
                    job_id = jobs.submit(sched.entrypoint(), sub_id, sched.working_dir, metadata)
                    execution = Execution(_iso(slot), _iso(now), job_id, "SUBMITTED")
                    sched.last_job_id = job_id
                    report.submitted[sched.name] = job_id
            if recorder is not None:
                execution.mlflow_run_id = recorder.start(sched, execution)
                if execution.outcome not in ACTIVE:
                    recorder.finish(execution.mlflow_run_id, execution.outcome, now)
            sched.last_slot = _iso(slot)
            sched.history = (sched.history + [execution])[-HISTORY_KEPT:]
    return report


def _refresh(sched: Schedule, jobs: JobBackend, now: datetime, recorder, report: TickReport) -> None:
    """Update executions still in flight from the backend; close their MLflow runs when done."""
    for execution in sched.history:
        if execution.outcome not in ACTIVE or not execution.job_id:
            continue
        status = jobs.status(execution.job_id)
        if status == execution.outcome:
            continue
        execution.outcome = status
        if status in TERMINAL:
            execution.finished_at = _iso(now)
            report.finished[execution.job_id] = status
            if recorder is not None and execution.mlflow_run_id:
                recorder.finish(execution.mlflow_run_id, status, now)
