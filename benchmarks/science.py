"""Benchmark: the study's Table 2 in miniature, with the offline oracle standing in for AIMD.

Direct oracle MD of Li10GeP2S12 at three or more temperatures, and a student force field at the same
temperatures with the same protocol (Langevin NVT, 2 fs, a frame every 20 fs).  Both go through the
service's one transport path (``analysis.transport.transport``).  Printed side by side:

* D(T) with errors;
* Ea;
* log10 σ(300 K), with the temperatures each side flags too_short;
* the cost per MD step of each;
* the measured value of LGPS.

Targets (printed, never asserted):

* the student within 0.5 log units of the oracle's σ(300 K);
* Ea within 0.05 eV;
* the student at least 10x cheaper per step.

    .venv/bin/python benchmarks/science.py --student .matscreen/store/demo/models/<candidate>/r0 [--json]
        [--temperatures 1000,1150,1300] [--ps 3.5] [--out DIR]

``--student``: a folder of ensemble member checkpoints (``member*.pt``, e.g. the demo's last round).
Oracle runs already in ``--out`` (``oracle/<T>K.h5``, e.g. the CPU paper benchmark's
``reference/Li10GeP2S12_<T>K.h5``) are reused, so a second student can be compared cheaply; the
oracle's cost per step is then timed on 20 steps.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]   # `import md` is the package
sys.path.insert(0, str(_HERE.parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default=None, help="folder with the student ensemble's member*.pt (required)")
    p.add_argument("--temperatures", default="1000,1150,1300", help="K, comma separated (3 or more)")
    p.add_argument("--ps", type=float, default=3.5, help="simulated time per temperature (ps)")
    p.add_argument("--equilibration-ps", type=float, default=0.5)
    p.add_argument("--out", default="outputs/science", help="trajectories go here (oracle runs are reused)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    if args.student is None:       # `make bench` runs every script bare: say what this one needs
        print("benchmarks/science.py: give --student DIR (a trained ensemble, e.g. the demo's "
              "<store>/demo/models/<candidate>/r0); nothing run")
        return 0
    import torch
    from pymatgen.io.ase import AseAtomsAdaptor

    from analysis.transport import transport
    from md.protocol import Protocol
    from md.runner import run_temperatures
    from md.trajectory import load_trajectory
    from models import load_ensemble
    from reference.oracles import Oracle
    from reference.reference_md import ReferenceMDProtocol, run_reference_md
    from reference.structures import known_values, library_structure

    torch.set_num_threads(1)
    temps = [float(t) for t in args.temperatures.split(",")]
    steps, dt, stride = int(round(args.ps * 1000 / 2.0)), 2.0, 10
    discard = args.equilibration_ps * 1000.0
    out = Path(args.out)
    atoms = AseAtomsAdaptor.get_atoms(library_structure("Li10GeP2S12").structure)
    oracle = Oracle("chgnet")
    oracle_runs, oracle_s = [], []
    for i, t in enumerate(temps):
        path = out / "oracle" / f"{t:g}K.h5"
        if not path.exists():
            t0 = time.perf_counter()
            run_reference_md(atoms, oracle, ReferenceMDProtocol(temperature_K=t, steps=steps, timestep_fs=dt,
                                                                stride=stride, label_every=0, seed=args.seed + i,
                                                                discard_fs=discard), path)
            oracle_s.append((time.perf_counter() - t0) / steps)
        oracle_runs.append(load_trajectory(path))
    if not oracle_s:      # every oracle run reused: time 20 oracle steps for the cost column
        t0 = time.perf_counter()
        run_reference_md(atoms, oracle, ReferenceMDProtocol(temperature_K=temps[0], steps=20, timestep_fs=dt,
                                                            stride=stride, label_every=0, seed=args.seed),
                         out / "oracle_timing.h5")
        oracle_s.append((time.perf_counter() - t0) / 20)
    members = sorted(str(m) for m in Path(args.student).glob("member*.pt"))
    if not members:
        print(f"no member*.pt in {args.student}; give the folder of a trained ensemble", file=sys.stderr)
        return 2
    protocol = Protocol(timestep_fs=dt, total_fs=steps * dt, ramp_fs=0.0, discard_fs=discard,
                        thermostat="langevin", stride=stride)
    t0 = time.perf_counter()
    results = run_temperatures(load_ensemble(members), atoms, temps, 1, protocol, out / "student", seed=args.seed,
                               device="cpu")
    student_s = (time.perf_counter() - t0) / steps / len(temps)          # per system-step
    student_runs = [load_trajectory(r.trajectory) for r in results if r.verdict == "stable"]
    sides = {"oracle": transport(oracle_runs, "Li").to_dict(), "student": transport(student_runs, "Li").to_dict()}
    o, s = sides["oracle"], sides["student"]
    figures = {"temperatures_K": temps, "ps_per_temperature": args.ps, "oracle": o, "student": s,
               "oracle_s_per_step": sum(oracle_s) / len(oracle_s) if oracle_s else None,
               "student_s_per_system_step": student_s,
               "student_unstable_K": [r.temperature_K for r in results if r.verdict != "stable"],
               "known": known_values("Li10GeP2S12")}
    if "log10_sigma_300K" in o and "log10_sigma_300K" in s:
        figures["delta_log10_sigma_300K"] = s["log10_sigma_300K"] - o["log10_sigma_300K"]
        figures["delta_Ea_eV"] = s["activation_energy_eV"] - o["activation_energy_eV"]
    if figures["oracle_s_per_step"]:
        figures["speedup"] = figures["oracle_s_per_step"] / student_s
    if args.json:
        print(json.dumps(figures, default=float))
        return 0
    print(f"Li10GeP2S12, {args.ps:g} ps per temperature, Langevin NVT (oracle: CHGNet 0.3.0; student: {args.student})")
    print(f"{'T (K)':>8} {'D oracle (cm2/s)':>24} {'D student (cm2/s)':>24}")
    for i, t in enumerate(temps):
        def cell(side):
            if t not in side.get("temperatures_K", []):
                return "-"
            k = side["temperatures_K"].index(t)
            flag = "" if side["converged"][k] else " too_short"
            return f"{side['diffusivity_cm2_s'][k]:.2e} ± {side['diffusivity_cm2_s_err'][k]:.1e}{flag}"
        print(f"{t:8g} {cell(o):>24} {cell(s):>24}")
    for name, side in (("oracle", o), ("student", s)):
        if "log10_sigma_300K" in side:
            print(f"{name:8}: Ea {side['activation_energy_eV']:.3f} ± {side['activation_energy_eV_err']:.3f} eV, "
                  f"log10 σ300K {side['log10_sigma_300K']:.2f} ± {side['log10_sigma_300K_err']:.2f} (mS/cm), "
                  f"extrapolation {side['extrapolation_ratio']:.1f}x the fitted 1/T range")
        else:
            print(f"{name:8}: no Arrhenius fit ({'; '.join(side['notes'])})")
    if "delta_log10_sigma_300K" in figures:
        print(f"student - oracle: Δlog10 σ300K {figures['delta_log10_sigma_300K']:+.2f} (target |Δ| <= 0.5), "
              f"ΔEa {figures['delta_Ea_eV']:+.3f} eV (target |Δ| <= 0.05)")
    if "speedup" in figures:
        print(f"cost per step: oracle {figures['oracle_s_per_step'] * 1e3:.0f} ms, student "
              f"{student_s * 1e3:.1f} ms per system-step: {figures['speedup']:.0f}x (target >= 10x)")
    for v in figures["known"]:
        print(f"known: {v['quantity']} = {v['value']} ({v['method']}; {v['source']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
