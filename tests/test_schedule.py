"""Scheduler: cron due times with an injected clock, persistence, no overlapping runs, MLflow records.

Jobs run as real local processes (LocalProcessBackend); the Ray job path is in test_jobs.py.
"""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone

import pytest

from common import InputError
from orchestrator.cli import main
from orchestrator.ops.scheduler import ScheduleStore, parse_time, run_due, submission_id
from orchestrator.ops.scheduler_backends import LocalProcessBackend
from orchestrator.ops.scheduler_tracking import ExecutionRecorder

T0 = datetime(2026, 1, 1, 0, 30, tzinfo=timezone.utc)


def at(text: str) -> datetime:
    return parse_time(text)


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "campaign.yaml"
    path.write_text("name: tiny\n")
    return path


@pytest.fixture
def store(tmp_path):
    return ScheduleStore(tmp_path / "state" / "schedules.json")


def wait_finished(backend, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    while backend.status(job_id) == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    return backend.status(job_id)


def test_due_times_follow_cron_and_missed_slots_coalesce(store, spec):
    sched = store.add("nightly", spec.name, "0 2 * * *", working_dir=spec.parent, now=T0)
    assert sched.due_slot(at("2026-01-01T01:59:59Z")) is None
    assert sched.due_slot(at("2026-01-01T02:00:00Z")) == at("2026-01-01T02:00Z")
    assert sched.next_run(T0) == at("2026-01-01T02:00Z")
    # three days missed: fire once, for the latest slot
    assert sched.due_slot(at("2026-01-04T05:00Z")) == at("2026-01-04T02:00Z")
    sched.last_slot = "2026-01-04T02:00:00Z"
    assert sched.due_slot(at("2026-01-04T23:59Z")) is None
    assert sched.entrypoint().startswith(f"matscreen campaign run {spec.name} --incremental")
    assert sched.entrypoint() == f"matscreen campaign run {spec.name} --incremental"  # store: $MATSCREEN_STORE


def test_cli_add_list_remove_persist(tmp_path, spec, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    file = str(tmp_path / "s.json")
    assert main(["schedule", "add", "nightly", spec.name, "--cron", "0 2 * * *", "--file", file]) == 0
    assert main(["schedule", "add", "weekly", spec.name, "--cron", "30 4 * * 1", "--full", "--file", file]) == 0
    capsys.readouterr()
    assert main(["schedule", "list", "--json", "--file", file]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["nightly"]["cron"] == "0 2 * * *" and rows["nightly"]["incremental"] is True
    assert rows["weekly"]["incremental"] is False and rows["weekly"]["next_run"].endswith("04:30:00Z")
    # a fresh store (a restarted scheduler) sees the same schedules
    assert set(ScheduleStore(file).load()) == {"nightly", "weekly"}
    assert main(["schedule", "remove", "weekly", "--file", file]) == 0
    assert set(ScheduleStore(file).load()) == {"nightly"}
    assert main(["schedule", "list", "--file", file]) == 0
    assert "nightly" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["add", "x", "campaign.yaml", "--cron", "0 2 * *"], "cron expression"),
    (["add", "bad name", "campaign.yaml", "--cron", "0 2 * * *"], "schedule name"),
    (["add", "x", "missing.yaml", "--cron", "0 2 * * *"], "not found"),
    (["add", "x", "broken.yaml", "--cron", "0 2 * * *"], "broken.yaml"),
    (["remove", "nope"], "no schedule named"),
])
def test_bad_input_is_one_line_error(tmp_path, spec, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    assert main(["schedule", *argv, "--file", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("matscreen: error:") and message in err and "\n" not in err
    assert not (tmp_path / "s.json").exists() or "x" not in ScheduleStore(tmp_path / "s.json").load()


def test_duplicate_name_needs_replace(store, spec):
    store.add("a", spec.name, "0 2 * * *", working_dir=spec.parent)
    with pytest.raises(InputError, match="already exists"):
        store.add("a", spec.name, "0 3 * * *", working_dir=spec.parent)
    store.add("a", spec.name, "0 3 * * *", working_dir=spec.parent, replace=True)
    assert store.load()["a"].cron == "0 3 * * *"


def test_run_due_never_overlaps_and_records_in_mlflow(tmp_path, store, spec):
    marker, release = tmp_path / "runs.txt", tmp_path / "release"
    # the "campaign": appends a line, then runs until the test releases it
    command = [sys.executable, "-c",
               f"import os, time; open({str(marker)!r}, 'a').write('run\\n')\n"
               f"for _ in range(600):\n    if os.path.exists({str(release)!r}): break\n    time.sleep(0.05)"]
    store.add("hourly", spec.name, "0 * * * *", working_dir=spec.parent, now=T0, command=command)
    backend = LocalProcessBackend(tmp_path / "jobs")
    recorder = ExecutionRecorder(f"sqlite:///{tmp_path / 'mlflow.db'}")

    assert run_due(store, backend, now=at("2026-01-01T00:45Z"), recorder=recorder).lines() == ["nothing due"]
    first = run_due(store, backend, now=at("2026-01-01T01:00Z"), recorder=recorder)
    job1 = first.submitted["hourly"]
    assert job1 == submission_id("hourly", at("2026-01-01T01:00Z"))
    # next slot arrives while job 1 still runs: skipped, not started twice
    second = run_due(store, backend, now=at("2026-01-01T02:00Z"), recorder=recorder)
    assert second.skipped == {"hourly": job1} and not second.submitted
    release.touch()
    assert wait_finished(backend, job1) == "SUCCEEDED"
    third = run_due(store, backend, now=at("2026-01-01T03:00Z"), recorder=recorder)
    assert third.finished == {job1: "SUCCEEDED"} and "hourly" in third.submitted
    job3 = third.submitted["hourly"]
    assert wait_finished(backend, job3) == "SUCCEEDED"
    run_due(store, backend, now=at("2026-01-01T03:10Z"), recorder=recorder)
    assert marker.read_text().count("run") == 2

    # the schedule file (reloaded, as after a restart) holds the whole story
    history = ScheduleStore(store.path).load()["hourly"].history
    assert [(h.slot, h.outcome) for h in history] == [
        ("2026-01-01T01:00:00Z", "SUCCEEDED"),
        ("2026-01-01T02:00:00Z", "SKIPPED_STILL_RUNNING"),
        ("2026-01-01T03:00:00Z", "SUCCEEDED"),
    ]
    # ... and MLflow has one run per execution, closed with the job's outcome
    from mlflow.tracking import MlflowClient

    client = MlflowClient(recorder.tracking_uri)
    exp = client.get_experiment_by_name("matscreen-schedules")
    runs = client.search_runs([exp.experiment_id], order_by=["params.slot ASC"])
    assert [(r.data.params["slot"], r.data.tags["outcome"], r.info.status) for r in runs] == [
        ("2026-01-01T01:00:00Z", "SUCCEEDED", "FINISHED"),
        ("2026-01-01T02:00:00Z", "SKIPPED_STILL_RUNNING", "FINISHED"),
        ("2026-01-01T03:00:00Z", "SUCCEEDED", "FINISHED"),
    ]
    assert runs[0].data.params["job_id"] == job1
    assert {r.info.run_id for r in runs} == {h.mlflow_run_id for h in history}


def test_spec_broken_after_scheduling_is_rejected_not_submitted(tmp_path, store, spec):
    store.add("nightly", spec.name, "0 2 * * *", working_dir=spec.parent, now=T0)
    spec.write_text("name: [unclosed\n")
    backend = LocalProcessBackend(tmp_path / "jobs")
    report = run_due(store, backend, now=at("2026-01-01T02:00Z"))
    assert "nightly" in report.rejected and "campaign.yaml" in report.rejected["nightly"]
    assert not (tmp_path / "jobs").exists()
    assert store.load()["nightly"].history[-1].outcome == "REJECTED_INVALID_SPEC"


def test_failed_job_and_idempotent_submission(tmp_path, store, spec):
    store.add("f", spec.name, "*/5 * * * *", working_dir=spec.parent, now=T0,
              command=[sys.executable, "-c", "raise SystemExit(3)"])
    backend = LocalProcessBackend(tmp_path / "jobs")
    job = run_due(store, backend, now=at("2026-01-01T00:35Z")).submitted["f"]
    assert wait_finished(backend, job) == "FAILED"
    # a crash between submit and save re-submits the same slot id: not started a second time
    assert backend.submit("true", job, str(spec.parent), {}) == job
    assert run_due(store, backend, now=at("2026-01-01T00:36Z")).finished == {job: "FAILED"}


def test_daemon_ticks_and_stops(tmp_path, spec, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    file = str(tmp_path / "s.json")
    store = ScheduleStore(file)
    store.add("every-minute", spec.name, "* * * * *", working_dir=spec.parent,
              now=datetime(2020, 1, 1, tzinfo=timezone.utc), command=[sys.executable, "-c", "pass"])
    import time

    if datetime.now(timezone.utc).second >= 55:     # two ticks 0.1 s apart must fall in one minute's slot
        time.sleep(61 - datetime.now(timezone.utc).second)
    assert main(["schedule", "daemon", "--file", file, "--backend", "local", "--no-mlflow",
                 "--interval", "0.1", "--max-ticks", "2"]) == 0
    out = capsys.readouterr().out
    assert "submitted every-minute" in out
    history = ScheduleStore(file).load()["every-minute"].history
    assert len(history) == 1 and history[0].job_id
