"""`matscreen md` (batched MLFF molecular dynamics) and `matscreen analyze` (verdict, D, sigma)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.errors import InputError

MD_EPILOG = """\
example:
  matscreen md --model lj --structure LGPS.cif --temperatures 800,1000 --replicas 2 --steps 200 \\
      --dt-fs 2 --protocol study --out runs/lgps
writes runs/lgps/<T>K_r<replica>.h5 (one HDF5 trajectory per system; ase.io.read works) and
runs/lgps/summary.json (each system's verdict and failure step).  Rerunning the same command
resumes from runs/lgps/checkpoint.pt; a larger --steps extends the run.
"""

ANALYZE_EPILOG = """\
example:
  matscreen analyze runs/lgps/800K_r0.h5 --species Li --json
prints one JSON line: diffusivity_cm2_s, diffusivity_err_cm2_s, conductivity_mS_cm,
conductivity_err_mS_cm, n_frames, verdict (+ rdf_mae with --reference REF.h5).
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("md", help="batched MD of one structure at several temperatures and replicas",
                              description="Run MD with a force field: every (temperature, replica) system in "
                                          "ONE batch, one model call per step.", epilog=MD_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model checkpoint file, or 'lj' for the analytic Lennard-Jones")
    p.add_argument("--structure", required=True, help="structure file ASE can read (CIF, POSCAR, extxyz)")
    p.add_argument("--temperatures", required=True, help="comma-separated target temperatures in K, e.g. 800,1000")
    p.add_argument("--replicas", type=int, default=1, help="independent replicas per temperature (default 1)")
    p.add_argument("--steps", type=int, default=None, help="MD steps (default: the protocol's length)")
    p.add_argument("--dt-fs", type=float, default=2.0, help="timestep in fs (default 2)")
    p.add_argument("--protocol", default="study", choices=["study", "nvt", "langevin", "nve"],
                   help="study: 100 K start, 5 ps velocity-scaling ramp, Nose-Hoover NVT (default)")
    p.add_argument("--ramp-fs", type=float, default=None, help="override the ramp length in fs")
    p.add_argument("--stride", type=int, default=10, help="steps between stored frames (default 10)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (default 500)")
    p.add_argument("--seed", type=int, default=0, help="base random seed (system k uses seed + k)")
    p.add_argument("--supercell", default="1,1,1", help="repeat the structure, e.g. 2,2,1")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--velocities", action="store_true", help="also store velocities")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run_md)

    a = subparsers.add_parser("analyze", help="verdict, diffusivity and conductivity of one trajectory",
                              description="Analyse an MD trajectory: stability verdict, MSD, D (GLS error), "
                                          "Nernst-Einstein sigma.", epilog=ANALYZE_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("trajectory", help="trajectory file written by `matscreen md` (.h5)")
    a.add_argument("--species", default="Li", help="diffusing species (default Li)")
    a.add_argument("--dt-fs", type=float, default=None, help="time between stored frames in fs (default: from file)")
    a.add_argument("--temperature", type=float, default=None, help="temperature in K (default: from file)")
    a.add_argument("--discard-fs", type=float, default=None,
                   help="equilibration to drop in fs (default: the protocol's, else 0)")
    a.add_argument("--reference", default=None, help="reference trajectory (.h5) for the RDF MAE")
    a.add_argument("--plots", default=None, help="directory for PNG plots (RDF, MSD)")
    a.add_argument("--json", action="store_true", help="print one JSON line (default: readable text)")
    a.set_defaults(func=run_analyze)


def _temperatures(text: str) -> list[float]:
    try:
        temps = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"--temperatures must be comma-separated numbers in K, got {text!r}") from None
    if not temps or any(t <= 0 for t in temps):
        raise InputError(f"--temperatures must be positive numbers in K, got {text!r}")
    return temps


def load_force_field(spec: str, device: str):
    """'lj' -> models.LennardJones; anything else -> models' checkpoint loader."""
    if spec.lower() == "lj":
        from models import LennardJones

        return LennardJones()
    path = Path(spec)
    if not path.exists():
        raise InputError(f"model checkpoint {spec} not found; give a checkpoint file or 'lj'")
    try:
        from models.checkpoint import load_model
    except ImportError:
        raise InputError("this installation cannot load model checkpoints yet; use --model lj") from None
    return load_model(path, device=device)


def run_md(args) -> int:
    import ase.io

    from md.protocol import Protocol
    from md.runner import BatchedMD, SystemSpec, default_device

    temps = _temperatures(args.temperatures)
    if args.replicas < 1:
        raise InputError(f"--replicas must be >= 1, got {args.replicas}")
    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps must be >= 1, got {args.steps}")
    try:
        atoms = ase.io.read(args.structure)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read structure {args.structure} ({type(exc).__name__}); give a CIF/POSCAR/extxyz file") from None
    try:
        reps = [int(x) for x in args.supercell.split(",")]
        assert len(reps) == 3 and min(reps) >= 1
    except (ValueError, AssertionError):
        raise InputError(f"--supercell must be three positive integers like 2,2,1, got {args.supercell!r}") from None
    atoms = atoms.repeat(reps)
    device = args.device or default_device()
    ff = load_force_field(args.model, device)
    overrides = dict(timestep_fs=args.dt_fs, stride=args.stride, checkpoint_every=args.checkpoint_every)
    if args.ramp_fs is not None:
        overrides["ramp_fs"] = args.ramp_fs
    protocol = Protocol.named(args.protocol, **overrides)
    if args.steps is not None:
        protocol = protocol.with_steps(args.steps)
    systems = []
    for t in temps:
        for r in range(args.replicas):
            systems.append(SystemSpec(name=f"{t:g}K_r{r}", atoms=atoms, temperature_K=t,
                                      seed=args.seed + len(systems), metadata={"replica": r}))
    meta = {"model": args.model, "structure": str(args.structure), "formula": atoms.get_chemical_formula()}
    runner = BatchedMD(ff, systems, protocol, args.out, device=device, write_velocities=args.velocities,
                       metadata=meta)
    results = runner.run(progress=lambda step, n: print(f"step {step}: {n} systems running", file=sys.stderr))
    for r in results:
        fail = "" if r.failure_step is None else f" at step {r.failure_step}"
        print(f"{r.name}: {r.verdict}{fail} ({r.n_frames} frames) -> {r.trajectory}")
    print(f"summary: {Path(args.out) / 'summary.json'}")
    return 0


def run_analyze(args) -> int:
    import numpy as np

    from analysis.diffusion import charge_of, diffusion, nernst_einstein_mS_cm
    from analysis.rdf import rdf
    from analysis.verdicts import judge
    from md.trajectory import TrajectoryReader

    with TrajectoryReader(args.trajectory) as r:
        steps = r.read("step")
        times = r.read("time_fs")
        data = {k: r.read(k) for k in ("positions", "unwrapped_positions", "cell", "temperature_K", "potential_energy")}
        numbers = r.numbers
        meta_dt = r.dt_fs
        target = r.temperature_K
        protocol = r.metadata.get("protocol", {})
    if len(times) > 1:
        gaps = np.diff(times)
        if not np.allclose(gaps, gaps[0], rtol=1e-6, atol=1e-9) or gaps[0] <= 0:
            raise InputError(f"{args.trajectory} has inconsistent time steps between frames "
                             f"({gaps.min():g} to {gaps.max():g} fs); analyse a trajectory with a constant stride")
        if args.dt_fs is not None and not np.isclose(args.dt_fs, gaps[0], rtol=1e-6):
            raise InputError(f"--dt-fs {args.dt_fs:g} disagrees with the file's {gaps[0]:g} fs between frames; "
                             "omit --dt-fs or fix it")
    dt = args.dt_fs if args.dt_fs is not None else meta_dt
    temperature = args.temperature if args.temperature is not None else (target if np.isfinite(target) else None)
    discard_fs = args.discard_fs if args.discard_fs is not None else float(protocol.get("discard_fs", 0.0))
    first = int(np.searchsorted(times - times[0], discard_fs - 1e-9))
    reference = None
    if args.reference:
        with TrajectoryReader(args.reference) as ref:
            reference = rdf(ref.read("positions"), ref.read("cell"), ref.numbers)
    verdict = judge(data["positions"], data["unwrapped_positions"], data["cell"], numbers, steps,
                    data["temperature_K"], data["potential_energy"], target_temperature_K=temperature,
                    reference=reference)
    unwrapped = data["unwrapped_positions"][first:]
    if len(unwrapped) < 20:
        raise InputError(f"after discarding {discard_fs:g} fs only {len(unwrapped)} frames remain; a diffusion fit "
                         f"needs at least 20 frames (at {dt:g} fs per frame: {discard_fs + 20 * dt:g} fs in all)")
    result = diffusion(unwrapped, numbers, dt, args.species, temperature)
    out = {"trajectory": str(args.trajectory), "species": args.species, "temperature_K": temperature,
           "dt_fs": dt, "n_frames": int(len(steps)), "n_frames_used": int(len(unwrapped)),
           "diffusivity_cm2_s": result.diffusivity_cm2_s, "diffusivity_err_cm2_s": result.diffusivity_err_cm2_s,
           "verdict": verdict.status, "failure_step": verdict.failure_step, "path_ok": result.path_ok}
    if temperature:
        volume = float(abs(np.linalg.det(data["cell"][-1])))
        charge = charge_of(args.species)
        sigma = nernst_einstein_mS_cm(result.diffusivity_cm2_s, result.n_atoms, volume, temperature, charge)
        ratio = sigma / result.diffusivity_cm2_s if result.diffusivity_cm2_s else 0.0
        out["conductivity_mS_cm"] = sigma
        out["conductivity_err_mS_cm"] = abs(ratio) * result.diffusivity_err_cm2_s
    else:
        out["conductivity_mS_cm"] = out["conductivity_err_mS_cm"] = None
    if reference is not None:
        from analysis.rdf import rdf_mae

        mine = rdf(data["positions"], data["cell"], numbers, r_max_A=reference.r_max_A, n_bins=len(reference.r_A))
        out["rdf_mae"] = verdict.evidence.get("rdf_mae", rdf_mae(mine, reference))
    out["evidence"] = verdict.evidence
    if args.plots:
        from analysis.plots import plot_msd, plot_rdf

        plot_msd(result, Path(args.plots) / "msd.png")
        plot_rdf(rdf(data["positions"][first:], data["cell"][first:], numbers), Path(args.plots) / "rdf.png", reference)
    if args.json:
        print(json.dumps(out, default=float))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return 0
