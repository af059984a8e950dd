"""MLflow served for real: `mlflow server` (sqlite backend, local artifact root) on 127.0.0.1, a small campaign
logging to it over HTTP through the Tracker, and everything read back over the server's REST API, as the UI
reads it: the experiment (in the model-training view), nested runs with short names, sigma(T) history with
step = temperature, every metric once under one documented name (tracking.METRICS), plots and the results
tables."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from lj_world import CONCLUSIVE_MD, lj_spec, write_structures  # noqa: E402
from orchestrator.campaign.tracking import known_metric  # noqa: E402

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(d / "server.log", "w")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{d / 'srv.db'}",
                             "--artifacts-destination", (d / "artifacts").as_uri(), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], cwd=d, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up: {(d / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def rest(url: str, endpoint: str, body: dict | None = None, **query) -> dict:
    full = f"{url}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(full, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_a_campaign_logged_over_http_reads_back_as_the_ui_shows_it(server, tmp_path):
    from orchestrator.campaign.driver import Campaign
    from orchestrator.campaign.spec import validate
    from orchestrator.ops.ray_runtime import ray_init

    # short runs of a hot LJ fluid: the checks stay undecided (inconclusive), production and transport still run;
    # min_msd_A2 is lowered so that 4 ps runs give an Arrhenius fit to log (this test is about MLflow)
    spec = lj_spec("served", write_structures(tmp_path), active_learning={"max_rounds": 0},
                   md={**CONCLUSIVE_MD, "steps": 800, "reference_steps": 300}, stability={"min_msd_A2": 0.5})
    started = ray_init(2)
    try:
        summary = Campaign(validate(spec), store=tmp_path / "store", tracking_uri=server).run()
    finally:
        if started:
            ray.shutdown()
    assert summary["inconclusive"] == 1

    exp = rest(server, "experiments/get-by-name", experiment_name="matscreen-served")["experiment"]
    assert {t["key"]: t["value"] for t in exp["tags"]}["mlflow.experimentKind"] == "custom_model_development"
    runs = rest(server, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
    tags = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs}
    by_kind = {}
    for rid, t in tags.items():
        by_kind.setdefault(t["matscreen.kind"], []).append(rid)
    (parent,), (cand,), (train,) = by_kind["campaign"], by_kind["candidate"], by_kind["training"]
    assert tags[cand]["mlflow.parentRunId"] == parent and tags[train]["mlflow.parentRunId"] == cand   # nested
    assert tags[cand]["mlflow.runName"] == "Li" and tags[train]["mlflow.runName"] == "Li · round 0"    # read by a person
    assert "mS/cm" in tags[cand]["mlflow.note.content"]

    history = rest(server, "metrics/get-history", run_id=cand, metric_key="conductivity_mS_cm")["metrics"]
    assert sorted(m["step"] for m in history) == [1200, 1500, 1800]                                  # step = K
    metrics = {m["key"] for r in runs if r["info"]["run_id"] == cand for m in r["data"]["metrics"]}
    assert {"log10_sigma_300K", "diffusivity_cm2_s_err", "rdf_mae", "log10_ratio"} <= metrics
    assert not {"sigma_mS_cm_1500K", "log10_sigma_300K_mS_cm", "check_rdf_mae"} & metrics      # one name each
    assert all(known_metric(m) for m in metrics)
    # one name per number: no run logs one (non-integer) value at one step under two names
    for r in runs:
        rid, seen = r["info"]["run_id"], {}
        for key in {m["key"] for m in r["data"]["metrics"]}:
            for m in rest(server, "metrics/get-history", run_id=rid, metric_key=key)["metrics"]:
                if float(m["value"]) != int(float(m["value"])):
                    seen.setdefault((m["step"], float(m["value"])), set()).add(key)
        assert [names for names in seen.values() if len(names) > 1] == [], tags[rid]["mlflow.runName"]

    plots = {f["path"] for f in rest(server, "artifacts/list", run_id=cand, path="plots")["files"]}
    assert {"plots/arrhenius.png", "plots/sigma_arrhenius.png", "plots/rdf_round0.png"} <= plots
    first = {f["path"] for f in rest(server, "artifacts/list", run_id=parent, path="plots")["files"]}
    assert "plots/ranking.png" in first                      # the campaign run's plot: every candidate's σ(300 K)
    with urllib.request.urlopen(f"{server}/get-artifact?path=plots/arrhenius.png&run_uuid={cand}", timeout=30) as r:
        assert r.read()[:8] == b"\x89PNG\r\n\x1a\n"                                           # what the UI displays
    tables = {f["path"] for f in rest(server, "artifacts/list", run_id=parent, path="results")["files"]}
    assert tables == {"results/results.csv", "results/results.md"}
    with urllib.request.urlopen(f"{server}/get-artifact?path=results/results.md&run_uuid={parent}", timeout=30) as r:
        assert "log10 σ(300 K) [log10 mS/cm]" in r.read().decode()

