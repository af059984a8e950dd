"""Training at scale: frames streamed from an on-disk cache give the same losses as in memory, memory does not
grow with the data, 2 Ray Train workers (torch DDP, gloo) train like 1, and a killed run resumes mid-epoch."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from models import build_model, fit
from models.streaming import FrameCache
from test_models_training import TINY_SCHNET, config, emt_frames

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def schnet():
    return build_model("schnet", [29], seed=0, cutoff=4.0, **TINY_SCHNET)


def test_streamed_training_equals_in_memory_training(tmp_path):
    frames = emt_frames(24, seed=0, temperature=300.0) + emt_frames(12, seed=5, temperature=600.0, run="r1")
    cache = FrameCache.build(tmp_path / "frames.h5", frames)
    assert len(cache) == 36 and cache.oracles == ["emt"] and cache.elements() == [29]
    cfg = config(epochs=3)
    memory = fit(schnet(), frames, config=cfg)
    streamed = fit(schnet(), cache, config=cfg)
    overlapped = fit(schnet(), cache, config=replace(cfg, loader_workers=2))      # graphs built in 2 processes
    for run in (streamed, overlapped):
        assert [r["train_loss"] for r in run.history] == pytest.approx([r["train_loss"] for r in memory.history], rel=1e-9)
        assert [r["val_loss"] for r in run.history] == pytest.approx([r["val_loss"] for r in memory.history], rel=1e-9)
    assert memory.model.training_info["n_val"] == streamed.model.training_info["n_val"] == 2 + 1   # per temperature


def test_atom_count_batches_mix_cell_sizes(tmp_path):
    from models.batching import batch_order

    big = emt_frames(4, seed=1)
    for a in big:
        a.info["run_id"] = "big"
    frames = emt_frames(8, seed=0) + [a.repeat((2, 1, 1)) for a in big]   # 4- and 8-atom cells
    for a, b in zip(frames[8:], big):
        from ase.calculators.singlepoint import SinglePointCalculator

        a.calc = SinglePointCalculator(a, energy=2 * b.get_potential_energy(), forces=np.tile(b.get_forces(), (2, 1)))
    cache = FrameCache.build(tmp_path / "mixed.h5", frames)
    batches = batch_order(len(cache), 4, shuffle=True, seed=3, n_atoms=cache.n_atoms, max_atoms=16)
    assert sorted(int(k) for b in batches for k in b) == list(range(12))            # every frame once per epoch
    assert all(cache.n_atoms[b].sum() <= 16 for b in batches)
    assert any(len(set(cache.n_atoms[b])) > 1 for b in batches)                       # 4- and 8-atom cells together
    result = fit(schnet(), cache, config=config(epochs=2, max_atoms_per_batch=16))
    assert np.isfinite(result.best_val_loss)


RSS = """
import resource, sys, tempfile, numpy as np, torch
torch.set_num_threads(1)
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from models import AtomsBatch, LennardJones, TrainConfig, build_model, fit
from models.streaming import FrameCache

n = int(sys.argv[1])
lj = LennardJones(epsilon=0.0104, sigma=2.3, cutoff=5.0)
def frames():
    base = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)                  # 32 atoms
    rng = np.random.default_rng(0)
    for start in range(0, n, 100):
        chunk = []
        for k in range(start, min(n, start + 100)):
            a = base.copy(); a.positions += rng.normal(0, 0.08, a.positions.shape)
            a.info.update(oracle="lj", temperature_K=300.0, run_id="r0"); chunk.append(a)
        pred = lj.predict(AtomsBatch.from_atoms(chunk, dtype=torch.float64))
        f = pred.forces.numpy(); i = 0
        for j, a in enumerate(chunk):
            a.calc = SinglePointCalculator(a, energy=float(pred.energy[j]), forces=f[i:i + 32]); i += 32
            yield a
cache = FrameCache.build(sys.argv[2], frames())
model = build_model("schnet", [29], seed=0, cutoff=5.0, hidden_channels=16, num_filters=16, num_interactions=1)
fit(model, cache, config=TrainConfig(epochs=1, batch_size=8, max_time_s=4, val_fraction=0.05))
print("RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_peak_memory_does_not_grow_with_the_dataset(tmp_path):
    """Peak RSS of streamed training on 4,000 frames vs 400 (32 atoms each): in memory the graphs alone
    would add ~200 MB (about 50 kB per frame); streamed, the ratio stays near 1."""
    rss = {}
    runs = {n: subprocess.Popen([sys.executable, "-c", RSS, str(n), str(tmp_path / f"c{n}.h5")], cwd=ROOT,
                                env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for n in (400, 4000)}               # side by side: each process's own peak RSS is what counts
    for n, proc in runs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        rss[n] = int(out.split("RSS_KB")[1].split()[0])
    assert rss[4000] / rss[400] < 1.12, rss


def test_two_ray_train_workers_train_like_one(tmp_path):
    ray = pytest.importorskip("ray")
    from actors.distributed import data_parallel_fit
    from orchestrator.ops.ray_runtime import ray_init

    cache = FrameCache.build(tmp_path / "f.h5", emt_frames(16, seed=0))          # equal cells: equal shares
    cfg = config(epochs=2, batch_size=4)
    one = fit(schnet(), cache, config=cfg)
    started = ray_init(2)
    try:
        two = data_parallel_fit(2)(schnet(), cache, config=cfg)
    finally:
        if started:
            ray.shutdown()
    assert two.model.training_info["data_parallel_workers"] == 2
    assert [r["val_loss"] for r in two.history] == pytest.approx([r["val_loss"] for r in one.history], rel=1e-5)
    a, b = one.model.state_dict(), two.model.state_dict()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


def _train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [str(BIN / "matscreen"), "train", "--data", str(data), "--stream", "--out", str(out), "--epochs", "3",
            "--batch-size", "2", "--lr", "5e-3", "--cutoff", "4.0", "--seed", "0", "--checkpoint-every", "2",
            "--hparam", "hidden_channels=24", "--hparam", "num_filters=24", "--hparam", "num_interactions=2",
            "--json", *extra]


def test_a_killed_streamed_run_resumes_mid_epoch_and_ends_as_an_uninterrupted_one(tmp_path):
    from ase.io import write

    data = tmp_path / "cu.extxyz"
    write(data, emt_frames(60, seed=0))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    whole = subprocess.run(_train_cmd(data, tmp_path / "whole.pt"), env=env, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]

    out = tmp_path / "killed.pt"
    proc = subprocess.Popen(_train_cmd(data, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline, where = time.monotonic() + 300, None
    while time.monotonic() < deadline and proc.poll() is None:   # kill it inside the second epoch
        try:
            state = torch.load(out, map_location="cpu", weights_only=True)["training_state"]
            if state["epoch"] == 1 and state["batch"] >= 4:
                where = (state["epoch"], state["batch"])
                break
        except Exception:  # noqa: BLE001 - not written yet, or being replaced
            pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert where is not None, "the run finished before it could be interrupted mid-epoch"
    resumed = subprocess.run(_train_cmd(data, out, "--resume", str(out)), env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming at batch" in resumed.stderr
    a = torch.load(tmp_path / "whole.pt", map_location="cpu", weights_only=True)["training"]["history"]
    b = torch.load(out, map_location="cpu", weights_only=True)["training"]["history"]
    assert [r["val_loss"] for r in b] == pytest.approx([r["val_loss"] for r in a], rel=1e-9)
    assert [r["train_loss"] for r in b] == pytest.approx([r["train_loss"] for r in a], rel=1e-9)
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["force_mae_meV_A"] == pytest.approx(
        json.loads(whole.stdout.strip().splitlines()[-1])["force_mae_meV_A"], rel=1e-9)


def test_default_batches_are_bounded_by_atoms_so_big_cells_train_in_the_memory_of_small_ones():
    """batch_size frames, fewer where they would pass max_atoms_per_batch (default 1024) atoms: a 2,700-atom
    frame is a batch alone, 50-atom frames still go 8 at a time, every frame once per epoch."""
    from models.batching import batch_order
    from models.training import TrainConfig

    cfg = TrainConfig()
    n_atoms = np.array([2700] * 5 + [50] * 20)
    batches = batch_order(len(n_atoms), cfg.batch_size, shuffle=True, seed=1, n_atoms=n_atoms,
                          max_atoms=cfg.max_atoms_per_batch)
    assert sorted(int(k) for b in batches for k in b) == list(range(25))
    assert all(len(b) == 1 for b in batches if n_atoms[b].max() == 2700)
    assert all(len(b) <= cfg.batch_size and (len(b) == 1 or n_atoms[b].sum() <= 1024) for b in batches)
    small = batch_order(20, cfg.batch_size, n_atoms=np.full(20, 50), max_atoms=cfg.max_atoms_per_batch)
    assert [len(b) for b in small] == [8, 8, 4]                   # as without the bound: same numbers as before
