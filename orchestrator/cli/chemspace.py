"""`matscreen chemspace ...`: count, enumerate, label and map the SMACT-filtered chemical space."""
from __future__ import annotations

import argparse
import json
import sys

HELP = """\
The chemical-space engine (SMACT's charge-neutrality + Pauling filters, as in Park, Onwuli,
Butler & Walsh, Faraday Discuss. 2025).  Typical flow:

  matscreen chemspace count --arity 3 --json
  matscreen chemspace enumerate --elements Li,Ge,P,S,Se --must-contain Li --arity 2-4 --out li.parquet
  matscreen chemspace label li.parquet --known known.csv          (or --known mp, needs MP_API_KEY)
  matscreen chemspace map li.parquet --embedding magpie --out-dir maps/
"""

MAX_ROWS = 500_000_000


def _common(p: argparse.ArgumentParser, arity_default: str | None = "3") -> None:
    p.add_argument("--arity", default=arity_default,
                   help="number of elements per composition: N, a range 2-4 or a list 2,3 (default %(default)s)")
    p.add_argument("--elements", default=None,
                   help="element pool, comma separated (e.g. Li,Ge,P,S); default: all 103 elements H..Lr")
    p.add_argument("--max-stoich", type=int, default=8,
                   help="largest stoichiometric factor per element before reduction (default 8)")
    p.add_argument("--oxidation-states", default="smact14", metavar="SET",
                   help="oxidation-state set: smact14 (default, SMACT 2014, 421 species), icsd24, icsd16, "
                        "pymatgen_sp, pymatgen (common states) or a smact-format file")


def register(subparsers) -> None:
    p = subparsers.add_parser("chemspace", help="count, enumerate, label and map compositions (SMACT filters)",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="chemspace_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])

    c = sub.add_parser("count", help="count unique and allowed compositions of the whole space (no materialisation)",
                       description="Count all element combinations x gcd-reduced stoichiometries ('unique') and those "
                                   "passing SMACT's filters ('allowed'). Prints one line per arity; with --json one "
                                   'JSON object {"arity","unique","allowed","seconds"} (+ "categories" with --known).')
    _common(c)
    c.add_argument("--known", metavar="FILE", help="known-formulas CSV/Parquet: adds standard/missing/interesting/unlikely")
    c.add_argument("--json", action="store_true", help="print one JSON line per arity")
    c.add_argument("--progress", action="store_true", help="show a progress bar on stderr")
    c.set_defaults(func=cmd_count)

    e = sub.add_parser("enumerate", help="stream allowed compositions of an element pool to Parquet",
                       description="Enumerate compositions of an element pool that pass SMACT's filters and stream "
                                   "them to a Parquet file (formula, key, arity, elements, amounts, "
                                   "oxidation_states, allowed), written atomically.")
    _common(e)
    e.add_argument("--must-contain", metavar="ELS", help="elements every composition must contain (e.g. Li)")
    e.add_argument("--anions", metavar="ELS",
                   help="only these elements may be anions (negative states), e.g. S,Se; every row contains one")
    e.add_argument("--include-disallowed", action="store_true",
                   help="also write compositions that fail the filters (allowed=false), e.g. for maps")
    e.add_argument("--out", required=True, metavar="FILE.parquet", help="output Parquet file")
    e.add_argument("--json", action="store_true", help="print the summary as JSON")
    e.set_defaults(func=cmd_enumerate)

    lab = sub.add_parser("label", help="label a composition table known/unknown and by category",
                         description="Add 'known' and 'category' (standard, missing, interesting, unlikely) columns "
                                     "to a table from 'chemspace enumerate', joining on the canonical composition key.")
    lab.add_argument("table", metavar="TABLE.parquet")
    lab.add_argument("--known", required=True, metavar="FILE|mp",
                     help="known-formulas CSV/Parquet, or 'mp' for the Materials Project (MP_API_KEY from the environment)")
    lab.add_argument("--out", metavar="FILE.parquet", help="write here instead of updating TABLE in place")
    lab.add_argument("--cache-dir", help="Materials Project answer cache (default ~/.cache/matscreen/mp)")
    lab.add_argument("--json", action="store_true", help="print category counts as JSON")
    lab.set_defaults(func=cmd_label)

    m = sub.add_parser("map", help="2D maps (PCA, t-SNE, UMAP) of a labelled table, PNG plots",
                       description="Embed a balanced sample per category of a labelled table with element vectors "
                                   "(elementembeddings), project to 2D and plot by category and anion family.")
    m.add_argument("table", metavar="TABLE.parquet", help="labelled table (see 'chemspace label')")
    m.add_argument("--embedding", default="magpie",
                   help="magpie (default), mat2vec, megnet16, oliynyk, skipatom or random_200")
    m.add_argument("--methods", default="pca,tsne,umap", help="comma separated subset of pca,tsne,umap")
    m.add_argument("--pooling", default="mean", help="mean (default), std, max, min, sum; comma separated to concat")
    m.add_argument("--per-category", type=int, default=250, help="sample size per category (default 250)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out-dir", default="outputs/maps", help="folder for map_*.parquet and map_*.png")
    m.set_defaults(func=cmd_map)


def _pool(text):
    from chemspace.enumeration import split_symbols
    from common.errors import InputError

    if text is None:
        return None
    pool = split_symbols(text)
    if not pool:
        raise InputError("empty element pool; give elements with --elements, e.g. --elements Li,Ge,P,S")
    return pool


def cmd_count(args) -> int:
    from chemspace import count_space, load_known, space_categories
    from chemspace.enumeration import parse_arity

    arities = parse_arity(args.arity)
    elements = _pool(args.elements)
    known = load_known(args.known) if args.known else None
    for k in arities:
        res = count_space(k, elements=elements, max_stoich=args.max_stoich, oxidation_states=args.oxidation_states,
                          progress=args.progress)
        out = res.as_dict()
        if known is not None:
            out["categories"] = space_categories(k, res.allowed, res.unique, known, elements=elements,
                                                 max_stoich=args.max_stoich, oxidation_states=args.oxidation_states)
        if args.json:
            print(json.dumps(out), flush=True)
        else:
            line = f"arity {k}: unique {res.unique:,}  allowed {res.allowed:,}  ({res.seconds:.2f} s)"
            if known is not None:
                line += "  " + "  ".join(f"{c} {n:,}" for c, n in out["categories"].items())
            print(line, flush=True)
    return 0


def cmd_enumerate(args) -> int:
    from chemspace.enumeration import EnumerationSpec, count_rows_upper_bound, enumerate_compositions, parse_arity, split_symbols
    from common.atomic import check_writable
    from common.errors import InputError

    spec = EnumerationSpec(elements=_pool(args.elements), arity=parse_arity(args.arity),
                           must_contain=split_symbols(args.must_contain), anions=split_symbols(args.anions),
                           max_stoich=args.max_stoich, oxidation_states=args.oxidation_states,
                           include_disallowed=args.include_disallowed)
    bound = count_rows_upper_bound(spec)
    if bound > MAX_ROWS:
        raise InputError(f"this space has {bound:,} compositions, too many to write; restrict it with --elements, "
                         "--must-contain or a lower --arity")
    check_writable(args.out)
    res = enumerate_compositions(spec.elements, spec.arity, spec.must_contain, spec.anions, spec.max_stoich,
                                 spec.oxidation_states, spec.include_disallowed, out=args.out, progress=True)
    if args.json:
        print(json.dumps(res.as_dict()))
    else:
        print(f"wrote {res.rows:,} compositions ({res.allowed:,} allowed) to {res.path} in {res.seconds:.1f} s")
    return 0


def cmd_label(args) -> int:
    from chemspace import label_file

    counts = label_file(args.table, args.known, out=args.out, cache_dir=args.cache_dir)
    if args.json:
        print(json.dumps(counts))
    else:
        print(f"labelled {args.out or args.table}: " + ", ".join(f"{c} {n:,}" for c, n in counts.items()))
    return 0


def cmd_map(args) -> int:
    from chemspace import make_map

    res = make_map(args.table, args.out_dir, embedding=args.embedding, methods=args.methods,
                   per_category=args.per_category, pooling=args.pooling, seed=args.seed)
    print(f"map of {res.points} compositions: {res.table}")
    for p in res.plots:
        print(f"  plot: {p}")
    if res.dropped_elements or res.empty_rows:
        print(f"  note: {args.embedding} lacks {', '.join(sorted(res.dropped_elements))} "
              f"(dropped from {sum(res.dropped_elements.values())} compositions; {res.empty_rows} left unembedded)",
              file=sys.stderr)
    return 0
