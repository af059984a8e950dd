"""Benchmark: MSD + diffusivity of a 50 ps, 50-atom trajectory vs pymatgen's DiffusionAnalyzer.

Synthetic LGPS-sized trajectory (20 Li random walkers + 30 vibrating framework atoms, one frame
every 2 fs = 25 000 frames, wrapped positions).  Ours: unwrap + FFT MSD over all origins + GLS
fit (analysis.diffusion).  pymatgen: DiffusionAnalyzer with its default smoothed="max" and with
smoothed=False, through DiffusionAnalyzer.from_structures (its route for MD
frames; building the Structure list is timed separately).  Prints figures, asserts nothing.

    .venv/bin/python benchmarks/analysis.py [--json] [--frames 25000]
"""
from __future__ import annotations

from report import print_result
import argparse
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


def synthetic(n_frames: int, dt_fs: float = 2.0, d_cm2_s: float = 1e-5, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    box = 9.0
    sd = np.sqrt(2 * d_cm2_s / 0.1 * dt_fs)
    li = rng.random((20, 3)) * box + np.cumsum(rng.normal(0, sd, (n_frames, 20, 3)), axis=0)
    fw = rng.random((30, 3)) * box + 0.1 * rng.normal(size=(n_frames, 30, 3))
    pos = np.concatenate([li, fw], axis=1)
    numbers = np.array([3] * 20 + [16] * 30)
    return pos % box, np.eye(3) * box, numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--frames", type=int, default=25000)
    args = parser.parse_args()

    import numpy as np
    from pymatgen.analysis.diffusion.analyzer import DiffusionAnalyzer
    from pymatgen.core import Lattice, Structure

    from analysis.diffusion import diffusion, unwrap

    dt = 2.0
    wrapped, cell, numbers = synthetic(args.frames, dt)
    diffusion(unwrap(wrapped[:500], cell), numbers, dt, "Li")      # warm-up: imports, FFT plans
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        ours = diffusion(unwrap(wrapped, cell), numbers, dt, "Li", temperature_K=1000.0)
        runs.append(time.perf_counter() - t0)
    ours_s = float(np.median(runs))

    # pymatgen's route for an MD trajectory: a list of Structures -> DiffusionAnalyzer.from_structures
    # (it unwraps from fractional coordinates itself).  Building the Structures is timed separately.
    t0 = time.perf_counter()
    lattice = Lattice(cell)
    frac = wrapped @ np.linalg.inv(cell)
    structures = [Structure(lattice, numbers, f, coords_are_cartesian=False) for f in frac]
    build_s = time.perf_counter() - t0
    timings = {}
    values = {}
    for smoothed in ("max", False):
        t0 = time.perf_counter()
        da = DiffusionAnalyzer.from_structures(structures, "Li", temperature=1000, time_step=dt, step_skip=1,
                                               smoothed=smoothed)
        timings[str(smoothed)] = time.perf_counter() - t0
        values[str(smoothed)] = (da.diffusivity, da.diffusivity_std_dev)
    result = {
        "n_frames": args.frames, "n_atoms": len(numbers), "trajectory_ps": args.frames * dt / 1000,
        "ours_s": round(ours_s, 4), "pymatgen_smoothed_max_s": round(timings["max"], 4),
        "pymatgen_smoothed_false_s": round(timings["False"], 4),
        "speedup_vs_smoothed_max": round(timings["max"] / ours_s, 2),
        "speedup_vs_smoothed_false": round(timings["False"] / ours_s, 2),
        "pymatgen_structure_build_s": round(build_s, 2),
        "true_diffusivity_cm2_s": 1e-5,
        "ours_diffusivity_cm2_s": ours.diffusivity_cm2_s, "ours_err_cm2_s": ours.diffusivity_err_cm2_s,
        "pymatgen_max_diffusivity_cm2_s": values["max"][0], "pymatgen_max_err_cm2_s": values["max"][1],
        "pymatgen_false_diffusivity_cm2_s": values["False"][0], "pymatgen_false_err_cm2_s": values["False"][1],
    }
    print_result(result, args.json)


if __name__ == "__main__":
    main()
