"""`matscreen campaign ...`: run an active-learning screening campaign, watch it, read its ranking."""
from __future__ import annotations

import argparse
import json
import sys

HELP = "run an active-learning screening campaign (Ray + MLflow); status; ranked results"
DESCRIPTION = """\
A campaign takes a chemical space (or a list of formulas) to ranked Li-ion conductivity estimates:
candidate structures -> short oracle reference MD -> train a student ensemble -> MLFF MD ->
stability verdict (RDF vs reference, fusion/explosion, ensemble force deviation) -> label the
uncertain frames with the oracle and retrain, until the judge finds it stable -> production MD at every
temperature -> D(T), sigma(T), Ea, log10 sigma(300 K) with errors.

  matscreen campaign defaults > my.yaml   # every key, its default and meaning (valid YAML)
  matscreen campaign show my.yaml         # the settings a spec runs with, each key explained
  matscreen campaign validate my.yaml     # check a spec (errors name the key)
  matscreen campaign run my.yaml          # run or resume (same command continues a stopped campaign)
  matscreen campaign status my.yaml       # stages and rounds per candidate, MLflow runs
  matscreen campaign results my.yaml      # the ranked table (--json for machines)

Labels go into the shared data store (--store, else $MATSCREEN_STORE, else store.path:
<store>/shards/*.extxyz, the `reference` LabelStore); each candidate trains on the store's frames
of the campaign's oracle that share active_learning.min_shared_elements elements with it.
`run --incremental` screens new candidates and re-screens finished ones whose training data changed.
State lives in the data store (<store>/<name>/ledger.sqlite); MLflow (default
sqlite:///.matscreen/mlflow.db, or $MLFLOW_TRACKING_URI) is the window onto it.
`campaign run` connects to $RAY_ADDRESS, or starts a local Ray.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("campaign", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="campaign_command", metavar="SUBCOMMAND")

    def store_opts(q, spec_required: bool):
        if spec_required:
            q.add_argument("spec", help="campaign spec YAML (see `matscreen campaign defaults`)")
        else:
            q.add_argument("spec", nargs="?", help="campaign spec YAML (default: the embedded demo campaign)")
            q.add_argument("--name", help="campaign name instead of a spec file")
        q.add_argument("--store", help="data-store directory (default: $MATSCREEN_STORE, else the spec's store.path, "
                                       ".matscreen/store)")
        return q

    run = store_opts(sub.add_parser("run", help="run or resume a campaign (starts a local Ray unless RAY_ADDRESS is set)",
                                    description="Run a campaign; running it again after a crash resumes it: no finished "
                                                "MD, labels or training is redone and no MLflow run is duplicated."),
                     spec_required=True)
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: spec tracking.uri, $MLFLOW_TRACKING_URI, "
                                            "else sqlite:///.matscreen/mlflow.db)")
    run.add_argument("--incremental", action="store_true",
                     help="generate the candidate list again; screen new candidates, and re-screen (as a new "
                          "generation <candidate>@g<n>) finished ones whose shared-element training data in the "
                          "store changed since they were screened")
    run.add_argument("--num-cpus", type=int, default=None,
                     help="logical CPUs of a local Ray (default: all cores, or the sum of the spec's per-stage CPUs "
                          "when one candidate runs at a time: its stages run one after another); an error when the "
                          "actors would not fit")
    run.add_argument("--quiet", action="store_true", help="no live progress line")
    run.set_defaults(func=_run)

    status = store_opts(sub.add_parser("status", help="stage, round and reason of every candidate; MLflow run counts"),
                        spec_required=False)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=_status)

    results = store_opts(sub.add_parser("results", help="the ranked results table"), spec_required=False)
    results.add_argument("--json", action="store_true", help="print the ranked rows as JSON")
    results.set_defaults(func=_results)

    val = sub.add_parser("validate", help="validate a campaign spec and print it with every default filled in")
    val.add_argument("spec", help="campaign spec YAML")
    val.set_defaults(func=_validate)

    dflt = sub.add_parser("defaults", help="print every key of a spec with its default and meaning (valid YAML)",
                          description="The schema's defaults (what an empty spec runs with), every key commented with "
                                      "its meaning.  `matscreen campaign defaults > my.yaml` starts a spec.  The demo's "
                                      "own choices are in campaigns/demo.yaml only.")
    dflt.set_defaults(func=_defaults)

    show = sub.add_parser("show", help="print a spec's effective settings: every key, its value and meaning",
                          description="Validate SPEC and print the settings the campaign will run with (your values "
                                      "over the defaults), each key commented with its meaning; keys you changed "
                                      "also show their default.")
    show.add_argument("spec", help="campaign spec YAML")
    show.set_defaults(func=_show)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _run(args) -> int:
    from orchestrator.campaign.spec import load_spec

    spec = load_spec(args.spec)  # a malformed spec stops here, before any work starts
    return run_campaign(spec, store=args.store, tracking_uri=args.tracking_uri, incremental=args.incremental,
                        num_cpus=args.num_cpus, quiet=args.quiet)


def run_campaign(spec, store=None, tracking_uri=None, incremental=False, num_cpus=None, quiet=False,
                 out=sys.stdout) -> int:
    """Run ``spec`` to the end, printing progress, the ranked table and the MLflow UI command."""
    from orchestrator.campaign.driver import Campaign
    from orchestrator.campaign.results import format_table, ranked
    import os

    from orchestrator.ops.placement import local_cpus
    from orchestrator.ops.ray_runtime import ray_init, starts_local_ray
    from orchestrator.campaign.progress import ProgressView
    from orchestrator.campaign.tracking import mlflow_ui_lines

    if starts_local_ray():                                   # sized for the actors here, refused if they won't fit
        num_cpus = local_cpus(spec.resources, num_cpus, os.cpu_count() or 1)
    view = None if quiet else ProgressView()
    campaign = Campaign(spec, store=store, tracking_uri=tracking_uri, on_progress=view)
    # where the results go, first (a Ray job's log shows it even if the job is stopped)
    library_log = campaign.root / "logs" / "library.log"
    print(f"data store: {campaign.root}\nMLflow: {campaign.tracking_uri}\nlibrary messages (Ray): {library_log}",
          file=out, flush=True)
    started = ray_init(num_cpus, log_file=library_log)
    try:
        summary = campaign.run(incremental=incremental)
    finally:
        if view:
            view.close()
        if started:
            import ray

            ray.shutdown()
    if campaign.rescreened:
        print(f"re-screened (training data in the store changed): {', '.join(campaign.rescreened)}", file=out)
    rows = ranked(campaign.ledger, **spec.candidates.ranking())
    print(format_table(rows), file=out)
    skipped = f"; {summary['skipped_known']} known compositions skipped (include_known: false)" \
        if summary.get("skipped_known") else ""
    print(f"\n{summary['converged']} converged, {summary.get('inconclusive', 0)} inconclusive, {summary['failed']} ended "
          f"early of {summary['total']} candidates; "
          f"{summary['simulated_ns']:.4f} ns simulated{skipped}", file=out)
    print(f"results: {campaign.root / 'results.csv'}", file=out)
    print(mlflow_ui_lines(campaign.tracking_uri, campaign.experiment), file=out)
    return 0


def _ledger(args):
    from common.errors import InputError
    from orchestrator.campaign.spec import CampaignSpec, load_spec, store_root
    from orchestrator.campaign.state import Ledger, ledger_path

    spec = load_spec(args.spec) if args.spec else None
    name = args.name or (spec.name if spec else None)
    store = store_root(args.store, spec or CampaignSpec())
    if name is None:
        found = sorted(p.parent.name for p in store.glob("*/ledger.sqlite"))
        if len(found) == 1:
            name = found[0]
        elif not found:
            raise InputError(f"no campaign found under {store}; run `matscreen campaign run SPEC` first (or pass --store)")
        else:
            raise InputError(f"several campaigns under {store} ({', '.join(found)}); pick one with --name or SPEC")
    return Ledger.open_existing(ledger_path(store, name)), name


def _status(args) -> int:
    from orchestrator.campaign.progress import format_summary

    ledger, name = _ledger(args)
    rows = ledger.candidates()
    for r in rows:  # how many times it was screened (--incremental re-screens start generation 2, 3, ...)
        r["generation"] = (ledger.step(f"generation:{r['key']}") or {"generation": 1})["generation"]
    runs = _mlflow_counts(ledger)
    if args.json:
        print(json.dumps({"campaign": name, "summary": ledger.summary(), "mlflow_runs": runs,
                          "candidates": [{k: r[k] for k in ("key", "formula", "generation", "stage", "round",
                                                            "model_version", "verdict", "reason", "detail",
                                                            "simulated_ps")}
                                         for r in rows],
                          "rounds": ledger.rounds()}, indent=2))
        return 0
    print(f"campaign {name}: {format_summary(ledger.summary())}")
    names = {r["key"]: r["key"] + (f"@g{r['generation']}" if r["generation"] > 1 else "") for r in rows}
    width = max([len(n) for n in names.values()] + [9])
    print(f"{'candidate'.ljust(width)}  {'stage'.ljust(15)}  round  {'reason'.ljust(14)}  detail")
    for r in rows:
        print(f"{names[r['key']].ljust(width)}  {r['stage'].ljust(15)}  {str(r['round']).ljust(5)}  "
              f"{(r['reason'] or '').ljust(14)}  {r['detail'] or ''}")
    if runs:
        print("MLflow runs: " + ", ".join(f"{k}={v}" for k, v in sorted(runs.items())))
    return 0


def _mlflow_counts(ledger) -> dict:
    uri, exp = ledger.get_meta("tracking_uri"), ledger.get_meta("experiment")
    if not uri or not exp:
        return {}
    from orchestrator.campaign.tracking import run_counts

    try:
        return run_counts(uri, exp)
    except Exception:  # noqa: BLE001 - MLflow is a window; status works from the ledger alone
        return {}


def _results(args) -> int:
    from orchestrator.campaign.results import format_table, ranked
    from orchestrator.campaign.spec import CandidatesSpec

    ledger, _ = _ledger(args)
    spec = ledger.get_meta("spec") or {}
    known = {k: v for k, v in (spec.get("candidates") or {}).items() if k in ("rank_by", "threshold_mS_cm", "top_k")}
    rows = ranked(ledger, **{**CandidatesSpec().ranking(), **known})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
    return 0


def _validate(args) -> int:
    from orchestrator.campaign.spec import load_spec

    spec = load_spec(args.spec)
    print(spec.to_yaml(), end="")
    print(f"# {args.spec}: valid", file=sys.stderr)
    return 0


def _defaults(args) -> int:
    from orchestrator.campaign.spec import commented_yaml

    print("# matscreen campaign spec: the defaults (an empty spec runs with exactly these); key: value  # meaning")
    print(commented_yaml())
    return 0


def _show(args) -> int:
    from orchestrator.campaign.spec import commented_yaml, load_spec

    spec = load_spec(args.spec)
    print(f"# effective settings of {args.spec}; keys you changed show their default")
    print(commented_yaml(spec))
    return 0
