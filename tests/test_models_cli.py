"""`matscreen train` / `matscreen evaluate` end to end on EMT-labelled extxyz files."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from orchestrator.cli import main

TINY = ["--hparam", "hidden_channels=16", "--hparam", "num_filters=16", "--hparam", "num_interactions=1",
        "--cutoff", "4.0"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def labelled(n, seed, symbols=("Cu",)):
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        if len(symbols) > 1:
            atoms[0].symbol = symbols[1]
        atoms.rattle(0.1, seed=seed * 100 + k)
        atoms.calc = EMT()
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
        atoms.info.update(oracle="emt", temperature_K=300.0 + 300 * (k % 2))
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    write(d / "train.extxyz", labelled(10, 0))
    write(d / "test.extxyz", labelled(4, 1))
    write(d / "gold.extxyz", labelled(4, 2, ("Cu", "Au")))
    return d


@pytest.fixture(scope="module")
def checkpoint(files):
    out = files / "ff.pt"
    rc = main(["train", "--data", str(files / "train.extxyz"), "--model", "schnet", "--epochs", "3",
               "--max-time", "60", "--out", str(out), "--quiet", *TINY])
    assert rc == 0
    return out


def test_train_writes_self_describing_checkpoint(checkpoint):
    ckpt = torch.load(checkpoint, weights_only=True)
    assert ckpt["arch"] == "schnet" and ckpt["elements"] == [29] and ckpt["hparams"]["cutoff"] == 4.0
    assert "training_state" in ckpt          # resumable


def test_evaluate_json_line(checkpoint, files, capsys):
    capsys.readouterr()
    assert main(["evaluate", "--model", str(checkpoint), "--data", str(files / "test.extxyz"), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert {"energy_mae_meV_atom", "force_mae_meV_A", "force_r2", "n_frames"} <= set(out)
    assert out["n_frames"] == 4 and "Cu" in out["per_element"]


def test_evaluate_unknown_element_exits_2_naming_it(checkpoint, files, capsys):
    rc = main(["evaluate", "--model", str(checkpoint), "--data", str(files / "gold.extxyz"), "--json"])
    err = capsys.readouterr().err
    assert rc == 2 and "Au" in err and err.startswith("matscreen: error:")


def test_fine_tune_and_ensemble(checkpoint, files, capsys):
    out = files / "ft.pt"
    rc = main(["train", "--data", str(files / "gold.extxyz"), "--init", str(checkpoint), "--epochs", "2",
               "--out", str(out), "--json", "--quiet"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n_frames"] >= 1
    assert torch.load(out, weights_only=True)["elements"] == [29, 79]
    ens = files / "ens.pt"
    rc = main(["train", "--data", str(files / "train.extxyz"), "--ensemble", "2", "--epochs", "1", "--out", str(ens),
               "--quiet", *TINY])
    assert rc == 0 and torch.load(ens, weights_only=True)["arch"] == "ensemble"


def test_bad_inputs_exit_2(files, tmp_path, capsys):
    unlabelled = tmp_path / "plain.extxyz"
    write(unlabelled, [bulk("Cu", "fcc", a=3.61, cubic=True)])
    rc = main(["train", "--data", str(unlabelled), "--out", str(tmp_path / "x.pt")])
    assert rc == 2 and "plain.extxyz" in capsys.readouterr().err
    rc = main(["evaluate", "--model", str(tmp_path / "none.pt"), "--data", str(files / "test.extxyz")])
    assert rc == 2 and "not found" in capsys.readouterr().err
    rc = main(["train", "--data", str(files / "train.extxyz"), "--out", str(tmp_path / "y.pt"), "--hparam", "oops"])
    assert rc == 2 and "KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "y.pt").exists()


def test_help_texts():
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--max-time" in out.stdout and "--init" in out.stdout
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "evaluate", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--json" in out.stdout
