"""Benchmark: 30 LGPS systems (5 temperatures x 6 replicas) as ONE batch vs one after another in ASE MD.

Same model, same step count.  Batched: md.runner.BatchedMD (study protocol, Verlet list,
trajectory writing every 10 steps).  Sequential: ase.md VelocityVerlet with the models' ASE
calculator (MLFFCalculator), one structure at a time.  Prints figures, asserts nothing.

    .venv/bin/python benchmarks/md.py [--json] [--steps 20] [--model schnet] [--device cuda]
"""
from __future__ import annotations

from report import print_result
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# this file is named like the package: keep its folder off sys.path so `import md` finds the package
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

LGPS_CIF = _HERE.parent.parent / "shared" / "data" / "structures" / "Li10GeP2S12_mp-696138.cif"


def lgps_atoms():
    import ase.io

    if LGPS_CIF.exists():
        return ase.io.read(LGPS_CIF)
    from pymatgen.io.ase import AseAtomsAdaptor

    from reference.structures import library_structure

    return AseAtomsAdaptor.get_atoms(library_structure("Li10GeP2S12").structure)


def build_force_field(name: str, elements, device: str):
    import models

    if name == "lj":
        return models.LennardJones(cutoff=5.0)
    model = models.build_model(name, elements=elements, seed=0)
    return models.Predictor(model, device=device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--steps", type=int, default=100, help="MD steps per system (setup is amortised over them)")
    parser.add_argument("--model", default="schnet", help="schnet | painn | dimenetpp | cgcnn | lj")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    import numpy as np
    import torch
    from ase import units
    from ase.md.verlet import VelocityVerlet
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    from md.monitors import MonitorConfig
    from md.protocol import Protocol
    from md.runner import BatchedMD, SystemSpec, default_device
    from models import MLFFCalculator

    device = args.device or default_device()
    atoms = lgps_atoms()
    ff = build_force_field(args.model, sorted(set(atoms.numbers)), device)
    temps = [800.0, 900.0, 1000.0, 1100.0, 1200.0]
    systems = [SystemSpec(f"{t:g}K_r{r}", atoms, t, seed=k) for k, (t, r) in
               enumerate((t, r) for t in temps for r in range(6))]
    protocol = Protocol.study(timestep_fs=2.0, stride=10, checkpoint_every=10 ** 9)
    quiet = MonitorConfig(check_every=10 ** 9)        # untrained model: time the engine, not the verdicts

    with tempfile.TemporaryDirectory() as tmp:
        warm = BatchedMD(ff, systems[:2], protocol, Path(tmp) / "warm", device=device, monitor=quiet)
        warm.run(n_steps=3)
        t0 = time.perf_counter()
        runner = BatchedMD(ff, systems, protocol, Path(tmp) / "batch", device=device, monitor=quiet)
        runner.run(n_steps=args.steps)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        batched_s = time.perf_counter() - t0

    calc_model = ff.model if hasattr(ff, "model") else None
    seq_steps = args.steps
    t0 = time.perf_counter()
    if calc_model is not None:
        for k, spec in enumerate(systems):
            a = spec.atoms.copy()
            a.calc = MLFFCalculator(calc_model, device=device)
            MaxwellBoltzmannDistribution(a, temperature_K=spec.temperature_K, rng=np.random.default_rng(k))
            Stationary(a)
            VelocityVerlet(a, timestep=2.0 * units.fs).run(seq_steps)
        sequential_s = time.perf_counter() - t0
    else:
        sequential_s = float("nan")

    batched_sps = args.steps / batched_s                 # batch steps per second (all 30 systems advance)
    sequential_sps = seq_steps / sequential_s            # same 30-system step, done one after another
    result = {
        "model": args.model, "device": device, "n_systems": len(systems), "atoms_per_system": len(atoms),
        "steps": args.steps, "timestep_fs": 2.0,
        "batched_steps_per_s": round(batched_sps, 3), "sequential_steps_per_s": round(sequential_sps, 3),
        "batched_speedup": round(batched_sps / sequential_sps, 3),
        "ns_per_day_per_system": round(batched_sps * 2.0e-6 * 86400, 4),
        "batched_wall_s": round(batched_s, 2), "sequential_wall_s": round(sequential_s, 2),
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
    }
    print_result(result, args.json)


if __name__ == "__main__":
    main()
