"""Job submission against a real local Ray head (`ray start --head`), as users do with `ray job submit`.

The head gets its own --temp-dir and free ports, so it never captures another process's
`ray.init()`; it is stopped by signalling the `ray start --block` process this test started
(never `ray stop`, which would stop every Ray instance on the machine).
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.ops.scheduler import ScheduleStore, parse_time, run_due
from orchestrator.ops.scheduler_backends import RayJobBackend, package_working_dir, runtime_env
from orchestrator.ops.scheduler_tracking import ExecutionRecorder

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PLANTED = "mp-PLANTED-in-head-env-0123456789"


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@dataclass
class Head:
    address: str        # the dashboard (job server), http://127.0.0.1:<port>
    token: str          # the cluster's auth token
    home: Path          # the head's (and its jobs') home directory: ~/.ray/auth_token, ~/.matscreen


@pytest.fixture(scope="module")
def ray_head():
    """A local Ray head with dashboard (job server) on 127.0.0.1 and Ray's DEFAULT authentication: like a user's
    machine that has a token in ~/.ray/auth_token (any earlier `ray.init` writes one), `ray start --head`
    with RAY_AUTH_MODE unset enables token authentication.  Its home directory is a temporary one."""
    gcs, dash, agent_http, agent_grpc, client, metrics, node_mgr, obj_mgr, rt_agent = free_ports(9)
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's unix sockets live here
    home = Path(tempfile.mkdtemp(prefix="rhome"))
    token = secrets.token_hex(32)
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(token)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0",
               MP_API_KEY=PLANTED, HOME=str(home))
    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_URI",
                "MATSCREEN_STORE"):
        env.pop(var, None)                                 # Ray's defaults, as `ray start --head` meets them
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", "2", "--include-dashboard", "true",
           "--dashboard-host", "127.0.0.1", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
           "--dashboard-port", str(dash), "--dashboard-agent-listen-port", str(agent_http),
           "--dashboard-agent-grpc-port", str(agent_grpc), "--ray-client-server-port", str(client),
           "--metrics-export-port", str(metrics), "--node-manager-port", str(node_mgr),
           "--object-manager-port", str(obj_mgr), "--runtime-env-agent-port", str(rt_agent),
           "--temp-dir", temp_dir, "--disable-usage-stats"]
    log = open(Path(temp_dir) / "ray_start.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline, last_error = time.monotonic() + 240, None
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited: {(Path(temp_dir) / 'ray_start.log').read_text()[-2000:]}")
            try:
                from ray.job_submission import JobSubmissionClient

                JobSubmissionClient(address, headers={"authorization": f"Bearer {token}"}).list_jobs()
                break
            except Exception as exc:  # noqa: BLE001 - not up yet
                last_error = exc
                if time.monotonic() > deadline:
                    log_text = (Path(temp_dir) / "ray_start.log").read_text()[-1500:]
                    pytest.fail(f"Ray head did not come up in 240 s: {last_error!r}\n{log_text}")
                time.sleep(1)
        yield Head(address, token, home)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # only this head's process group
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def user_env(home: Path, **extra) -> dict:
    """A user's shell on the head machine: the venv on PATH, Ray's variables unset unless given."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", HOME=str(home),
               RAY_USAGE_STATS_ENABLED="0")
    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_URI",
                "MATSCREEN_STORE", "MP_API_KEY"):
        env.pop(var, None)
    return {**env, **extra}


def wait_job(backend: RayJobBackend, job_id: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while (status := backend.status(job_id)) in ("PENDING", "RUNNING") and time.monotonic() < deadline:
        time.sleep(1)
    return status


def test_upload_excludes_venv_data_outputs(tmp_path):
    work = tmp_path / "proj"
    (work / "orchestrator").mkdir(parents=True)
    (work / "orchestrator" / "x.py").write_text("print(1)\n")
    (work / "orchestrator" / "data").mkdir()
    (work / "orchestrator" / "data" / "table.csv").write_text("package data travels\n")
    for heavy in (".venv/lib/big.bin", "data/frames.h5", "outputs/run/traj.h5", ".matscreen/mlflow.db"):
        (work / heavy).parent.mkdir(parents=True, exist_ok=True)
        (work / heavy).write_bytes(os.urandom(2_000_000))
    shutil.copy(ROOT / ".rayignore", work / ".rayignore")
    names = zipfile.ZipFile(package_working_dir(work, tmp_path / "pkg.zip")).namelist()
    assert "orchestrator/x.py" in names and "orchestrator/data/table.csv" in names
    assert not [n for n in names if n.split("/")[0] in (".venv", "data", "outputs", ".matscreen")]
    # the real repository uploads as a small package too
    pkg = package_working_dir(ROOT, tmp_path / "repo.zip")
    assert pkg.stat().st_size < 20_000_000
    assert not [n for n in zipfile.ZipFile(pkg).namelist() if n.startswith((".venv/", ".git/", ".matscreen/"))]


def test_runtime_env_forwards_tracking_not_secrets(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///rel/mlflow.db")
    monkeypatch.setenv("MATSCREEN_STORE", "store")
    monkeypatch.setenv("MP_API_KEY", "planted-secret-123456")
    monkeypatch.chdir(tmp_path)
    env = runtime_env(ROOT)
    assert env["env_vars"] == {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/rel/mlflow.db",
                               "MATSCREEN_STORE": str(tmp_path / "store")}
    assert "planted-secret-123456" not in repr(env)
    assert ".venv/" in env["excludes"] and "/outputs/" in env["excludes"]


def test_malformed_spec_fails_before_submission(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmd:\n  temperature_K: [800]\n")
    # no cluster runs at this address: the error must come from the spec, before any connection
    rc = main(["schedule", "submit", str(bad), "--address", "http://127.0.0.1:9", "--working-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "md.temperature_K" in err


def test_readme_job_submission_on_a_default_head_persists_its_results(ray_head):
    """The README's installation check, run as written against a default `ray start --head` (token
    authentication): the job SUCCEEDS, and its results are where its log says, not in Ray's temporary copy
    of the working directory."""
    env = user_env(ray_head.home, RAY_AUTH_MODE="token", RAY_ADDRESS=ray_head.address)
    out = subprocess.run([str(BIN / "ray"), "job", "submit", "--working-dir", ".", "--", "matscreen", "campaign", "run",
                          "campaigns/smoke.yaml"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "succeeded" in text.lower(), text[-3000:]
    store = ray_head.home / ".matscreen" / "store"                       # the head user's ~/.matscreen
    assert f"data store: {store / 'smoke'}" in text and f"sqlite:///{ray_head.home / '.matscreen' / 'mlflow.db'}" in text
    assert (store / "smoke" / "ledger.sqlite").exists() and (store / "smoke" / "results.csv").exists()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{ray_head.home / '.matscreen' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("matscreen-smoke")
    kinds = sorted(r.data.tags.get("matscreen.kind") for r in client.search_runs([exp.experiment_id]))
    assert "campaign" in kinds and "candidate" in kinds
    assert exp.artifact_location == (ray_head.home / ".matscreen" / "artifacts").as_uri()
    # the key planted in the head's environment never reaches logs or the results
    assert PLANTED not in text
    assert [p for p in (ray_head.home / ".matscreen").rglob("*") if p.is_file() and PLANTED.encode() in p.read_bytes()] == []


def test_a_missing_token_is_one_line_naming_the_fix(ray_head, tmp_path):
    env = user_env(tmp_path)                                               # a machine without the cluster's token
    out = subprocess.run([str(BIN / "matscreen"), "schedule", "submit", "campaigns/smoke.yaml", "--address",
                          ray_head.address, "--working-dir", str(ROOT)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("matscreen: error: the Ray job server") and "~/.ray/auth_token" in last, out.stderr


def test_scheduler_on_a_token_protected_head(ray_head, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", ray_head.token)                 # where Ray keeps a token, as a variable
    ray_head = ray_head.address
    backend = RayJobBackend(ray_head)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])

    # 2. the scheduler submits a due campaign to the head and refuses to overlap it
    release = tmp_path / "release"
    spec = tmp_path / "s.yaml"
    spec.write_text("name: sched\n")
    store = ScheduleStore(tmp_path / "schedules.json")
    store.add("hourly", str(spec), "0 * * * *", working_dir=ROOT, address=ray_head,
              now=parse_time("2026-01-01T00:30Z"),
              command=["python", "-c", f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.2)"])
    recorder = ExecutionRecorder()
    first = run_due(store, lambda s: RayJobBackend(s.address), now=parse_time("2026-01-01T01:00Z"), recorder=recorder)
    job1 = first.submitted["hourly"]
    assert backend.status(job1) in ("PENDING", "RUNNING")
    second = run_due(store, lambda s: RayJobBackend(s.address), now=parse_time("2026-01-01T02:00Z"), recorder=recorder)
    assert second.skipped == {"hourly": job1} and not second.submitted
    release.touch()
    assert wait_job(backend, job1) == "SUCCEEDED"
    third = run_due(store, lambda s: RayJobBackend(s.address), now=parse_time("2026-01-01T02:05Z"), recorder=recorder)
    assert third.finished == {job1: "SUCCEEDED"}
    exp = client.get_experiment_by_name("matscreen-schedules")
    outcomes = sorted(r.data.tags["outcome"] for r in client.search_runs([exp.experiment_id]))
    assert outcomes == ["SKIPPED_STILL_RUNNING", "SUCCEEDED"]


def test_dashboard_address_resolution(monkeypatch):
    from orchestrator.ops.scheduler_backends import dashboard_address

    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")  # a GCS address, meant for ray.init
    assert dashboard_address() == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    assert dashboard_address() == "http://head:8265"
    assert dashboard_address("10.0.0.5:8265") == "http://10.0.0.5:8265"
