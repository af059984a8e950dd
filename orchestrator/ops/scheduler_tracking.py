"""Mirror scheduler executions into MLflow: experiment ``matscreen-schedules``, one run per execution.

Each run carries params ``schedule``, ``spec``, ``cron``, ``slot``, ``job_id`` and ``incremental``,
the tag ``matscreen.kind=schedule-execution`` and the tag ``outcome`` (SUBMITTED, then SUCCEEDED /
FAILED / STOPPED / LOST, or SKIPPED_STILL_RUNNING / REJECTED_INVALID_SPEC); the MLflow run status
follows the job (RUNNING -> FINISHED / FAILED / KILLED).  Everything logged passes through
:func:`orchestrator.ops.secrets.redact`.

Default store (same as the campaign): ``MLFLOW_TRACKING_URI`` if set, else
``sqlite:///.matscreen/mlflow.db`` with artifacts under ``.matscreen/artifacts``, relative to the
working directory.
"""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

EXPERIMENT = "matscreen-schedules"
_RUN_STATUS = {"SUCCEEDED": "FINISHED", "FAILED": "FAILED", "STOPPED": "KILLED", "LOST": "FAILED",
               "SKIPPED_STILL_RUNNING": "FINISHED", "REJECTED_INVALID_SPEC": "FAILED"}


def default_tracking_uri(base: str | os.PathLike | None = None) -> str:
    """The campaign's default (``$MLFLOW_TRACKING_URI``, else ``<base>/.matscreen/mlflow.db``), folder created."""
    from orchestrator.campaign.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(None, base)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return uri


class ExecutionRecorder:
    """Scheduler executions through the campaign's Tracker (created on first use)."""

    def __init__(self, tracking_uri: str | None = None):
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self._tracker = None

    @property
    def tracker(self):
        if self._tracker is None:
            from orchestrator.campaign.tracking import Tracker

            try:
                self._tracker = Tracker(self.tracking_uri, EXPERIMENT)
            except Exception:  # noqa: BLE001 - another writer created the experiment first
                self._tracker = Tracker(self.tracking_uri, EXPERIMENT)
        return self._tracker

    @property
    def client(self):
        return self.tracker.client

    def start(self, schedule, execution) -> str:
        """Create the run for ``execution`` of ``schedule``; returns its MLflow run id."""
        return self.tracker.start_schedule_execution(schedule, execution)

    def finish(self, run_id: str, outcome: str, when: datetime) -> None:
        """Record the final ``outcome`` and close the run with the matching MLflow status."""
        self.tracker.finish_schedule_execution(run_id, outcome, _RUN_STATUS.get(outcome, "FINISHED"), when)
