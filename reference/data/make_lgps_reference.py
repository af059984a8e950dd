"""How the demo's references ``Li10GeP2S12_chgnet_<T>K.extxyz.gz`` were made (see README.md here).

    .venv/bin/python reference/data/make_lgps_reference.py [--md]          # 1000 K: ~4 min; --md ~20 min more
    .venv/bin/python reference/data/make_lgps_reference.py --temperature 650 --steps 12000 --seed 2
                                                                            # the slope check's: ~35 min (2 cores)

1. Oracle MD: CHGNet 0.3.0 Langevin NVT of the library's 50-atom Li10GeP2S12 cell (Kamaya 2011), friction
   0.01/fs, 2 fs step, a frame every 10 steps (20 fs) (``reference.reference_md.run_reference_md``, in the
   students' engine).  1000 K: 6000 steps (12 ps), seed 1; without ``--md`` its positions come from
   ``tests/data/lgps_chgnet_md.npz``, run ``t1000``, which is the shipped run, made by ASE's Langevin.
   650 K (the slope check's): 12000 steps (24 ps), seed 2, always run.
2. Every stored frame labelled by a CHGNet 0.3.0 single point (``reference.oracles.Oracle("chgnet")``):
   energy (eV), forces (eV/Å), stress; written as extended XYZ with ``time_fs`` (fs since the start) and
   ``oracle=chgnet-0.3.0`` per frame, gzip-compressed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
STRIDE, DT_FS = 10, 2.0


def positions(run_md: bool, work: Path, temperature_K: float, steps: int, seed: int):
    """([F,N,3] Å, cell [3,3] Å, numbers [N]) of the oracle run."""
    import numpy as np

    if not run_md:
        d = np.load(ROOT / "tests" / "data" / "lgps_chgnet_md.npz")
        return d["t1000_positions"].astype(float), d["cell"], d["numbers"]
    from pymatgen.io.ase import AseAtomsAdaptor

    from md.trajectory import load_trajectory
    from reference.oracles import Oracle
    from reference.reference_md import ReferencePlan, run_reference_md
    from reference.structures import library_structure

    atoms = AseAtomsAdaptor.get_atoms(library_structure("Li10GeP2S12").structure)
    path = work / f"lgps_{temperature_K:g}K.h5"
    if not path.exists():                     # a finished run is not rerun; an interrupted one resumes
        run_reference_md(atoms, Oracle("chgnet"), ReferencePlan.nvt(temperature_K=temperature_K, steps=steps,
                         timestep_fs=DT_FS, stride=STRIDE, label_every=0, seed=seed), path)
    traj = load_trajectory(path)
    return traj.positions, traj.cells[0], traj.numbers


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--md", action="store_true", help="run the oracle MD too (1000 K; else its stored positions "
                   "are used; any other temperature always runs it)")
    p.add_argument("--temperature", type=float, default=1000.0, help="K")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None, help="default: Li10GeP2S12_chgnet_<T>K.extxyz.gz here")
    p.add_argument("--work", default=None, help="a folder kept between runs: an interrupted MD resumes from its "
                   "checkpoint there (default: a temporary one)")
    args = p.parse_args(argv)
    out = args.out or str(HERE / f"Li10GeP2S12_chgnet_{args.temperature:g}K.extxyz.gz")
    run_md = args.md or args.temperature != 1000.0
    import gzip
    import tempfile

    from ase import Atoms
    from ase.io import write

    from reference.oracles import Oracle

    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        x, cell, numbers = positions(run_md, Path(args.work), args.temperature, args.steps, args.seed)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            x, cell, numbers = positions(run_md, Path(tmp), args.temperature, args.steps, args.seed)
    oracle = Oracle("chgnet")
    frames = []
    for k, pos in enumerate(x):
        atoms = oracle.label(Atoms(numbers=numbers, positions=pos, cell=cell, pbc=True))
        atoms.info = {"time_fs": k * STRIDE * DT_FS, "oracle": oracle.name, "temperature_K": args.temperature}
        frames.append(atoms)
    with gzip.open(out, "wt", compresslevel=9) as fh:
        write(fh, frames, format="extxyz")
    print(f"{len(frames)} frames -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
