"""Benchmark: does tier 1 (no oracle MD) rank candidates as tier 2 (oracle MD) does, and at what oracle cost?

The same candidates are screened twice, each campaign in its own store so neither learns from the other:
``<name>-tier1`` with the funnel on and no oracle-MD budget (the verified start at tier 2, every other
candidate at tier 1), and ``<name>-tier2`` with the funnel off (every candidate tier 2: oracle reference MD,
the full checks, active learning).  Both record every finished step in their ledgers, so a rerun resumes
and only re-judges.  Printed: how many candidates have both numbers (``candidates``), the rank correlation
(``spearman``), how many of tier 2's top 3 tier 1 keeps in its top 3 (``top3_kept``, of 3), each candidate's
z = (tier 1 - tier 2) / combined error, and the cost per candidate of each tier in oracle calls (labels and MD
steps, one force call each), oracle seconds on this machine (``tier1_oracle_cost_s``, ``tier2_oracle_cost_s``:
calls x the oracle's measured time per call) and student MD steps; ``cost_ratio`` = tier 1 / tier 2.

    .venv/bin/python benchmarks/funnel.py [--world lj] [--spec campaigns/my_funnel.yaml] [--out DIR] [--json]

``--world lj`` (the default): 7 Li-Ar cells of the test world (LJ oracle, LJ students; minutes on 2 cores);
``--spec``: any campaign spec with ``funnel`` settings (e.g. a CHGNet one: hours of oracle MD for tier 2).
Goal (issue 35): tier 1 keeps tier 2's top 3 at a tenth of the oracle cost.  Prints figures, asserts nothing.

Measured 2026-12-07, LJ world, 2 cores (9 min for both campaigns; a rerun only re-judges, 23 s): 6 tier-1
candidates with both numbers; Spearman 0.09, top3_kept 1 of 3; every |z| <= 0.81 (tier 1 and tier 2 agree
within their combined errors, and the seven cells' values, 0.4-3.4 with errors 1.0-2.4, are not separable:
the order is noise in both tiers); oracle calls per candidate 23 (tier 1) against 2427 (tier 2): cost ratio
0.009; student steps 1900 against 12300.
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

from report import print_result

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]   # `import md` is the package
sys.path.insert(0, str(_HERE.parent))


def lj_world_spec(out: Path) -> dict:
    """Seven Li-Ar cells of the campaign tests' LJ world (fcc and sc at several densities), hot LJ fluid."""
    sys.path.insert(0, str(_HERE.parent / "tests"))
    from ase.build import bulk
    from ase.io import write

    from lj_world import CONCLUSIVE_MD, lj_spec

    out.mkdir(parents=True, exist_ok=True)
    cells = {}
    for name, kind, a, n in (("Li", "fcc", 5.26, 2), ("Lf2", "fcc", 5.34, 2), ("Lf3", "fcc", 5.42, 2),
                             ("Lf4", "fcc", 5.50, 2), ("Ls1", "sc", 3.75, 3), ("Ls2", "sc", 3.85, 3),
                             ("Ls3", "sc", 3.95, 3)):
        atoms = bulk("Li", kind, a=a, cubic=True).repeat(n) if kind == "fcc" else bulk("Li", kind, a=a).repeat(n)
        atoms.symbols[::2] = "Ar"
        write(out / f"{name.lower()}.extxyz", atoms)
        cells[name] = str(out / f"{name.lower()}.extxyz")
    md = {**CONCLUSIVE_MD, "steps": 600, "exploration_replicas": 2}
    return lj_spec("funnel-bench", cells, md=md,
                   candidates={"formulas": list(cells), "structures": cells, "max_candidates": len(cells)},
                   funnel={"enabled": True, "seed_labels": 4, "md_labels": 4, "warmup_steps": 100, "budget_ps": 18.0},
                   precision={"audit_labels": 4, "transit_labels": 2, "budget_ps": 12.0},
                   active_learning={"max_rounds": 1})


def _tiers(spec: dict) -> tuple[dict, dict]:
    one, two = copy.deepcopy(spec), copy.deepcopy(spec)
    one["name"], two["name"] = f"{spec['name']}-tier1", f"{spec['name']}-tier2"
    one.setdefault("funnel", {}).update(enabled=True, tier2_candidates=0)
    two.setdefault("funnel", {})["enabled"] = False
    return one, two


def _run(spec: dict, store: Path, uri: str):
    from orchestrator.campaign.driver import Campaign
    from orchestrator.campaign.spec import validate

    campaign = Campaign(validate(spec), store=store, tracking_uri=uri)
    campaign.run()
    return campaign


def _oracle_calls(ledger, key: str, gkey: str, spec) -> int:
    """Force calls of the oracle one candidate cost: its labels (seed, rounds, audits, certifications) and, for a
    reference it ran, every MD step."""
    from reference.user_reference import KIND

    steps = ledger.steps()
    calls = 0
    for k, v in steps.items():
        parts = k.split(":")
        if len(parts) < 2:
            continue
        if parts[0] in ("label", "audit", "certify") and parts[1] == gkey:
            calls += (v.get("audit") or v).get("n_labels", 0) if parts[0] == "certify" else v.get("n_labels", 0)
        elif parts[0] == "seed" and parts[1] == key:
            calls += v.get("n_labels", 0)
        elif parts[0] == "ref" and parts[1] == key and (v.get("metadata") or {}).get("kind") != KIND:
            calls += int(v.get("steps") or spec.md.reference_steps)
    return calls


def _per_call_s(spec, structure: str, n: int = 5) -> float:
    """The oracle's wall time per force call on ``structure`` (median of ``n`` single points)."""
    import numpy as np

    from reference.structures import structure_atoms

    atoms = structure_atoms(structure)
    atoms.calc = spec.oracle.make().calculator
    times = []
    for i in range(n):
        atoms.rattle(0.01, seed=i)
        t0 = time.perf_counter()
        atoms.get_forces()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def figures(one, two) -> dict:
    """The benchmark's figures from the two finished campaigns."""
    import numpy as np
    from scipy.stats import spearmanr

    a = {c["key"]: c for c in one.ledger.candidates()}
    b = {c["key"]: c for c in two.ledger.candidates()}
    tier1 = [k for k, c in a.items() if (c["results"] or {}).get("tier") == 1]

    def value(c):
        r = c["results"] or {}
        return r.get("log10_sigma_300K"), r.get("log10_sigma_300K_err_total")

    both = [k for k in tier1 if k in b and None not in value(a[k]) + value(b[k])]
    z = {k: (value(a[k])[0] - value(b[k])[0]) / math.hypot(value(a[k])[1], value(b[k])[1]) for k in both}
    keys = [k for k in a if k in b and value(a[k])[0] is not None and value(b[k])[0] is not None]
    top = sorted(keys, key=lambda k: -value(b[k])[0])[:3]
    top_one = sorted(keys, key=lambda k: -value(a[k])[0])[:3]
    rho = float(spearmanr([value(a[k])[0] for k in both], [value(b[k])[0] for k in both])[0]) if len(both) > 2 \
        else None
    s1, s2 = one.spec, two.spec
    rows = one.ledger.step("candidates")["rows"]
    per_call = _per_call_s(s1, next(r["structure_path"] for r in rows if r.get("structure_path")))
    calls1 = [_oracle_calls(one.ledger, k, f"{k}@t1", s1) for k in tier1]
    calls2 = [_oracle_calls(two.ledger, k, k, s2) for k in tier1]
    steps1 = [a[k]["simulated_ps"] * 1000.0 / s1.md.protocol.timestep_fs for k in tier1]
    steps2 = [b[k]["simulated_ps"] * 1000.0 / s2.md.protocol.timestep_fs for k in tier1]
    mean = (lambda xs: float(np.mean(xs)) if xs else None)
    c1, c2 = mean(calls1), mean(calls2)
    return {"candidates": len(both), "tier1_candidates": len(tier1), "spearman": rho,
            "top3_kept": len(set(top) & set(top_one)), "tier2_top3": top, "tier1_top3": top_one,
            "z": {k: round(v, 2) for k, v in z.items()},
            "z_within_2": (sum(abs(v) <= 2 for v in z.values()) / len(z)) if z else None,
            "tier1_oracle_calls": c1, "tier2_oracle_calls": c2, "oracle_s_per_call": per_call,
            "tier1_oracle_cost_s": c1 * per_call if c1 is not None else None,
            "tier2_oracle_cost_s": c2 * per_call if c2 is not None else None,
            "cost_ratio": c1 / c2 if c1 and c2 else None,
            "tier1_student_steps": mean(steps1), "tier2_student_steps": mean(steps2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=("lj",), default="lj", help="the built-in candidate set (without --spec)")
    parser.add_argument("--spec", default=None, help="a campaign spec with funnel settings instead of the LJ world")
    parser.add_argument("--out", default=".matscreen/bench/funnel", help="stores, ledgers and MLflow of both runs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import ray

    out = Path(args.out).resolve()
    if args.spec:
        import yaml

        spec = yaml.safe_load(Path(args.spec).read_text())
    else:
        spec = lj_world_spec(out / "structures")
    one, two = _tiers(spec)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             resources={"matscreen_head": 1})
    uri = f"sqlite:///{out / 'mlflow.db'}"
    t0 = time.monotonic()
    first = _run(one, out / "tier1", uri)
    t1 = time.monotonic()
    second = _run(two, out / "tier2", uri)
    result = figures(first, second)
    result.update(wall_s_tier1_campaign=round(t1 - t0, 1), wall_s_tier2_campaign=round(time.monotonic() - t1, 1))
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
