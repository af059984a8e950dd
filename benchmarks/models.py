"""Benchmark: energy + forces throughput of each force field on the 50-atom LGPS cell.

For batch sizes 1, 8 and 32 (copies of the cell, each rattled differently) it times one
``predict`` (forward + autograd forces) with a prebuilt neighbour list, as the MD engine calls
it, and prints atom-steps per second and the batch-32 / batch-1 throughput ratio (target: >= 1.3
on a 2-core CPU, >= 8 on a GPU).  Default (untrained) hyper-parameters, float32.  Asserts nothing.

    .venv/bin/python benchmarks/models.py [--models schnet painn dimenetpp cgcnn] [--device cpu cuda]
                                          [--threads N] [--json]
On a CPU shared with other busy processes, torch's default multi-threading spins and distorts the
figures badly (a 2-thread call can take 5-10x longer than a 1-thread call); use --threads 1 there.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# this file is named like the package: keep its folder off sys.path so `import models` finds the package
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

LGPS_CIF = _HERE.parent.parent / "shared" / "data" / "structures" / "Li10GeP2S12_mp-696138.cif"
BATCHES = (1, 8, 32)


def lgps_atoms():
    import ase.io

    if not LGPS_CIF.exists():
        sys.exit(f"LGPS structure not found at {LGPS_CIF}")
    return ase.io.read(LGPS_CIF)


def time_predict(model, batch, nl, device: str, min_time: float = 1.0, max_reps: int = 50) -> float:
    """Seconds per predict call (median-free: total time / reps after two warm-up calls)."""
    import torch

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(2):
        model.predict(batch, nl)
    sync()
    reps, t0 = 0, time.perf_counter()
    while reps < max_reps and (time.perf_counter() - t0 < min_time or reps < 3):
        model.predict(batch, nl)
        reps += 1
    sync()
    return (time.perf_counter() - t0) / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["schnet", "painn", "dimenetpp", "cgcnn"])
    parser.add_argument("--device", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timing per point")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; use 1 on a CPU shared with other jobs)")
    parser.add_argument("--json", action="store_true", help="one JSON line per (model, device)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from models import AtomsBatch, build_model, neighbor_list

    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    base = lgps_atoms()
    frames = []
    for k in range(max(BATCHES)):
        a = base.copy()
        a.rattle(0.05, seed=k)
        frames.append(a)
    elements = sorted(set(base.numbers))
    if not args.json:
        print(f"LGPS {len(base)} atoms, cutoff {args.cutoff} Å, float32, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    for device in devices:
        for arch in args.models:
            model = build_model(arch, elements, dtype="float32", seed=0, cutoff=args.cutoff).to(device).eval()
            row = {"model": arch, "device": device, "atoms": len(base), "threads": torch.get_num_threads()}
            for bs in BATCHES:
                batch = AtomsBatch.from_atoms(frames[:bs], dtype=torch.float32, device=device)
                nl = neighbor_list(batch, args.cutoff)
                sec = time_predict(model, batch, nl, device, args.min_time)
                row[f"ms_per_call_b{bs}"] = round(1000 * sec, 2)
                row[f"atom_steps_per_s_b{bs}"] = round(bs * len(base) / sec, 1)
            row["ratio_b32_b1"] = round(row["atom_steps_per_s_b32"] / row["atom_steps_per_s_b1"], 2)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"{arch:>10} {device:>5}: " + "  ".join(
                    f"b{bs} {row[f'atom_steps_per_s_b{bs}']:>10.0f} atom-steps/s ({row[f'ms_per_call_b{bs}']:.1f} ms)"
                    for bs in BATCHES) + f"   b32/b1 {row['ratio_b32_b1']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
