"""`matscreen benchmark`: the reference study's transferability benchmark (orchestrator/benchmark.py)."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    bench = subparsers.add_parser(
        "benchmark", help="the reference study's transferability benchmark (model x material table)",
        description="Train on one material's oracle data, test transfer to others; print and log to MLflow the "
                    "table model x material: force MAE (meV/Å), the structure check (RDF MAE against the oracle's "
                    "noise), the dynamics check (log10 D_student/D_oracle), the judge's verdict, -log10 sigma300K "
                    "(mS/cm, the study's unit) and Ea of student and oracle; and a materials table: the oracle "
                    "beside the study's AIMD and experiment, with sources.\n\n"
                    "  matscreen benchmark run campaigns/paper_benchmark_cpu.yaml --ray   # 2 CPU cores: docs/benchmark_cpu.md\n"
                    "  matscreen benchmark run campaigns/paper_benchmark.yaml\n"
                    "  RAY_AUTH_MODE=token ray job submit --working-dir . -- matscreen benchmark run "
                    "campaigns/paper_benchmark.yaml --ray",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    bsub = bench.add_subparsers(dest="benchmark_command", metavar="SUBCOMMAND")
    bench.set_defaults(func=lambda args: (bench.print_help(), 2)[1])
    brun = bsub.add_parser("run", help="run a benchmark spec (campaign keys + a `benchmark:` section)")
    brun.add_argument("spec", help="benchmark YAML, e.g. campaigns/paper_benchmark.yaml")
    brun.add_argument("--out", metavar="DIR", help="output directory (default <store.path>/<name>)")
    brun.add_argument("--tracking-uri", help="MLflow store (default: spec tracking.uri, $MLFLOW_TRACKING_URI, .matscreen/mlflow.db)")
    mode = brun.add_mutually_exclusive_group()
    mode.add_argument("--ray", dest="use_ray", action="store_true", default=None, help="run work items as Ray tasks")
    mode.add_argument("--serial", dest="use_ray", action="store_false", help="run in this process (default without RAY_ADDRESS)")
    brun.set_defaults(func=_benchmark_run)


def _benchmark_run(args) -> int:
    from orchestrator.campaign.benchmark import format_table, run_benchmark

    rows = run_benchmark(args.spec, out_dir=args.out, use_ray=args.use_ray, tracking_uri=args.tracking_uri)
    print(format_table(rows))
    return 0
