"""The paper-benchmark mode: spec validation, and a scaled-down run producing the table in MLflow."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import yaml

from common import InputError
from orchestrator.campaign.benchmark import COLUMNS, format_table, load_benchmark
from analysis.verdicts import STATUSES
from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[1]


def soft_oracle():
    """A cheap analytic stand-in for CHGNet (the scaled-down test must fit the CI budget):
    Lennard-Jones with a short sigma that keeps sulfide cells intact (eV, Å)."""
    from ase.calculators.lj import LennardJones

    return LennardJones(sigma=1.9, epsilon=0.01, rc=4.5, smooth=True)


def tiny_spec(tmp_path: Path, shared_data: Path, **bench_overrides) -> Path:
    s = shared_data / "structures"
    spec = {
        "name": "bench-tiny",
        "seed": 0,
        "benchmark": {
            "train_on": "Li10GeP2S12",
            "test_on": ["Li3PS4", "Li4GeS4"],
            "structures": {"Li10GeP2S12": str(s / "Li10GeP2S12_mp-696138.cif"),
                           "Li3PS4": str(s / "gamma-Li3PS4_icsd-180318_obelix-joc.cif"),
                           "Li4GeS4": str(s / "Li4GeS4_icsd-92200_obelix-e6b.cif")},
            "architectures": ["schnet"],
            "training_steps": 60,
            "test_frames": 10,
            **bench_overrides,
        },
        "oracle": {"name": f"{Path(__file__).resolve()}:soft_oracle"},
        "models": {"size": 1, "hidden": 8, "layers": 1, "cutoff_A": 4.0},
        "training": {"epochs": 2, "batch_size": 4, "max_time_s": 18.0, "force_weight": 10.0},
        "md": {"temperatures_K": [800.0, 1200.0], "replicas": 2, "steps": 60, "equilibration_steps": 2,
               "protocol": {"stride": 1, "thermostat": "langevin"}, "reference_steps": 60,
               "reference_temperature_K": 800.0},
        # lenient: the tiny models' 0.1 ps runs must reach the transport step (halves of 29 frames, tiny MSD)
        "stability": {"rdf_mae": 5.0, "min_msd_A2": 1e-4},
        "store": {"path": str(tmp_path / "store")},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_paper_benchmark_spec_is_the_study_protocol():
    bench, cfg = load_benchmark(ROOT / "campaigns" / "paper_benchmark.yaml")
    assert bench["train_on"] == "Li10GeP2S12" and bench["test_on"] == ["Li3PS4", "Li4GeS4"]
    assert bench["architectures"] == ["schnet", "dimenetpp", "painn"]
    assert min(cfg.md.temperatures_K) == 800 and max(cfg.md.temperatures_K) == 1200
    assert cfg.md.replicas == 6 and cfg.resources.gpus_per_md_worker == 1.0


def test_cpu_benchmark_spec_is_the_study_protocol_at_honest_rules():
    """The 2-core benchmark (docs/benchmark_cpu.md): LGPS-only training, transfer to Li3PS4 and Li4GeS4,
    SchNet and PaiNN, 3 temperatures x 2 replicas, and the default checks (no stability section)."""
    from analysis.verdicts import VerdictThresholds

    path = ROOT / "campaigns" / "paper_benchmark_cpu.yaml"
    bench, cfg = load_benchmark(path)
    assert bench["train_on"] == "Li10GeP2S12" and bench["test_on"] == ["Li3PS4", "Li4GeS4"]
    assert {"schnet", "painn"} <= set(bench["architectures"])
    assert len(cfg.md.temperatures_K) >= 3 and cfg.md.replicas >= 2
    assert "stability" not in yaml.safe_load(path.read_text()) and cfg.stability == VerdictThresholds()
    assert (ROOT / "docs" / "benchmark_cpu.md").is_file()


@pytest.mark.parametrize("change, message", [
    ({"benchmark": {"train_om": "x"}}, "benchmark.train_om: unknown key; did you mean 'benchmark.train_on'?"),
    ({"md": {"replica": 2}}, "md.replica: unknown key"),
    ({"benchmark": {"architectures": ["schnet", "megnet"]}}, "benchmark.architectures[1]"),
    ({"benchmark": {"test_on": ["Li3PS4", "Li7P3S11"]}}, "benchmark.structures.Li7P3S11: missing"),
])
def test_malformed_benchmark_spec_names_the_key(tmp_path, shared_data, capsys, change, message):
    path = tiny_spec(tmp_path, shared_data)
    data = yaml.safe_load(path.read_text())
    for section, values in change.items():
        data.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError) as exc:
        load_benchmark(path)
    assert message in str(exc.value)
    assert main(["benchmark", "run", str(path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "store").exists()  # failed before any work


def test_scaled_down_benchmark_produces_the_table_in_mlflow(tmp_path, shared_data, capsys):
    path = tiny_spec(tmp_path, shared_data)
    assert main(["benchmark", "run", str(path), "--serial"]) == 0
    printed = capsys.readouterr().out
    assert "force MAE (meV/Å)" in printed and "-log10 σ300K oracle" in printed and "mS/cm" in printed
    out = tmp_path / "store" / "bench-tiny"
    rows = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert list(rows[0]) == COLUMNS
    assert [(r["model"], r["material"], r["role"]) for r in rows] == [
        ("schnet", "Li10GeP2S12", "train"), ("schnet", "Li3PS4", "transfer"), ("schnet", "Li4GeS4", "transfer")]
    for r in rows:
        assert float(r["force_mae_meV_A"]) > 0
        assert r["verdict"] in STATUSES
    # the training material breaks nothing (its runs are too short to decide the checks: inconclusive, or stable)
    # and gets a conductivity, flagged by its verdict
    assert rows[0]["verdict"] in ("stable", "inconclusive") and float(rows[0]["neg_log10_sigma_300K"]) > -10
    for r in rows:   # the oracle's own conductivity of every material, the checks' evidence beside the verdict
        assert float(r["oracle_neg_log10_sigma_300K"]) > -10 and float(r["oracle_neg_log10_sigma_300K_err"]) > 0
        assert float(r["rdf_mae"]) > 0 and r["rdf_status"] in ("pass", "mismatch", "inconclusive")
        assert float(r["rdf_noise_floor"] or "nan") >= 0 or r["rdf_status"] == "inconclusive"  # no floor: undecided
        assert r["dynamics_status"] in ("pass", "mismatch", "inconclusive")
    # the materials table: the oracle beside the study's AIMD and experiment, with sources
    materials = list(csv.DictReader(io.StringIO((out / "materials.csv").read_text())))
    assert [m["material"] for m in materials] == ["Li10GeP2S12", "Li3PS4", "Li4GeS4"]
    assert [float(m["study_aimd_neg_log10_sigma_300K"]) for m in materials] == pytest.approx([-1.41, 0.84, 13.59], abs=1e-3)
    assert float(materials[0]["experiment_neg_log10_sigma_300K"]) == pytest.approx(-1.079, abs=1e-3)
    assert "Kamaya" in materials[0]["sources"] and "Kanno" in materials[2]["sources"]
    assert "Sources:" in (out / "table.md").read_text()
    # one oracle trajectory per training temperature, and 2 replicas x 2 temperatures x 3 materials of MD
    assert len(list((out / "reference").glob("*_*K.h5"))) == 6        # every material at every temperature
    assert len(list((out / "md" / "schnet").glob("*/*.h5"))) == 12     # one batched run per material

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("matscreen-bench-tiny")
    (run,) = client.search_runs([exp.experiment_id], filter_string="tags.`matscreen.kind` = 'benchmark'")
    assert {a.path for a in client.list_artifacts(run.info.run_id, "benchmark")} == {
        "benchmark/table.csv", "benchmark/table.md", "benchmark/table.json", "benchmark/materials.csv",
        "benchmark/materials.json"}
    assert "force_mae_meV_A.schnet.Li3PS4" in run.data.metrics
    assert run.data.tags["verdict.schnet.Li4GeS4"] == rows[2]["verdict"]
    assert run.data.params["train_on"] == "Li10GeP2S12"

    # the same command again resumes: oracle MD, training and student MD are reused, only the judging is redone
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/**/*.h5")}
    members = {p: p.stat().st_mtime_ns for p in out.glob("models/*/member*.pt")}
    assert main(["benchmark", "run", str(path), "--serial"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/**/*.h5")} == before
    assert {p: p.stat().st_mtime_ns for p in out.glob("models/*/member*.pt")} == members
    again = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert [(r["verdict"], r["force_mae_meV_A"]) for r in again] == [(r["verdict"], r["force_mae_meV_A"]) for r in rows]
    assert all(r["sigma_status"] in ("pass", "mismatch", "inconclusive", "") for r in again)


def test_table_formatting_handles_missing_values():
    rows = [{"model": "painn", "material": "Li3PS4", "role": "transfer", "force_mae_meV_A": 51.234,
             "rdf_mae": float("nan"), "verdict": "atom_fusion", "neg_log10_sigma_300K": float("nan"), "note": ""}]
    text = format_table(rows)
    from common.tables import csv_text
    from orchestrator.campaign.benchmark import COLUMNS

    assert csv_text(rows, COLUMNS).splitlines()[1] == "painn,Li3PS4,transfer,51.234,,,,,,,atom_fusion,,,,,,,,,,"
    assert "51.2" in text and "atom_fusion" in text and text.count("| -") >= 2
