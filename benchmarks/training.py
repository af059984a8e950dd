"""Benchmark: training machinery at the reference study's scale (1k, 10k, 30k frames of 50-atom LGPS cells).

Each size runs in its own process (so peak RSS is that size's): the frames are labelled cheaply by an
analytic Lennard-Jones potential (this measures the machinery, not the science), written once to an HDF5
frame cache, then a default SchNet trains on them streamed (graphs built per batch in --loader-workers
processes) for --seconds; throughput counts atom-frames through forward + forces + backward + step.
``--baseline`` adds today's in-memory path (all graphs built up front) at the smallest size.  Prints one
JSON line per run with --json: {"frames", "atoms_per_frame", "peak_rss_gb", "atom_frames_per_s", "mode", ...}.

    .venv/bin/python benchmarks/training.py --json [--sizes 1000,10000,30000] [--seconds 60] [--device cuda]
    .venv/bin/python benchmarks/training.py --json --sizes 200 --repeat 3,3,6    # 2,700-atom frames
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from report import print_result

_HERE = Path(__file__).resolve().parent
LGPS_CIF = _HERE.parent.parent / "shared" / "data" / "structures" / "Li10GeP2S12_mp-696138.cif"

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
sys.path[:] = [p for p in sys.path if not p.endswith("benchmarks")]
from ase.calculators.singlepoint import SinglePointCalculator
from models import AtomsBatch, LennardJones, TrainConfig, build_model
from models.streaming import FrameCache, StreamedGraphs
from models.training import GraphData, _loss

n, mode, cif, cache_path, seconds, workers, device, threads, repeat = sys.argv[1:10]
n, seconds, workers = int(n), float(seconds), int(workers)
torch.set_num_threads(int(threads))
from ase.io import read
base = read(cif).repeat([int(r) for r in repeat.split(",")])
per_chunk = max(1, min(200, 20000 // len(base)))
lj = LennardJones(epsilon=0.01, sigma=2.0, cutoff=5.0)

def frames():
    rng = np.random.default_rng(0)
    for start in range(0, n, per_chunk):
        chunk = []
        for k in range(start, min(n, start + per_chunk)):
            a = base.copy()
            a.positions += rng.normal(0, 0.1, a.positions.shape)
            a.info.update(oracle="lj", temperature_K=1000.0, run_id=f"r{k % 4}")
            chunk.append(a)
        pred = lj.predict(AtomsBatch.from_atoms(chunk, dtype=torch.float64))
        f, i = pred.forces.numpy(), 0
        for j, a in enumerate(chunk):
            a.calc = SinglePointCalculator(a, energy=float(pred.energy[j]), forces=f[i:i + len(a)])
            i += len(a)
            yield a

cfg = TrainConfig(device=device)          # the default batching: batch_size frames, max_atoms_per_batch atoms
t0 = time.perf_counter()
if mode == "streamed":
    cache = FrameCache.build(cache_path, frames())
    build_s = time.perf_counter() - t0
    elements = cache.elements()
    model = build_model("schnet", elements, seed=0, cutoff=5.0).to(device)
    data = StreamedGraphs(cache, np.arange(len(cache)), model.cutoff, model.param_dtype, device, workers,
                          cfg.max_atoms_per_batch)
else:
    items = list(frames())
    elements = sorted({int(z) for a in items for z in a.numbers})
    model = build_model("schnet", elements, seed=0, cutoff=5.0).to(device)
    data = GraphData(items, model.cutoff, model.param_dtype, device, cfg.max_atoms_per_batch)
    build_s = time.perf_counter() - t0
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
atoms = batches = 0
start = None
for batch, nl, energy, forces, stress in data.batches(cfg.batch_size, shuffle=True, seed=0):
    if start is None:
        start = time.perf_counter()          # after the first batch: loader start-up is not throughput
        continue
    loss, _ = _loss(model, batch, nl, energy, forces, stress, cfg)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    atoms += batch.n_atoms
    batches += 1
    if time.perf_counter() - start > seconds:
        break
if device.startswith("cuda"):
    torch.cuda.synchronize()
elapsed = time.perf_counter() - start
print(json.dumps({"frames": n, "atoms_per_frame": len(base),
                  "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 3),
                  "atom_frames_per_s": round(atoms / elapsed, 1), "mode": mode, "loader_workers": workers,
                  "batches": batches, "data_setup_s": round(build_s, 1), "device": device,
                  "batch_size": cfg.batch_size, "max_atoms_per_batch": cfg.max_atoms_per_batch}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--sizes", default="1000,10000,30000", help="frame counts (default 1000,10000,30000)")
    ap.add_argument("--seconds", type=float, default=60.0, help="training time measured per size (default 60)")
    ap.add_argument("--loader-workers", type=int, default=1, help="graph-building processes (default 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the trainer (default 1)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--baseline", action="store_true", help="also today's in-memory path at the smallest size")
    ap.add_argument("--repeat", default="1,1,1", help="supercell of the 50-atom cell, e.g. 3,3,6 (2,700 atoms)")
    args = ap.parse_args()
    if not LGPS_CIF.exists():
        sys.exit(f"benchmark structure {LGPS_CIF} not found: clone with ../shared beside the repository")
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = [(n, "streamed") for n in sizes] + ([(min(sizes), "in_memory")] if args.baseline else [])
    with tempfile.TemporaryDirectory() as tmp:
        for n, mode in runs:
            out = subprocess.run([sys.executable, "-c", CHILD, str(n), mode, str(LGPS_CIF), f"{tmp}/c{n}.h5",
                                  str(args.seconds), str(args.loader_workers), args.device, str(args.threads),
                                  args.repeat],
                                 capture_output=True, text=True, cwd=_HERE.parent)
            if out.returncode != 0:
                sys.exit(out.stderr[-3000:])
            import json

            print_result(json.loads(out.stdout.strip().splitlines()[-1]), args.json)


if __name__ == "__main__":
    main()
