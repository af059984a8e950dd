"""Cost per force call and per MD step of every available oracle on the 50-atom LGPS cell.

Run: .venv/bin/python benchmarks/oracles.py [--steps 20] [--calls 5]
Uses the library LGPS (ordered, 50 atoms), or ../shared/data/structures/Li10GeP2S12_mp-696138.cif
when present.  Prints one line per oracle: seconds per force call and per Langevin MD step (ASE).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# benchmarks/md.py sits beside this file: keep the folder off sys.path so `import md` finds the package
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np


def lgps_atoms():
    from ase.io import read

    cif = Path(__file__).resolve().parents[2] / "shared" / "data" / "structures" / "Li10GeP2S12_mp-696138.cif"
    if cif.is_file():
        return read(cif), f"mp-696138 ({cif.name})"
    from pymatgen.io.ase import AseAtomsAdaptor

    from reference.structures import library_structure

    return AseAtomsAdaptor.get_atoms(library_structure("Li10GeP2S12").structure), "library Li10GeP2S12"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from reference.oracles import Oracle, available_oracles

    atoms, where = lgps_atoms()
    print(f"LGPS {len(atoms)} atoms from {where}; torch threads={os.environ.get('OMP_NUM_THREADS', 'default')}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name, ok in available_oracles().items():
        if name in ("lj", "emt"):
            continue
        if not ok:
            print(f"{name:10s} not installed (skipped)")
            continue
        t0 = time.perf_counter()
        oracle = Oracle(name)
        load = time.perf_counter() - t0
        work = atoms.copy()
        work.calc = oracle.calculator
        for k in range(3):  # warm-up (first torch calls are slow)
            work.rattle(0.001, seed=50 + k)
            work.get_forces()
        t0 = time.perf_counter()
        for k in range(args.calls):
            work.rattle(0.001, seed=k)
            work.get_forces()
        per_force = (time.perf_counter() - t0) / args.calls
        t0 = time.perf_counter()
        for k in range(args.calls):
            work.rattle(0.001, seed=100 + k)
            oracle.label(work)
        per_label = (time.perf_counter() - t0) / args.calls
        MaxwellBoltzmannDistribution(work, temperature_K=600, rng=np.random.default_rng(0))
        dyn = Langevin(work, timestep=2 * units.fs, temperature_K=600, friction=0.01 / units.fs,
                       rng=np.random.default_rng(0))
        t0 = time.perf_counter()
        dyn.run(args.steps)
        per_step = (time.perf_counter() - t0) / args.steps
        print(f"{oracle.name:14s} load {load:6.2f} s | force call {per_force:7.3f} s | label (E,F,stress) "
              f"{per_label:7.3f} s | MD step {per_step:7.3f} s ({args.steps} Langevin steps, 2 fs)")


if __name__ == "__main__":
    main()
