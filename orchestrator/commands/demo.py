"""`matscreen demo`: the chemspace demo on the Li-{Ge,Si,Sn}-P-{S,Se} space (until the campaign lands)."""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ELEMENTS = "Li,Ge,Si,Sn,P,S,Se"

HELP = """\
Enumerate, filter, label and map the Li-{Ge,Si,Sn}-P-{S,Se} chemical space (binaries to
quaternaries containing Li, stoichiometric factors 1..8, SMACT 2014 oxidation states):

  1. compositions.parquet  every composition of the space with its SMACT verdict (allowed),
                           known/unknown label and category (standard, missing, interesting, unlikely)
  2. candidates.parquet    the filtered candidates: allowed, unknown, with S or Se as an anion
  3. map_<embedding>_*.png 2D maps (PCA, t-SNE, UMAP) coloured by category and anion family

Labels come from the Materials Project when MP_API_KEY is set (answers cached on disk), else from
the small bundled file chemspace/data/known_li_thiophosphates.csv (or --known FILE).
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the embedded default job (chemspace demo: Li-{Ge,Si,Sn}-P-{S,Se})",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/demo", help="output folder (default %(default)s)")
    p.add_argument("--known", default=None, metavar="FILE|mp",
                   help="known formulas: a CSV/Parquet file or 'mp'; default mp if MP_API_KEY is set, else bundled")
    p.add_argument("--embedding", default="magpie", help="element embedding for the maps (default magpie)")
    p.add_argument("--methods", default="pca,tsne,umap", help="map methods (default %(default)s)")
    p.add_argument("--per-category", type=int, default=150, help="map sample size per category (default 150)")
    p.set_defaults(func=cmd_demo)


def bundled_known() -> Path:
    """The offline known-formulas file shipped with chemspace (see chemspace/data/README.md)."""
    import chemspace

    return Path(chemspace.__file__).parent / "data" / "known_li_thiophosphates.csv"


def cmd_demo(args) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from chemspace import enumerate_compositions, label, make_map
    from common.atomic import atomic_path, atomic_write_text, check_writable

    t0 = time.perf_counter()
    out = Path(args.out)
    check_writable(out / "compositions.parquet")
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
