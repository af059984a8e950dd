"""How runs join Ray and where their results go: a private local Ray whatever a stale cluster file says,
persistent locations inside a Ray job, artifacts beside their MLflow database."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

START = ("from orchestrator.ops.ray_runtime import ray_init\n"
         "import ray\n"
         "assert ray_init(1)\n"
         "print('CPUS', ray.cluster_resources()['CPU'])\n"
         "ray.shutdown()\n")


def test_a_stale_cluster_file_changes_nothing():
    """An earlier `ray start --head`, long stopped, left Ray's `ray_current_cluster` file behind: a local run
    still starts its own Ray with the CPUs it asks for (it used to try to join and fail)."""
    tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))            # short: Ray's sockets live below it
    (tmp / "ray").mkdir()
    (tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9\n")
    env = {**os.environ, "RAY_TMPDIR": str(tmp), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", START], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "CPUS 1.0" in out.stdout


def test_inside_a_ray_job_results_go_home_not_into_the_temporary_working_dir(tmp_path, monkeypatch):
    from orchestrator.campaign.spec import CampaignSpec, store_root
    from orchestrator.campaign.tracking import default_artifact_root, resolve_tracking_uri
    from orchestrator.ops.ray_runtime import JOB_ENV_VAR

    home, workdir = tmp_path / "home", tmp_path / "session" / "working_dir_files" / "pkg"
    workdir.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(workdir)
    for var in ("MATSCREEN_STORE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    assert store_root(None, CampaignSpec()) == (workdir / ".matscreen" / "store").resolve()   # a plain run: cwd
    monkeypatch.setenv(JOB_ENV_VAR, "{}")                                                   # the driver of a Ray job
    assert store_root(None, CampaignSpec()) == (home / ".matscreen" / "store").resolve()
    assert resolve_tracking_uri(None) == f"sqlite:///{(home / '.matscreen' / 'mlflow.db').resolve()}"
    assert store_root("/data/store", CampaignSpec()) == Path("/data/store")                     # explicit wins
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:5000"
    assert default_artifact_root("http://127.0.0.1:5000") is None                          # the server's own root


def test_artifacts_live_beside_their_database_not_in_the_working_directory(tmp_path, monkeypatch):
    from orchestrator.campaign.tracking import Tracker

    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    tracker = Tracker(f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}", "matscreen-where")
    exp = tracker.client.get_experiment(tracker.experiment_id)
    assert exp.artifact_location == (tmp_path / "db" / "artifacts").as_uri()
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"    # the UI's model-training view
    assert not (elsewhere / ".matscreen").exists()
