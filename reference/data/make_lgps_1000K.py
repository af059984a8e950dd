"""How ``Li10GeP2S12_chgnet_1000K.extxyz.gz`` was made (the demo's reference; see README.md here).

    .venv/bin/python reference/data/make_lgps_1000K.py [--md]       # ~4 min; with --md ~20 min more (2 cores)

1. Oracle MD (``--md``; otherwise the positions come from ``tests/data/lgps_chgnet_md.npz``, run ``t1000``, which
   is the shipped run, made by ASE's Langevin): CHGNet 0.3.0 Langevin NVT of the library's 50-atom Li10GeP2S12 cell
   (Kamaya 2011), 1000 K, friction 0.01/fs, 2 fs step, 6000 steps (12 ps), a frame every 10 steps (20 fs), seed 1
   (``reference.reference_md.run_reference_md``; with ``--md`` in the students' engine, so a new realisation).
2. Every stored frame (601) labelled by a CHGNet 0.3.0 single point (``reference.oracles.Oracle("chgnet")``):
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
OUT = HERE / "Li10GeP2S12_chgnet_1000K.extxyz.gz"
TEMPERATURE_K, STEPS, STRIDE, DT_FS, SEED = 1000.0, 6000, 10, 2.0, 1


def positions(run_md: bool, work: Path):
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
    path = work / "lgps_1000K.h5"
    run_reference_md(atoms, Oracle("chgnet"), ReferencePlan.nvt(temperature_K=TEMPERATURE_K, steps=STEPS,
                     timestep_fs=DT_FS, stride=STRIDE, label_every=0, seed=SEED), path)
    traj = load_trajectory(path)
    return traj.positions, traj.cells[0], traj.numbers


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--md", action="store_true", help="run the oracle MD too (else its stored positions are used)")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    import gzip
    import tempfile

    from ase import Atoms
    from ase.io import write

    from reference.oracles import Oracle

    with tempfile.TemporaryDirectory() as tmp:
        x, cell, numbers = positions(args.md, Path(tmp))
    oracle = Oracle("chgnet")
    frames = []
    for k, pos in enumerate(x):
        atoms = oracle.label(Atoms(numbers=numbers, positions=pos, cell=cell, pbc=True))
        atoms.info = {"time_fs": k * STRIDE * DT_FS, "oracle": oracle.name, "temperature_K": TEMPERATURE_K}
        frames.append(atoms)
    with gzip.open(args.out, "wt", compresslevel=9) as fh:
        write(fh, frames, format="extxyz")
    print(f"{len(frames)} frames -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
