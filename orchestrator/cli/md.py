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
examples:
  matscreen analyze runs/lgps/800K_r0.h5 --species Li --json
  matscreen analyze XDATCAR.gz --dt-fs 2 --temperature 1000 --reference aimd_1000K/vasprun.xml --json
  matscreen analyze dump.lammpstrj --topology data.lmp --dt-fs 20 --temperature 900
prints one JSON line: diffusivity_cm2_s, diffusivity_err_cm2_s, conductivity_mS_cm,
conductivity_err_mS_cm, n_frames, verdict (+ rdf_mae with --reference REF).
TRAJ and REF: the service's HDF5 or any trajectory ASE reads (extxyz/xyz, XDATCAR, vasprun.xml,
OUTCAR, .traj, LAMMPS dump + --topology; .gz/.bz2/.xz too).  Positions are unwrapped; --dt-fs is
required when the file does not record the time between frames (vasprun.xml and OUTCAR do: POTIM).
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
    a.add_argument("trajectory", help="trajectory: `matscreen md` HDF5 (.h5) or any format ASE reads (see below)")
    a.add_argument("--species", default="Li", help="diffusing species (default Li)")
    a.add_argument("--dt-fs", type=float, default=None,
                   help="time between stored frames in fs (default: from the file; required when it has none)")
    a.add_argument("--temperature", type=float, default=None, help="temperature in K (default: from the file)")
    a.add_argument("--discard-fs", type=float, default=None,
                   help="equilibration to drop in fs, from the trajectory and the reference "
                        "(default: the protocol's, else 0)")
    a.add_argument("--format", default=None, help="ASE format name of TRAJ (default: from its name or content)")
    a.add_argument("--topology", default=None, help="LAMMPS data file naming the elements of a dump's atom types")
    a.add_argument("--reference", default=None,
                   help="reference trajectory (any format, e.g. your AIMD) for the structure and dynamics checks")
    a.add_argument("--reference-temperature", type=float, default=None,
                   help="the reference's target temperature in K (default: its file's thermostat setting, else "
                        "--temperature); the structure and dynamics checks compare runs at one temperature")
    a.add_argument("--reference-dt-fs", type=float, default=None,
                   help="time between the reference's frames in fs (default: from its file, else --dt-fs)")
    a.add_argument("--reference-format", default=None, help="ASE format name of REF (default: from its name)")
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
    from models.checkpoint import load_model

    return load_model(path, device=device)


def run_md(args) -> int:
    from md.protocol import Protocol
    from md.runner import default_device, run_temperatures
    from reference.structures import structure_atoms

    temps = _temperatures(args.temperatures)
    if args.replicas < 1:
        raise InputError(f"--replicas must be >= 1, got {args.replicas}")
    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps must be >= 1, got {args.steps}")
    atoms = structure_atoms(args.structure)
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
    meta = {"model": args.model, "structure": str(args.structure), "formula": atoms.get_chemical_formula()}
    results = run_temperatures(ff, atoms, temps, args.replicas, protocol, args.out, seed=args.seed, device=device,
                               metadata=meta, write_velocities=args.velocities,
                               progress=lambda step, n: print(f"step {step}: {n} systems running", file=sys.stderr))
    for r in results:
        fail = "" if r.failure_step is None else f" at step {r.failure_step}"
        print(f"{r.name}: {r.verdict}{fail} ({r.n_frames} frames) -> {r.trajectory}")
    print(f"summary: {Path(args.out) / 'summary.json'}")
    return 0


def run_analyze(args) -> int:
    """Verdict (the campaign's judge), D and sigma (the campaign's transport) of one trajectory."""
    from dataclasses import replace

    import numpy as np
    from ase.data import atomic_numbers, chemical_symbols

    from analysis.diffusion import MIN_FIT_FRAMES
    from analysis.transport import transport
    from analysis.verdicts import judge, structure_rdf, window_rdf
    from md.trajectory import load_trajectory

    traj = load_trajectory(args.trajectory, dt_fs=args.dt_fs, temperature_K=args.temperature, fmt=args.format,
                           topology=args.topology)
    if args.discard_fs is not None:
        if args.discard_fs < 0:
            raise InputError(f"--discard-fs must be >= 0 fs, got {args.discard_fs:g}")
        traj = replace(traj, discard_fs=args.discard_fs)
    present = sorted({chemical_symbols[z] for z in traj.numbers})
    if args.species not in atomic_numbers or atomic_numbers[args.species] not in traj.numbers:
        raise InputError(f"{args.trajectory} has no {args.species} atoms (it has {', '.join(present)}); "
                         "pass --species with one of them")
    if len(traj.production()) < MIN_FIT_FRAMES:
        raise InputError(f"{args.trajectory}: {len(traj.production())} frames after the equilibration; a diffusion fit "
                         f"needs at least {MIN_FIT_FRAMES}: give a longer trajectory or a smaller --discard-fs")
    reference = _analyze_reference(args, traj) if args.reference else None
    verdict = judge(traj, reference)
    notes: list[str] = []
    if traj.temperature_K is None:
        from analysis.checks import diffusion_convergence

        fit, _ = diffusion_convergence(traj, args.species)
        if not (np.isfinite(fit.diffusivity_cm2_s) and np.isfinite(fit.diffusivity_err_cm2_s)):
            raise InputError(f"{args.trajectory}: no finite diffusion fit; give a longer trajectory")
        d, d_err, used, path_ok, sigma, sigma_err = (fit.diffusivity_cm2_s, fit.diffusivity_err_cm2_s,
                                                     len(traj.production()), None, None, None)
        notes.append("no temperature: conductivity needs one (Nernst-Einstein); pass --temperature")
    else:
        result = transport([traj], args.species)
        if not result.points:
            raise InputError(f"{args.trajectory}: {result.notes[0] if result.notes else 'no diffusion fit'}")
        point, run = result.points[0], result.runs[0]
        d, d_err, used, path_ok = point.diffusivity_cm2_s, point.diffusivity_err_cm2_s, run.n_frames, run.path_ok
        sigma, sigma_err = point.conductivity_mS_cm, point.conductivity_err_mS_cm
        notes += result.notes
    out = {"trajectory": str(args.trajectory), "species": args.species, "temperature_K": traj.temperature_K,
           "dt_fs": traj.dt_fs, "n_frames": len(traj), "n_frames_used": used,
           "diffusivity_cm2_s": d, "diffusivity_err_cm2_s": d_err,
           "conductivity_mS_cm": sigma, "conductivity_err_mS_cm": sigma_err,
           "verdict": verdict.status, "failure_step": verdict.failure_step, "path_ok": path_ok,
           "checks": verdict.evidence["checks"], "notes": notes}
    if reference is not None:
        out["reference_temperature_K"] = reference.traj.temperature_K
        out["rdf_mae"] = verdict.evidence.get("rdf_mae")
    out["evidence"] = verdict.to_dict()["evidence"]
    if args.plots:
        from analysis.plots import plot_rdf, plot_transport

        if traj.temperature_K is not None:
            plot_transport(result, args.plots)
        plot_rdf(window_rdf(structure_rdf(traj)), Path(args.plots) / "rdf.png",
                 window_rdf(reference.rdf) if reference is not None else None)
    if args.json:
        print(json.dumps(out, default=float))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return 0


def _analyze_reference(args, traj):
    """The reference profile of ``--reference``: at its target temperature (``--reference-temperature``, else
    its file's setting, else the trajectory's); a reference the checks cannot compare is an ``InputError``."""
    from dataclasses import replace

    import numpy as np

    from analysis.diffusion import MIN_FIT_FRAMES
    from analysis.verdicts import reference_profile
    from common.formats import MissingTimeStep
    from md.trajectory import load_trajectory

    kw = {"fmt": args.reference_format, "topology": args.topology, "temperature_K": args.reference_temperature}
    try:
        ref = load_trajectory(args.reference, dt_fs=args.reference_dt_fs, **kw)
    except MissingTimeStep:          # a reference without its own time between frames takes --dt-fs
        if args.dt_fs is None:
            raise
        ref = load_trajectory(args.reference, dt_fs=args.dt_fs, **kw)
    if args.discard_fs is not None:
        ref = replace(ref, discard_fs=args.discard_fs)
    if ref.temperature_K is None:
        ref = replace(ref, temperature_K=traj.temperature_K)
    if not np.array_equal(np.sort(ref.numbers), np.sort(traj.numbers)):
        raise InputError(f"{args.reference} is not the same material as {args.trajectory}; give a reference of "
                         "the same cell and composition")
    if ref.temperature_K is None:
        raise InputError(f"neither {args.trajectory} nor {args.reference} records a target temperature, and the "
                         "structure and dynamics checks compare runs at one; pass --temperature (and "
                         "--reference-temperature if the reference's differs)")
    if traj.temperature_K is not None and abs(ref.temperature_K - traj.temperature_K) > 1e-6:
        raise InputError(f"{args.reference} is at {ref.temperature_K:g} K and {args.trajectory} at "
                         f"{traj.temperature_K:g} K; the structure and dynamics checks compare runs at one temperature: "
                         "give a reference at the same temperature (or --reference-temperature / --temperature "
                         "where a file records the wrong one)")
    if len(ref.production()) < MIN_FIT_FRAMES:
        raise InputError(f"{args.reference}: {len(ref.production())} frames after the equilibration; the checks need "
                         f"at least {MIN_FIT_FRAMES}: give a longer reference or a smaller --discard-fs")
    return reference_profile(ref)
