"""Mirror scheduler executions into MLflow: experiment ``matscreen-schedules``, one run per execution.

Each run carries params ``schedule``, ``spec``, ``cron``, ``slot``, ``job_id`` and ``incremental``,
the tag ``matscreen.kind=schedule-execution`` and the tag ``outcome`` (SUBMITTED, then SUCCEEDED /
FAILED / STOPPED / LOST, or SKIPPED_STILL_RUNNING / REJECTED_INVALID_SPEC); the MLflow run status
follows the job (RUNNING -> FINISHED / FAILED / KILLED).  Everything logged passes through
:func:`orchestrator.secrets.redact`.

Default store (same as the campaign): ``MLFLOW_TRACKING_URI`` if set, else
``sqlite:///.matscreen/mlflow.db`` with artifacts under ``.matscreen/artifacts``, relative to the
working directory.
"""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from orchestrator.secrets import redact

EXPERIMENT = "matscreen-schedules"
_RUN_STATUS = {"SUCCEEDED": "FINISHED", "FAILED": "FAILED", "STOPPED": "KILLED", "LOST": "FAILED",
               "SKIPPED_STILL_RUNNING": "FINISHED", "REJECTED_INVALID_SPEC": "FAILED"}


def default_tracking_uri(base: str | os.PathLike | None = None) -> str:
    """``$MLFLOW_TRACKING_URI``, else the local sqlite store ``<base>/.matscreen/mlflow.db``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    root = Path(base or Path.cwd()).resolve() / ".matscreen"
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def default_artifact_root(tracking_uri: str) -> str | None:
    """Artifacts beside a local sqlite store (``.matscreen/artifacts``); None for a server URI."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        return (db.parent / "artifacts").resolve().as_uri()
    return None


class ExecutionRecorder:
    """Writes one MLflow run per scheduler execution (a small, short-lived writer)."""

    def __init__(self, tracking_uri: str | None = None):
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self._client = None
        self._experiment_id = None

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
            exp = self._client.get_experiment_by_name(EXPERIMENT)
            if exp is None:
                try:
                    self._experiment_id = self._client.create_experiment(
                        EXPERIMENT, artifact_location=default_artifact_root(self.tracking_uri))
                except Exception:  # noqa: BLE001 - another writer created it first
                    self._experiment_id = self._client.get_experiment_by_name(EXPERIMENT).experiment_id
            else:
                self._experiment_id = exp.experiment_id
        return self._client

    def start(self, schedule, execution) -> str:
        """Create the run for ``execution`` of ``schedule``; returns its MLflow run id."""
        client = self.client
        tags = redact({"matscreen.kind": "schedule-execution", "matscreen.schedule": schedule.name,
                       "outcome": execution.outcome, "mlflow.runName": f"{schedule.name}@{execution.slot}"})
        run = client.create_run(self._experiment_id, tags=tags,
                                start_time=int(datetime.fromisoformat(execution.submitted_at.replace("Z", "+00:00")).timestamp() * 1000))
        params = redact({"schedule": schedule.name, "spec": schedule.spec, "cron": schedule.cron,
                         "slot": execution.slot, "job_id": execution.job_id or "", "incremental": schedule.incremental,
                         "working_dir": schedule.working_dir})
        for key, value in params.items():
            client.log_param(run.info.run_id, key, value)
        if execution.message:
            client.set_tag(run.info.run_id, "message", redact(execution.message)[:4000])
        return run.info.run_id

    def finish(self, run_id: str, outcome: str, when: datetime) -> None:
        """Record the final ``outcome`` and close the run with the matching MLflow status."""
        self.client.set_tag(run_id, "outcome", outcome)
        self.client.set_terminated(run_id, status=_RUN_STATUS.get(outcome, "FINISHED"),
                                   end_time=int(when.timestamp() * 1000))
