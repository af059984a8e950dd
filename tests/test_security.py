"""Credentials: only from env or a 0600 secrets file; never in logs, MLflow params/tags/artifacts."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import yaml

from common import InputError
from orchestrator.ops import secrets

ROOT = Path(__file__).resolve().parents[1]
PLANTED = "mp-PLANTED-0123456789abcdef"


def grep_tree(root: Path, needle: str) -> list[Path]:
    """Every file under ``root`` whose bytes contain ``needle`` (sqlite db, WAL, artifacts)."""
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_env_wins_then_secrets_file(tmp_path, monkeypatch):
    file = tmp_path / "secrets.env"
    file.write_text(f"# comment\nexport MP_API_KEY='{PLANTED}'\nOTHER_TOKEN=abcdefgh\n")
    file.chmod(0o600)
    monkeypatch.delenv("MP_API_KEY", raising=False)
    monkeypatch.delenv("PMG_MAPI_KEY", raising=False)
    monkeypatch.setenv("MATSCREEN_SECRETS_FILE", str(file))
    assert secrets.mp_api_key() == PLANTED
    monkeypatch.setenv("MP_API_KEY", "from-environment-xyz")
    assert secrets.mp_api_key() == "from-environment-xyz"
    assert {"from-environment-xyz", PLANTED, "abcdefgh"} <= secrets.secret_values()


def test_world_readable_secrets_file_refused_without_echoing_it(tmp_path, monkeypatch):
    file = tmp_path / "secrets.env"
    file.write_text(f"MP_API_KEY={PLANTED}\n")
    file.chmod(0o644)
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(InputError, match="chmod 600") as exc:
        secrets.get_secret("MP_API_KEY", file)
    assert PLANTED not in str(exc.value)
    file.chmod(0o600)
    file.write_text(f"this line has {PLANTED} but no equals sign\n")
    with pytest.raises(InputError, match="line 1") as exc:
        secrets.get_secret("MP_API_KEY", file)
    assert PLANTED not in str(exc.value)


def test_missing_required_key_names_both_places(tmp_path, monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    monkeypatch.delenv("PMG_MAPI_KEY", raising=False)
    monkeypatch.setenv("MATSCREEN_SECRETS_FILE", str(tmp_path / "none.env"))
    with pytest.raises(InputError, match="export MP_API_KEY"):
        secrets.mp_api_key(required=True)


def test_redact_structures_and_uris(monkeypatch):
    monkeypatch.setenv("MP_API_KEY", PLANTED)
    data = {"note": f"key={PLANTED}", "api_key": "short", "nested": [PLANTED, 3, None],
            "uri": "https://alice:hunter22@mlflow.example.org/", "epochs": 30}
    clean = secrets.redact(data)
    assert PLANTED not in repr(clean) and "hunter22" not in repr(clean)
    assert clean["api_key"] == "***" and clean["epochs"] == 30 and clean["nested"][1:] == [3, None]
    assert clean["uri"] == "https://alice:***@mlflow.example.org/"
    assert secrets.safe_environment({"MP_API_KEY": "x", "PATH": "/bin"}) == {"PATH": "/bin"}


def test_log_records_are_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("MP_API_KEY", PLANTED)
    logger = logging.getLogger("matscreen.test.security")
    handler = logging.FileHandler(tmp_path / "log.txt")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        secrets.install_log_redaction(logger)
        logger.info("querying Materials Project with key %s", PLANTED)
        logger.info("tracking at %s", "http://bob:pa55word@host:5000")
    finally:
        handler.close()
        logger.removeHandler(handler)
    text = (tmp_path / "log.txt").read_text()
    assert PLANTED not in text and "pa55word" not in text and "***" in text


def test_planted_key_never_reaches_the_mlflow_store(tmp_path, monkeypatch):
    """A tracked campaign-style operation with the key in env, spec text and params: grep the store."""
    tracking = pytest.importorskip("orchestrator.campaign.tracking")
    from orchestrator.ops.scheduler import Execution, Schedule
    from orchestrator.ops.scheduler_tracking import ExecutionRecorder

    monkeypatch.setenv("MP_API_KEY", PLANTED)
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    artifacts = (tmp_path / "store" / "artifacts").as_uri()
    tracker = tracking.Tracker(uri, "matscreen-sec", artifact_root=artifacts)
    spec = {"name": "sec", "oracle": {"name": "chgnet"}, "models": {"architectures": ["schnet"], "size": 2},
            "md": {"temperatures_K": [800.0]}, "active_learning": {"max_rounds": 1}}
    spec_yaml = yaml.safe_dump(spec) + f"# a careless comment: MP_API_KEY={PLANTED}\n"
    tracker.start_campaign("sec", "sec", spec, spec_yaml)
    tracker.log_candidate("sec", "Li3PS4", {"formula": "Li3PS4", "api_key": PLANTED, "source": f"mp:{PLANTED}"},
                          rounds=[{"round": 0, "rdf_mae": 0.01}], result={}, verdict="stable", reason="converged")
    tracker.finish_campaign("sec", None, {"done": 1})
    sched = Schedule(name="n", spec=f"s-{PLANTED}.yaml", cron="0 2 * * *", working_dir=str(tmp_path),
                     created_at="2026-01-01T00:00:00Z")
    recorder = ExecutionRecorder(uri)
    run = recorder.start(sched, Execution("2026-01-01T02:00:00Z", "2026-01-01T02:00:00Z", "job-1", "SUBMITTED",
                                          message=f"error talking to MP with {PLANTED}"))
    recorder.finish(run, "SUCCEEDED", secrets_time())
    store = tmp_path / "store"
    assert (store / "mlflow.db").exists() and list((store / "artifacts").rglob("*.yaml"))
    assert grep_tree(store, PLANTED) == []
    assert grep_tree(tmp_path, PLANTED) == []


def secrets_time():
    from datetime import datetime, timezone

    return datetime(2026, 1, 1, 3, tzinfo=timezone.utc)


def test_services_bind_to_localhost_by_default():
    """ray_cluster.yaml starts the dashboard and the MLflow server on 127.0.0.1 unless the user opts in."""
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host 127.0.0.1" in head or "--dashboard-host=127.0.0.1" in head
    mlflow_cmd = " ".join(c for c in config["head_setup_commands"] + config["head_start_ray_commands"] if "mlflow server" in c)
    assert "--host 127.0.0.1" in mlflow_cmd
    assert "0.0.0.0" not in head and "0.0.0.0" not in mlflow_cmd


def test_secrets_file_exported_for_science_packages(tmp_path, monkeypatch):
    file = tmp_path / "secrets.env"
    file.write_text(f"MP_API_KEY={PLANTED}\nHF_TOKEN=hf-file-value\n")
    file.chmod(0o600)
    monkeypatch.setenv("MP_API_KEY", "")  # empty counts as unset; monkeypatch restores it afterwards
    monkeypatch.setenv("HF_TOKEN", "hf-env-wins")
    monkeypatch.setenv("MATSCREEN_SECRETS_FILE", str(file))
    assert secrets.export_secrets_file() == ["MP_API_KEY"]
    assert os.environ["MP_API_KEY"] == PLANTED and os.environ["HF_TOKEN"] == "hf-env-wins"
    monkeypatch.setenv("MATSCREEN_SECRETS_FILE", str(tmp_path / "absent.env"))
    assert secrets.export_secrets_file() == []
