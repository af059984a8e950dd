"""Benchmark: is D's reported error honest on real MD?  Replicas of one student at one temperature.

Independent replicas (same structure, protocol and force field, different seeds) are the truth test of a
per-run error: their D scatter is what each run's error claims to be.  The script runs ``--replicas``
systems in one batch (md.runner.run_temperatures, the campaign's protocol), then prints per replica the
D(Li), its random-walk GLS error, the reported error (GLS x the block Birge ratio, analysis.diffusion) and
the halves z of the convergence test; and overall the replica scatter against the median of each error,
and how many replicas the convergence test flags too_short (halves: nominal 1 %).  Prints figures, asserts nothing.

    .venv/bin/python benchmarks/d_error.py --student .matscreen/store/demo/models/<candidate>/r1 \\
        --structure .matscreen/store/demo/candidates/<candidate>/structure.extxyz [--replicas 8] [--ps 12]

Measured after `make demo` (PaiNN 32x2 pair, LGPS 50 atoms, 1000 K, 12 ps with 1 ps dropped, 8 replicas,
338 s on 2 cores): replica scatter / median GLS error 1.46, halves flagged 2 of 8 with the GLS errors
alone; with the Birge ratio the reported error is 1.6x the scatter (conservative) and no halves flagged.
With ``--ps 40`` (8 replicas, 18 min): scatter 16 % against 18 % at 12 ps, reported error 1.1x the
scatter: longer runs barely narrow D here, replicas do (docs/checks.md, "Where the fit window starts").
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

from report import print_result

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]   # `import md` is the package
sys.path.insert(0, str(_HERE.parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default=None, help="folder of ensemble member checkpoints (member*.pt; required)")
    parser.add_argument("--structure", default=None, help="the structure the replicas start from (any ASE format)")
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=1000.0, help="K")
    parser.add_argument("--ps", type=float, default=12.0, help="run length per replica (ps), 1 ps dropped")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.student is None or args.structure is None:     # `make bench` runs every script bare
        print("benchmarks/d_error.py: give --student DIR and --structure FILE (e.g. after `make demo`: "
              "<store>/demo/models/<candidate>/r1 and <store>/demo/candidates/<candidate>/structure.extxyz); "
              "nothing run")
        return 0

    import ase.io
    import numpy as np

    from analysis.checks import diffusion_convergence
    from md.protocol import Protocol
    from md.runner import run_temperatures
    from md.trajectory import load_trajectory
    from models.checkpoint import load_ensemble

    members = sorted(Path(args.student).glob("member*.pt"))
    if not members:
        print(f"error: no member*.pt in {args.student}; point --student at a round folder of the store",
              file=sys.stderr)
        return 2
    ff = load_ensemble(members)
    atoms = ase.io.read(args.structure)
    protocol = Protocol(timestep_fs=2.0, total_fs=args.ps * 1000.0, ramp_fs=0.0, discard_fs=1000.0, thermostat="langevin",
                        stride=10, checkpoint_every=10 ** 9)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        runs = run_temperatures(ff, atoms, [args.temperature], args.replicas, protocol, Path(tmp), seed=500)
        wall = time.perf_counter() - t0
        rows = []
        for r in runs:
            full, conv = diffusion_convergence(load_trajectory(r.trajectory), "Li")
            rows.append((full.diffusivity_cm2_s, full.evidence["gls_err_cm2_s"], full.diffusivity_err_cm2_s,
                         conv.halves_z, conv.too_short))
            print(f"{r.name}: D {rows[-1][0]:.3g} cm^2/s, GLS err {rows[-1][1]:.2g}, reported err {rows[-1][2]:.2g}, "
                  f"halves z {conv.halves_z:.2f}{' (too_short: ' + conv.reason + ')' if conv.too_short else ''}")
    d = np.array([x[0] for x in rows])
    scatter = float(d.std(ddof=1))
    print_result({
        "replicas": args.replicas, "temperature_K": args.temperature, "ps": args.ps, "md_wall_s": round(wall, 1),
        "mean_D_cm2_s": float(d.mean()), "replica_scatter_cm2_s": scatter,
        "scatter_over_median_gls_err": round(scatter / float(np.median([x[1] for x in rows])), 2),
        "scatter_over_median_reported_err": round(scatter / float(np.median([x[2] for x in rows])), 2),
        "scatter_relative_uncertainty": round(1 / math.sqrt(2 * (len(d) - 1)), 2),
        "too_short": int(sum(x[4] for x in rows)),
    }, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
