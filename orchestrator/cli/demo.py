"""`matscreen demo` (= `make demo`): the full active-learning campaign on the embedded default spec.

The default is a small Li-{Ge,Si,Sn}-P-S screen (orchestrator/campaign_demo.yaml;
campaigns/demo.yaml is a link to it): the first LGPS-type candidate of the chemical space, the CHGNet oracle's bundled
12 ps reference, a PaiNN student ensemble, the judge's checks against the reference's noise, batched MLFF
MD, D(T), sigma(T), Ea and log10 sigma(300 K) with errors beside the measured value.
It ends by printing the ranked table and the command that opens the MLflow UI on the results.
``--chemspace-only`` runs the chemical-space overview instead (enumerate, filter, label, map).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ELEMENTS = "Li,Ge,Si,Sn,P,S,Se"

HELP = """\
Run the embedded default campaign end to end, at the stability rules of a real campaign
(12-18 minutes on a 2-core machine after installation; campaigns/demo.yaml):

  candidates   Li-{Ge,Si,Sn}-P-S compositions enumerated from the chemical space (SMACT rules),
               kept when they fit the LGPS prototype's anonymous formula; the first is screened
  reference    the oracle's (CHGNet 0.3.0, bundled weights; no download) own 12 ps of MD at 1000 K,
               shipped with matscreen: its forces are the first labels, its last 20 % is held out
  students     a PaiNN ensemble, fine-tuned on new oracle labels when the judge finds it wrong
  judge        structure (RDF against the reference's own noise, lattice), Li dynamics (D against the
               oracle's D), breakage, the student's force error on 16 oracle-audited frames of its own
               MD against its error on the held-out frames, ensemble deviation against levels set on
               the held-out frames; undecidable checks say `inconclusive`
  MD           4 exploration replicas of 12 ps at 1000 K in one batch, judged as one (11 ps each after
               equilibration); batched MLFF MD at 1150/1300 K, 6 ps each; too-short temperatures flagged
  results      log10 sigma(300 K) and Ea with honest errors, the evidence of every check, and the
               measured value (Kamaya et al. 2011) beside the computed one; MLflow UI command

State goes to .matscreen/store/demo (the ledger: re-running resumes), MLflow to
.matscreen/mlflow.db (or $MLFLOW_TRACKING_URI).  `matscreen campaign defaults` prints the spec.

--chemspace-only: the chemical-space overview of Li-{Ge,Si,Sn}-P-{S,Se} instead (binaries to
quaternaries containing Li, stoichiometric factors 1..8, SMACT 2014 oxidation states):
  1. compositions.parquet  every composition of the space with its SMACT verdict (allowed),
                           known/unknown label and category (standard, missing, interesting, unlikely)
  2. candidates.parquet    the filtered candidates: allowed, unknown, with S or Se as an anion
  3. map_<embedding>_*.png 2D maps (PCA, t-SNE, UMAP) coloured by category and anion family
Labels come from the Materials Project when MP_API_KEY is set (answers cached on disk), else from
the small bundled file chemspace/data/known_li_thiophosphates.csv (or --known FILE).
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the embedded default campaign (Li-{Ge,Si,Sn}-P-S, full active-learning loop)",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default=None, help="a campaign spec to run instead of the embedded demo")
    p.add_argument("--store", default=None, help="data-store directory (default .matscreen/store)")
    p.add_argument("--num-cpus", type=int, default=None, help="logical CPUs of the local Ray (default: all cores, or the "
                   "sum of the spec's per-stage CPUs when one candidate runs at a time: its stages run one after another)")
    p.add_argument("--quiet", action="store_true", help="no live progress line")
    p.add_argument("--chemspace-only", action="store_true",
                   help="run only the chemical-space overview (enumerate, filter, label, map) into --out")
    g = p.add_argument_group("chemspace overview (any of these implies --chemspace-only)")
    g.add_argument("--out", default=None, help="output folder (default outputs/demo)")
    g.add_argument("--known", default=None, metavar="FILE|mp",
                   help="known formulas: a CSV/Parquet file or 'mp'; default mp if MP_API_KEY is set, else bundled")
    g.add_argument("--embedding", default=None, help="element embedding for the maps (default magpie)")
    g.add_argument("--methods", default=None, help="map methods (default pca,tsne,umap)")
    g.add_argument("--per-category", type=int, default=None, help="map sample size per category (default 150)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    chemspace_opts = ("out", "known", "embedding", "methods", "per_category")
    if args.chemspace_only or any(getattr(args, o) is not None for o in chemspace_opts):
        for opt, default in (("out", "outputs/demo"), ("embedding", "magpie"), ("methods", "pca,tsne,umap"),
                             ("per_category", 150)):
            if getattr(args, opt) is None:
                setattr(args, opt, default)
        return chemspace_demo(args)
    from orchestrator.cli.campaign import run_campaign
    from orchestrator.campaign.spec import load_spec

    spec = load_spec(args.spec)  # None: the embedded default
    t0 = time.perf_counter()
    where = ", ".join(spec.candidates.formulas) or (f"candidates enumerated from {'-'.join(spec.space.elements)} "
                                                     f"on the {', '.join(spec.prototypes)} prototype")
    print(f"matscreen demo: campaign '{spec.name}' - {where}, oracle {spec.oracle.name}, "
          f"{'+'.join(spec.models.architectures)} students", flush=True)
    rc = run_campaign(spec, store=args.store, num_cpus=args.num_cpus, quiet=args.quiet)
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return rc


def chemspace_demo(args) -> int:
    """The chemical-space overview (the chemspace stage's demo)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from chemspace import enumerate_compositions, label, make_map
    from common.atomic import atomic_path, atomic_write_text, check_writable

    t0 = time.perf_counter()
    out = Path(args.out)
    check_writable(out / "compositions.parquet")
    from chemspace.known import bundled_known

    known = args.known or ("mp" if os.environ.get("MP_API_KEY") else str(bundled_known()))
    print(f"[1/4] enumerating {ELEMENTS} (must contain Li, arity 2-4, SMACT filters) ...", flush=True)
    table = enumerate_compositions(ELEMENTS, arity="2-4", must_contain="Li", include_disallowed=True, progress=True)
    print(f"      {table.num_rows:,} compositions, {pc.sum(table['allowed']).as_py():,} allowed", flush=True)
    print(f"[2/4] labelling against {'the Materials Project' if known == 'mp' else known} ...", flush=True)
    table = label(table, known)
    from chemspace import CATEGORIES

    found = dict(zip(*_value_counts(table["category"])))
    counts = {c: int(found.get(c, 0)) for c in CATEGORIES}
    with atomic_path(out / "compositions.parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")
    anion = pc.or_(_contains(table, "S"), _contains(table, "Se"))
    candidates = table.filter(pc.and_(pc.equal(table["category"], "missing"), anion))
    with atomic_path(out / "candidates.parquet") as tmp:
        pq.write_table(candidates, tmp, compression="zstd")
    print(f"[3/4] filtered {candidates.num_rows:,} candidates (allowed, unknown, S/Se anion)", flush=True)
    print(f"[4/4] mapping ({args.methods}, {args.embedding}) ...", flush=True)
    res = make_map(table, out, embedding=args.embedding, methods=args.methods, per_category=args.per_category)
    summary = {"compositions": table.num_rows, "categories": counts, "candidates": candidates.num_rows,
               "known_source": known, "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(f"done in {summary['seconds']} s; categories: " + ", ".join(f"{c} {n:,}" for c, n in counts.items()))
    print(f"  table:      {out / 'compositions.parquet'}")
    print(f"  candidates: {out / 'candidates.parquet'}")
    print(f"  map table:  {res.table}")
    for p in res.plots:
        print(f"  plot:       {p}")
    print(f"  summary:    {out / 'summary.json'}")
    return 0


def _value_counts(column):
    import pyarrow.compute as pc

    vc = pc.value_counts(column)
    return vc.field("values").to_pylist(), vc.field("counts").to_pylist()


def _contains(table, symbol):
    import pyarrow.compute as pc

    import numpy as np
    import pyarrow as pa

    col = table["elements"].combine_chunks()
    hit = pc.equal(pc.list_flatten(col), symbol).to_numpy(zero_copy_only=False)
    rows = np.zeros(len(col), dtype=bool)
    rows[pc.list_parent_indices(col).to_numpy()[hit]] = True
    return pa.array(rows)
