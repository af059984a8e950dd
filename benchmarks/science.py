"""Benchmark: the study's Table 2 in miniature, with the offline oracle standing in for AIMD.

Direct oracle MD of Li10GeP2S12 at three or more temperatures, and a student force field at the same
temperatures with the same protocol (Langevin NVT, 2 fs, a frame every 20 fs).  Both go through the
service's one transport path (``analysis.transport.transport``).  Printed side by side:

* D(T) with errors, and at each temperature the dynamics check's answer on the student's D against the
  oracle's (log10 ratio against the judge's tolerance, a factor 2);
* Ea;
* log10 σ(300 K), with the temperatures each side flags too_short;
* the cost per MD step of each;
* the measured value of LGPS.

Targets (printed, never asserted):

* the student within 0.5 log units of the oracle's σ(300 K);
* Ea within 0.05 eV;
* the student at least 10x cheaper per step.

Each difference is printed with its combined error and judged like the service's checks
(``analysis.checks.decide``, α = 0.05): ``met`` when its 90 % interval lies inside the target, ``missed``
when it is significant and outside, ``undecided`` when the runs are too short to tell.

    .venv/bin/python benchmarks/science.py --student .matscreen/store/demo/models/<candidate>/r0 [--json]
        [--temperatures 1000,1150,1300] [--ps 3.5] [--replicas 1] [--out DIR] [--cost-only [--rounds 3]]
        [--device cpu|cuda] [--jobs N] [--supercell 1,1,1]

``--student``: a folder of ensemble member checkpoints (``member*.pt``, e.g. the demo's last round).
Both sides run on the campaign's roles and step runner (``orchestrator.campaign.runner``): oracle MD
(``oracle/<ps>ps/<T>K_r<k>.h5``) in the students' engine, student MD, transport by the judge role, every
run recorded in ``<out>/ledger.sqlite``.  A rerun with the same ``--out`` reuses the recorded runs, so a
second student can be compared cheaply; the oracle's cost per step is then timed on 100 steps, the
student's on 200 steps of the same batch of temperatures x replicas.

``--cost-only`` runs no science: it times 100 oracle steps and 200 student steps (the batch of temperatures x
replicas, after 20 warm-up steps) in turn, ``--rounds`` times, and prints each round's ratio and their median.  Interleaving matters on
a shared machine, whose load moves either figure by ±30 % within minutes.

``--device cuda`` runs both sides on the GPU (the oracle through CHGNet's own device option, the student's
batch through the MD engine).  ``--jobs N`` runs the missing oracle runs N at a time, each in its own
Ray actor (a private local Ray) with one torch thread (a 50-atom CHGNet step leaves most of a GPU or a core idle); the oracle's
cost is then each run's own wall time per step, so the aggregate throughput is about N / that.
``--supercell a,b,c`` repeats the 50-atom cell on both sides: more Li per step at a cost per step that
grows less than the atom count on a GPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]   # `import md` is the package
sys.path.insert(0, str(_HERE.parent))

ORACLE = "chgnet"          # the offline oracle standing in for AIMD (each --jobs process loads its own)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default=None, help="folder with the student ensemble's member*.pt (required)")
    p.add_argument("--temperatures", default="1000,1150,1300", help="K, comma separated (3 or more)")
    p.add_argument("--ps", default="3.5", help="simulated time per run (ps): one value, or one per temperature "
                                             "(comma separated; the lowest temperature needs the longest runs)")
    p.add_argument("--equilibration-ps", type=float, default=0.5)
    p.add_argument("--replicas", type=int, default=1, help="independent runs per temperature, each side")
    p.add_argument("--out", default="outputs/science", help="trajectories go here (oracle runs are reused)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--cost-only", action="store_true", help="only time both sides per MD step, interleaved")
    p.add_argument("--rounds", type=int, default=3, help="with --cost-only: timing rounds (median reported)")
    p.add_argument("--device", default="cpu", help="cpu or cuda: where both oracle and student run")
    p.add_argument("--jobs", type=int, default=1, help="oracle runs at a time, one process each")
    p.add_argument("--supercell", default="1,1,1", help="repeats of the 50-atom LGPS cell along a,b,c")
    args = p.parse_args(argv)

    if args.student is None:       # `make bench` runs every script bare: say what this one needs
        print("benchmarks/science.py: give --student DIR (a trained ensemble, e.g. the demo's "
              "<store>/demo/models/<candidate>/r0); nothing run")
        return 0
    import torch
    from pymatgen.io.ase import AseAtomsAdaptor

    from analysis.checks import INCONCLUSIVE, MISMATCH, PASS, decide, log10_ratio
    from analysis.verdicts import VerdictThresholds
    from md.protocol import Protocol
    from models import load_ensemble
    from reference.oracles import Oracle
    from reference.structures import known_values, library_structure

    torch.set_num_threads(1)
    temps = [float(t) for t in args.temperatures.split(",")]
    lengths_ps = [float(x) for x in args.ps.split(",")]
    lengths_ps = lengths_ps * len(temps) if len(lengths_ps) == 1 else lengths_ps
    if len(lengths_ps) != len(temps):
        print(f"--ps: give one length or one per temperature ({len(temps)}), got {args.ps!r}", file=sys.stderr)
        return 2
    try:
        repeat = tuple(int(x) for x in args.supercell.split(","))
    except ValueError:
        repeat = ()
    if len(repeat) != 3 or min(repeat) < 1:
        print(f"--supercell: give three positive integers such as 2,2,1, got {args.supercell!r}", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"--jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda: torch sees no GPU here; use --device cpu", file=sys.stderr)
        return 2
    dt, stride = 2.0, 10
    n_steps = [int(round(ps * 1000 / dt)) for ps in lengths_ps]
    discard = args.equilibration_ps * 1000.0
    out = Path(args.out)
    atoms = AseAtomsAdaptor.get_atoms(library_structure("Li10GeP2S12").structure).repeat(repeat)
    members = sorted(str(m) for m in Path(args.student).glob("member*.pt"))
    if not members:               # checked before any oracle MD is run
        print(f"no member*.pt in {args.student}; give the folder of a trained ensemble", file=sys.stderr)
        return 2
    ensemble = load_ensemble(members, device=args.device)

    def protocol(steps: int) -> Protocol:
        return Protocol(timestep_fs=dt, total_fs=steps * dt, ramp_fs=0.0, discard_fs=discard, thermostat="langevin",
                        stride=stride)

    if args.cost_only:
        return cost_only(args, atoms, Oracle(ORACLE, device=args.device), ensemble, temps, protocol)
    ran = run_both(args, atoms, members, ensemble, temps, n_steps, lengths_ps, protocol, dt, stride, discard)
    if isinstance(ran, int):
        return ran
    o, s, oracle_s, student_s, results, oracle_name = ran
    figures = {"temperatures_K": temps, "ps_per_run": lengths_ps, "replicas": args.replicas, "atoms": len(atoms),
               "device": args.device, "oracle_jobs": args.jobs, "oracle": o, "student": s,
               "oracle_s_per_step": sum(oracle_s) / len(oracle_s) if oracle_s else None,
               "student_s_per_system_step": student_s,
               "student_unstable_K": [r.temperature_K for r in results if r.verdict != "stable"],
               "known": known_values("Li10GeP2S12")}
    if "log10_sigma_300K" in o and "log10_sigma_300K" in s:
        # a target is met only when the difference's 90 % interval lies inside it, missed when the difference
        # is significant and outside it, and undecided otherwise (analysis.checks.decide, as the judge does)
        for key, value, tolerance in (("log10_sigma_300K", "log10_sigma_300K", 0.5),
                                      ("Ea_eV", "activation_energy_eV", 0.05)):
            delta = s[value] - o[value]
            err = (s[f"{value}_err"] ** 2 + o[f"{value}_err"] ** 2) ** 0.5
            figures[f"delta_{key}"], figures[f"delta_{key}_err"] = delta, err
            figures[f"target_{key}"] = {PASS: "met", MISMATCH: "missed", INCONCLUSIVE: "undecided"}[
                decide(delta, err, tolerance, 0.05)]
    # the dynamics check's question at every temperature: is the student's D within a factor 2 of the oracle's?
    rules = VerdictThresholds()
    figures["log10_D_ratio"], figures["log10_D_ratio_err"], figures["D_check"] = [], [], []
    for t in temps:
        if t in o.get("temperatures_K", []) and t in s.get("temperatures_K", []):
            i, j = o["temperatures_K"].index(t), s["temperatures_K"].index(t)
            ratio, err = log10_ratio(s["diffusivity_cm2_s"][j], s["diffusivity_cm2_s_err"][j],
                                     o["diffusivity_cm2_s"][i], o["diffusivity_cm2_s_err"][i])
            status = decide(ratio, err, rules.dynamics_log10_tolerance, rules.false_alarm_rate)
        else:
            ratio, err, status = float("nan"), float("nan"), INCONCLUSIVE
        figures["log10_D_ratio"].append(ratio)
        figures["log10_D_ratio_err"].append(err)
        figures["D_check"].append(status)
    if figures["oracle_s_per_step"]:
        figures["speedup"] = figures["oracle_s_per_step"] / student_s
    if args.json:
        print(json.dumps(figures, default=float))
        return 0
    print(f"Li10GeP2S12 ({len(atoms)} atoms), {args.replicas} x {'/'.join(f'{x:g}' for x in lengths_ps)} ps per "
          f"temperature, Langevin NVT, on {args.device} (oracle: {oracle_name}, {args.jobs} at a time; "
          f"student: {args.student})")
    print(f"{'T (K)':>8} {'D oracle (cm2/s)':>24} {'D student (cm2/s)':>24} {'log10 ratio (check)':>26}")
    for i, t in enumerate(temps):
        def cell(side):
            if t not in side.get("temperatures_K", []):
                return "-"
            k = side["temperatures_K"].index(t)
            flag = "" if side["converged"][k] else " too_short"
            return f"{side['diffusivity_cm2_s'][k]:.2e} ± {side['diffusivity_cm2_s_err'][k]:.1e}{flag}"
        check = f"{figures['log10_D_ratio'][i]:+.2f} ± {figures['log10_D_ratio_err'][i]:.2f} ({figures['D_check'][i]})"
        print(f"{t:8g} {cell(o):>24} {cell(s):>24} {check:>26}")
    for name, side in (("oracle", o), ("student", s)):
        if "log10_sigma_300K" in side:
            print(f"{name:8}: Ea {side['activation_energy_eV']:.3f} ± {side['activation_energy_eV_err']:.3f} eV, "
                  f"log10 σ300K {side['log10_sigma_300K']:.2f} ± {side['log10_sigma_300K_err']:.2f} (mS/cm), "
                  f"extrapolation {side['extrapolation_ratio']:.1f}x the fitted 1/T range")
        else:
            print(f"{name:8}: no Arrhenius fit ({'; '.join(side['notes'])})")
    if "delta_log10_sigma_300K" in figures:
        print(f"student - oracle: Δlog10 σ300K {figures['delta_log10_sigma_300K']:+.2f} ± "
              f"{figures['delta_log10_sigma_300K_err']:.2f} (target |Δ| <= 0.5: {figures['target_log10_sigma_300K']}), "
              f"ΔEa {figures['delta_Ea_eV']:+.3f} ± {figures['delta_Ea_eV_err']:.3f} eV (target |Δ| <= 0.05: "
              f"{figures['target_Ea_eV']})")
    if "speedup" in figures:
        print(f"cost per step: oracle {figures['oracle_s_per_step'] * 1e3:.0f} ms (each of {args.jobs} at a time), student ({len(members)} members, "
              f"{len(temps) * args.replicas} systems batched) {student_s * 1e3:.1f} ms per system-step: "
              f"{figures['speedup']:.1f}x (target >= 10x)")
    for v in figures["known"]:
        print(f"known: {v['quantity']} = {v['value']} ({v['method']}; {v['source']})")
    return 0


def run_both(args, atoms, members, ensemble, temps, n_steps, lengths_ps, protocol, dt, stride, discard):
    """Oracle and student MD of every temperature on the campaign's roles and step runner; returns (oracle
    transport record, student transport record, oracle seconds per step list, student seconds per
    system-step, student SystemResults, oracle name), or an int exit status when the oracle failed."""
    from actors import requests as rq
    from common.vocabulary import STABLE
    from md.monitors import MonitorConfig
    from orchestrator.campaign.runner import Roles, StepRunner
    from orchestrator.campaign.spec import validate
    from orchestrator.campaign.state import Ledger
    from reference.oracles import Oracle
    from reference.reference_md import ReferencePlan, ReferenceRun
    from reference.structures import write_structure

    out = Path(args.out)
    # the science runs on the campaign's roles and step runner: requests answered by the ReferenceWorker
    # (oracle MD, --jobs at a time as Ray actors), the MDWorker and the StabilityJudge; resumed from the ledger
    spec = validate({"name": "science", "oracle": {"name": ORACLE, "device": args.device},
                     "resources": {"reference_workers": args.jobs, "cpus_per_oracle": 1, "md_workers": 1,
                                   "cpus_per_md_worker": 1, "cpus_per_trainer": 1}})
    if args.jobs > 1:
        from orchestrator.ops.ray_runtime import ray_init

        ray_init(num_cpus=Roles.cpus(spec))
    roles = Roles(spec, use_ray=args.jobs > 1)
    steps = StepRunner(Ledger(out / "ledger.sqlite"), roles)
    structure = write_structure(atoms, out / "structure.extxyz")
    try:
        keyed = {}
        for i, (t, n, ps) in enumerate(zip(temps, n_steps, lengths_ps)):
            for k in range(args.replicas):
                name = f"{ps:g}ps/{t:g}K_r{k}"
                keyed[name] = (f"oracle:{name}", rq.ReferenceMD(
                    structure, ReferencePlan.nvt(temperature_K=t, steps=n, timestep_fs=dt, stride=stride, label_every=0,
                                                 seed=args.seed + i + 1000 * k, discard_fs=discard),
                    str(out / "oracle" / f"{name}.h5"), str(out / "store"), f"science-{t:g}K-r{k}", f"science/{name}",
                    MonitorConfig()))
        todo = [k for k, (key, _) in keyed.items() if steps.done(key, ReferenceRun) is None]
        t0 = time.perf_counter()
        refs = steps.map(keyed)
        failed = {k: r.error for k, r in refs.items() if r.error}
        if failed:
            print(f"oracle MD failed: {failed}", file=sys.stderr)
            return 1
        wall = time.perf_counter() - t0       # runs go --jobs at a time: each run's own seconds per step
        oracle_s = [wall * min(args.jobs, len(todo)) / sum(keyed[k][1].plan.steps for k in todo)] if todo else []
        if not oracle_s:      # every oracle run reused: time 100 oracle steps for the cost column
            oracle_s.append(oracle_seconds_per_step(atoms, Oracle(ORACLE, device=args.device), temps[0], args.seed,
                                                    out / "oracle_timing.h5"))
        groups = {n: [t for t, m in zip(temps, n_steps) if m == n] for n in sorted(set(n_steps))}
        batches = {n: (f"student:{n * dt / 1000:g}ps", rq.RunMD(members, structure, ts, args.replicas, protocol(n),
                                                                MonitorConfig(), args.seed,
                                                                str(out / "student" / f"{n * dt / 1000:g}ps"),
                                                                device=args.device))
                   for n, ts in groups.items()}
        reused = all(steps.done(key, rq.Runs) is not None for key, _ in batches.values())
        t0 = time.perf_counter()
        results = [r for runs in steps.map(batches).values() for r in runs.runs]
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        system_steps = sum(n * len(ts) * args.replicas for n, ts in groups.items())
        student_s = (time.perf_counter() - t0) / system_steps                # per system-step
        if reused:     # every student run reused: time 200 steps of the same batch
            student_s = student_seconds_per_system_step(ensemble, atoms, temps, args.replicas, protocol, args.seed,
                                                        device=args.device)
        oracle_side = roles.call(rq.TransportRequest([r.trajectory for r in refs.values()], "Li")).transport
        student_side = roles.call(rq.TransportRequest([r.trajectory for r in results if r.verdict == STABLE],
                                                      "Li")).transport
    finally:
        roles.close()
        steps.ledger.close()
    return oracle_side, student_side, oracle_s, student_s, results, refs[next(iter(refs))].oracle


def oracle_seconds_per_step(atoms, oracle, temperature_K: float, seed: int, path, steps: int = 100) -> float:
    """Wall seconds per step of ``steps`` steps of direct oracle MD (Langevin, 2 fs), written to ``path``."""
    from reference.reference_md import ReferencePlan, run_reference_md

    t0 = time.perf_counter()
    run_reference_md(atoms, oracle, ReferencePlan.nvt(temperature_K=temperature_K, steps=steps, timestep_fs=2.0,
                                                        stride=10, label_every=0, seed=seed), path)
    return (time.perf_counter() - t0) / steps


def student_seconds_per_system_step(ensemble, atoms, temps, replicas: int, protocol, seed: int,
                                    steps: int = 200, device: str = "cpu") -> float:
    """Wall seconds per system-step of ``steps`` steps of the batch ``temps`` x ``replicas``, after 20 warm-up
    steps (``protocol(n)``: the run's protocol for n steps; the trajectories go to a temporary folder)."""
    from md.runner import run_temperatures

    with tempfile.TemporaryDirectory() as tmp:
        run_temperatures(ensemble, atoms, temps[:1], 1, protocol(20), Path(tmp) / "warm", seed=seed, device=device)
        t0 = time.perf_counter()
        run_temperatures(ensemble, atoms, temps, replicas, protocol(steps), Path(tmp) / "timed", seed=seed,
                         device=device)
        return (time.perf_counter() - t0) / steps / (len(temps) * replicas)


def cost_only(args, atoms, oracle, ensemble, temps, protocol) -> int:
    """Oracle seconds per step and student seconds per system-step, timed in turn ``args.rounds`` times."""
    import statistics

    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            oracle_s = oracle_seconds_per_step(atoms, oracle, temps[0], args.seed, Path(tmp) / f"oracle{r}.h5")
            student_s = student_seconds_per_system_step(ensemble, atoms, temps, args.replicas, protocol, args.seed,
                                                        device=args.device)
            rounds.append({"oracle_s_per_step": oracle_s, "student_s_per_system_step": student_s,
                           "speedup": oracle_s / student_s})
    systems = len(temps) * args.replicas
    figures = {"members": len(ensemble), "systems_batched": systems, "rounds": rounds,
               "median_speedup": statistics.median(r["speedup"] for r in rounds)}
    if args.json:
        print(json.dumps(figures))
        return 0
    for k, r in enumerate(rounds):
        print(f"round {k}: oracle {r['oracle_s_per_step'] * 1e3:.0f} ms per step, student ({len(ensemble)} members, "
              f"{systems} systems batched) {r['student_s_per_system_step'] * 1e3:.1f} ms per system-step: "
              f"{r['speedup']:.1f}x")
    print(f"median {figures['median_speedup']:.1f}x (target >= 10x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
