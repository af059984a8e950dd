"""`matscreen structures|reference|data|candidates ...`: structures, oracle MD, the labelled data store, candidates."""
from __future__ import annotations

import argparse
import json
import sys

STRUCTURES_HELP = """\
The structure library (published crystallographic data, ordered deterministically, with provenance)
and user structure files (CIF, POSCAR, extxyz; partial occupancies are ordered with logged choices).

  matscreen structures list
  matscreen structures show Li10GeP2S12 --out lgps.cif
  matscreen structures relax Li4GeS4 --oracle chgnet --out li4ges4_relaxed.cif     (cached)
"""
REFERENCE_HELP = """\
Reference MD with an oracle (default CHGNet, weights ship with the package) through ASE:
writes a trajectory file (md.trajectory format, .h5) and labelled frames into the data store.

  matscreen reference md Li10GeP2S12 --temperature-K 600 --steps 1000 --out ref_600K.h5
  matscreen reference oracles          (which oracles can run here)
"""
DATA_HELP = """\
The labelled data store (a directory; --store or $MATSCREEN_STORE, default .matscreen/store):
import AIMD runs, see what is stored, select frames by elements.

  matscreen data import vasprun.xml OUTCAR run.extxyz --oracle vasp-pbe --temperature-K 600
  matscreen data stats
  matscreen data query --subset-of Li,Ge,P,S --out lgps_frames.extxyz
  matscreen data query --shares-with Li10SiP2S12 --min-shared 3 --oracle chgnet-0.3.0 --out train.extxyz

The study's published layout (one AIMD per material, temperature and run, e.g.
aimd/<material>/<T>K/<run>/vasprun.xml): import each run with its temperature and a run id, so
frames of different runs stay apart in the store (a training or test split by run, by temperature):

  for f in aimd/*/*K/*/vasprun.xml; do
    IFS=/ read -r _ mat temp run _ <<< "$f"
    matscreen data import "$f" --oracle vasp-pbe --temperature-K "${temp%K}" --run-id "$mat-$temp-$run"
  done

XDATCAR has no energies or forces, so it cannot be imported as labels; `matscreen analyze` and a
campaign's reference_data read it (positions only).
"""
CANDIDATES_HELP = """\
Candidate structures for compositions by same-charge ionic substitution into library prototypes
with the same anonymous formula (e.g. Li10GeP2S12 -> Li10SiP2S12).  Compositions with no prototype
are reported, implausible structures rejected with a reason.

  matscreen candidates Li10SiP2S12 Li3PSe4 Li4SnS4
  matscreen candidates --from li.parquet --relax --out-dir candidates/
"""


def _store_arg(p):
    p.add_argument("--store", default=None, metavar="DIR|file://URI",
                   help="data store directory (default $MATSCREEN_STORE or .matscreen/store)")


def _oracle_args(p, default="chgnet"):
    p.add_argument("--oracle", default=default,
                   help="chgnet (default), sevennet, tblite, emt, lj, or 'module:Class' for any ASE calculator")
    p.add_argument("--oracle-version", default=None, help="model/method version (e.g. 0.3.0 for CHGNet)")
    p.add_argument("--oracle-kwargs", default=None, metavar="JSON", help="keyword arguments for the calculator, as JSON")
    p.add_argument("--device", default="cpu", help="torch device for ML oracles (default cpu)")


def _make_oracle(args):
    from common.errors import InputError
    from reference.oracles import Oracle

    kwargs = {}
    if args.oracle_kwargs:
        try:
            kwargs = json.loads(args.oracle_kwargs)
            assert isinstance(kwargs, dict)
        except (ValueError, AssertionError):
            raise InputError("--oracle-kwargs must be a JSON object, e.g. '{\"xc\": \"PBE\"}'") from None
    return Oracle(args.oracle, version=args.oracle_version, device=args.device, **kwargs)


def _print(obj, as_json: bool, text: str) -> None:
    print(json.dumps(obj, indent=None, default=str) if as_json else text)


def _write_structure(structure, out) -> str:
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    from common.atomic import atomic_path

    name = str(out).lower()
    with atomic_path(out) as tmp:
        if name.endswith(".cif"):
            structure.to(filename=str(tmp), fmt="cif")
        elif name.endswith((".xyz", ".extxyz")):
            write(tmp, AseAtomsAdaptor.get_atoms(structure), format="extxyz")
        else:
            structure.to(filename=str(tmp), fmt="poscar")
    return str(out)


def register(subparsers) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    # ---- structures ----------------------------------------------------------------------------
    s = subparsers.add_parser("structures", help="structure library and user structure files (list/show/relax)",
                              description=STRUCTURES_HELP, formatter_class=raw)
    ssub = s.add_subparsers(dest="structures_command", metavar="SUBCOMMAND")
    s.set_defaults(func=lambda args: (s.print_help(), 0)[1])
    p = ssub.add_parser("list", help="library entries with formula, space group and provenance")
    p.add_argument("--json", action="store_true", help="one JSON list of entries")
    p.set_defaults(func=cmd_structures_list)
    p = ssub.add_parser("show", help="one structure (library name, mp-id or file), ordered; optionally write it",
                        description="Show a structure: library name (see list), mp-<id> (needs MP_API_KEY, cached) "
                                    "or a CIF/POSCAR/extxyz path. Partial occupancies are ordered (choices printed).")
    p.add_argument("structure", help="library name, mp-<id> or structure file")
    p.add_argument("--out", help="write the ordered structure (.cif, .extxyz, else POSCAR)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_structures_show)
    p = ssub.add_parser("relax", help="relax a structure with an oracle (FIRE, cell + positions; cached)")
    p.add_argument("structure", help="library name, mp-<id> or structure file")
    _oracle_args(p)
    p.add_argument("--fmax", type=float, default=0.05, help="force threshold in eV/Å (default 0.05)")
    p.add_argument("--steps", type=int, default=300, help="maximum optimiser steps (default 300)")
    p.add_argument("--fixed-cell", action="store_true", help="relax positions only")
    p.add_argument("--no-cache", action="store_true", help="ignore and do not write the relaxation cache")
    p.add_argument("--out", help="write the relaxed structure (.cif, .extxyz, else POSCAR)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_structures_relax)

    # ---- reference MD ------------------------------------------------------------------------------
    r = subparsers.add_parser("reference", help="reference MD with an oracle (trajectory + labelled frames)",
                              description=REFERENCE_HELP, formatter_class=raw)
    rsub = r.add_subparsers(dest="reference_command", metavar="SUBCOMMAND")
    r.set_defaults(func=lambda args: (r.print_help(), 0)[1])
    p = rsub.add_parser("md", help="oracle MD: writes a trajectory (.h5) and labelled frames to the store")
    p.add_argument("structure", help="library name, mp-<id> or structure file")
    _oracle_args(p)
    p.add_argument("--temperature-K", type=float, default=600.0, help="target temperature in K (default 600)")
    p.add_argument("--steps", type=int, default=1000, help="MD steps (default 1000)")
    p.add_argument("--timestep-fs", type=float, default=2.0, help="time step in fs (default 2)")
    p.add_argument("--ensemble", choices=["nvt", "nve"], default="nvt",
                   help="Langevin NVT (default) or NVE, in the students' MD engine")
    p.add_argument("--friction-per-fs", type=float, default=0.01, help="Langevin friction in 1/fs (default 0.01)")
    p.add_argument("--stride", type=int, default=10, help="steps between trajectory frames (default 10)")
    p.add_argument("--label-every", type=int, default=50, help="steps between labelled frames (0: none; default 50)")
    p.add_argument("--supercell", default=None, metavar="NxMxK", help="repeat the cell, e.g. 2x2x1")
    p.add_argument("--seed", type=int, default=0, help="random seed for velocities and thermostat")
    p.add_argument("--run-id", default=None, help="run id recorded with every label (default random)")
    p.add_argument("--out", required=True, help="trajectory file to write (.h5)")
    _store_arg(p)
    p.add_argument("--no-store", action="store_true", help="do not write labelled frames to the store")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_reference_md)
    p = rsub.add_parser("oracles", help="list oracles and whether they can run here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reference_oracles)

    # ---- data store --------------------------------------------------------------------------------
    d = subparsers.add_parser("data", help="labelled data store: import AIMD, stats, query by elements",
                              description=DATA_HELP, formatter_class=raw)
    dsub = d.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    d.set_defaults(func=lambda args: (d.print_help(), 0)[1])
    p = dsub.add_parser("import", help="import AIMD files (vasprun.xml, OUTCAR, extxyz) into the store",
                        description="Every file is read and checked first; nothing is stored unless all are valid. "
                                    "XDATCAR is refused (no energies/forces).")
    p.add_argument("files", nargs="+", help="vasprun.xml, OUTCAR or .extxyz files")
    p.add_argument("--format", default=None, help="override type detection: vasprun, outcar, extxyz or any ASE "
                                                  "format name (common.formats)")
    p.add_argument("--oracle", default=None, help="level of theory recorded with the labels (default vasp for VASP files; "
                                                   "extxyz frames must carry info oracle= or use this)")
    p.add_argument("--temperature-K", type=float, default=None, help="MD temperature of the run in K")
    p.add_argument("--run-id", default=None, help="run id recorded with every frame")
    p.add_argument("--stride", type=int, default=1, help="keep every N-th frame (default 1)")
    p.add_argument("--allow-truncated", action="store_true", help="keep the complete frames of a truncated VASP file")
    _store_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_import)
    p = dsub.add_parser("stats", help="frames per oracle, source and formula")
    _store_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_stats)
    p = dsub.add_parser("query", help="select frames by elements (subset / shared elements), oracle, source")
    _store_arg(p)
    p.add_argument("--subset-of", metavar="ELS", help="frame elements must be a subset of these, e.g. Li,Ge,P,S")
    p.add_argument("--shares-with", metavar="FORMULA", help="frames sharing >= --min-shared elements with FORMULA")
    p.add_argument("--min-shared", type=int, default=1, help="minimum shared elements (default 1)")
    p.add_argument("--oracle", default=None, help="only frames labelled by this oracle (e.g. chgnet-0.3.0)")
    p.add_argument("--source", default=None, help="only frames whose source starts with this (e.g. aimd)")
    p.add_argument("--training", action="store_true", help="training selection: refuse to mix energies of oracles")
    p.add_argument("--out", default=None, help="write the selected frames (extxyz, atomic)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_query)

    # ---- candidates --------------------------------------------------------------------------------
    c = subparsers.add_parser("candidates", help="candidate structures for compositions (ionic substitution)",
                              description=CANDIDATES_HELP, formatter_class=raw)
    c.add_argument("formulas", nargs="*", help="formulas, e.g. Li10SiP2S12 Li3PSe4")
    c.add_argument("--from", dest="table", metavar="FILE.parquet", help="chemspace composition table (allowed rows)")
    c.add_argument("--prototypes", default=None, help="comma-separated library names or structure files (default all)")
    c.add_argument("--relax", action="store_true", help="relax every candidate with the oracle (cached)")
    _oracle_args(c)
    c.add_argument("--max-volume-change", type=float, default=0.25, help="reject relaxations changing V more (default 0.25)")
    c.add_argument("--out-dir", default=None, help="write candidates.json and one CIF per accepted candidate")
    c.add_argument("--json", action="store_true", help="print JSON records")
    c.set_defaults(func=cmd_candidates)


# ---- handlers ------------------------------------------------------------------------------------
def cmd_structures_list(args) -> int:
    from reference.structures import library_names, library_structure

    rows = [library_structure(n).summary() for n in library_names()]
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'key':14s} {'spacegroup':10s} {'atoms':>5s}  {'a,b,c (Å)':24s} source")
    for r in rows:
        abc = ",".join(f"{x:.3f}" for x in r["lattice_A"])
        print(f"{r['key']:14s} {r['spacegroup']:10s} {r['n_atoms']:5d}  {abc:24s} {r['source_id']}")
    return 0


def _summary(structure, prov) -> dict:
    return {"formula": structure.composition.reduced_formula, "n_atoms": len(structure),
            "lattice_A": [round(x, 4) for x in structure.lattice.abc],
            "angles_deg": [round(x, 3) for x in structure.lattice.angles],
            "volume_A3": round(structure.volume, 3), **prov}


def cmd_structures_show(args) -> int:
    from reference.structures import get_structure

    structure, prov = get_structure(args.structure)
    info = _summary(structure, prov)
    if args.out:
        info["written"] = _write_structure(structure, args.out)
    if args.json:
        print(json.dumps(info, default=str))
    else:
        for k, v in info.items():
            print(f"{k}: {v}")
    return 0


def cmd_structures_relax(args) -> int:
    from reference.structures import get_structure, relax

    structure, prov = get_structure(args.structure)
    oracle = _make_oracle(args)
    relaxed, info = relax(structure, oracle.calculator, oracle.name, fmax=args.fmax, steps=args.steps,
                          relax_cell=not args.fixed_cell, cache=not args.no_cache)
    out = {**_summary(relaxed, prov), "relaxation": info}
    if args.out:
        out["written"] = _write_structure(relaxed, args.out)
    _print(out, args.json, "\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0


def cmd_reference_oracles(args) -> int:
    from reference.oracles import available_oracles

    av = available_oracles()
    _print(av, args.json, "\n".join(f"{k:10s} {'available' if ok else 'not installed'}" for k, ok in av.items()))
    return 0


def cmd_reference_md(args) -> int:
    from pymatgen.io.ase import AseAtomsAdaptor

    from common.atomic import check_writable
    from common.errors import InputError
    from reference.reference_md import ReferencePlan, run_reference_md
    from reference.store import LabelStore
    from reference.structures import get_structure

    if args.steps < 1:
        raise InputError(f"--steps must be >= 1 (reference MD needs steps >= 1), got {args.steps}")
    protocol = ReferencePlan.nvt(temperature_K=args.temperature_K, steps=args.steps, timestep_fs=args.timestep_fs,
                                 thermostat="nve" if args.ensemble == "nve" else "langevin",
                                 friction_per_fs=args.friction_per_fs, stride=args.stride,
                                 label_every=args.label_every, seed=args.seed).validate()
    check_writable(args.out)
    structure, prov = get_structure(args.structure)
    atoms = AseAtomsAdaptor.get_atoms(structure)
    if args.supercell:
        try:
            reps = [int(x) for x in args.supercell.lower().split("x")]
            assert len(reps) == 3 and min(reps) >= 1
        except (ValueError, AssertionError):
            raise InputError(f"--supercell {args.supercell!r}: give three positive integers like 2x2x1") from None
        atoms = atoms.repeat(reps)
    store = None if args.no_store else LabelStore(args.store)
    oracle = _make_oracle(args)
    from reference.oracles import OracleError

    try:
        summary = run_reference_md(atoms, oracle, protocol, args.out, store=store, run_id=args.run_id,
                                   metadata={"structure": args.structure, "source_id": prov.get("source_id")}).to_dict()
    except OracleError as exc:
        print(f"matscreen: error: {exc}", file=sys.stderr)
        return 1
    _print(summary, args.json, "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0


def cmd_data_import(args) -> int:
    from reference.aimd_import import import_aimd
    from reference.store import LabelStore

    store = LabelStore(args.store)
    counts = import_aimd(args.files, store, fmt=args.format, oracle=args.oracle, temperature_K=args.temperature_K,
                         run_id=args.run_id, allow_truncated=args.allow_truncated, stride=args.stride)
    out = {"store": str(store.root), "imported": counts, "total_frames": sum(counts.values())}
    _print(out, args.json, "\n".join(f"{n:6d} frames  {f}" for f, n in counts.items()) + f"\nstore: {store.root}")
    return 0


def cmd_data_stats(args) -> int:
    from reference.store import LabelStore

    store = LabelStore(args.store, create=False)
    st = store.stats().to_dict()
    st["store"] = str(store.root)
    _print(st, args.json, "\n".join(f"{k}: {v}" for k, v in st.items()))
    return 0


def cmd_data_query(args) -> int:
    from ase.io import write

    from common.atomic import atomic_path
    from common.errors import InputError
    from reference.store import LabelStore

    store = LabelStore(args.store, create=False)
    subset = [e.strip() for e in args.subset_of.split(",") if e.strip()] if args.subset_of else None
    filters = dict(elements_subset=subset, shares_with=args.shares_with, min_shared=args.min_shared,
                   oracle=args.oracle, source=args.source)
    if args.min_shared < 1:
        raise InputError(f"--min-shared must be >= 1 (got {args.min_shared})")
    frames = store.training_set(**filters) if args.training else store.query(**filters)
    out = {"store": str(store.root), "frames": len(frames),
           "by_formula": _count(a.get_chemical_formula(mode="reduce") for a in frames),
           "by_oracle": _count(a.info.get("oracle") for a in frames)}
    if args.out:
        with atomic_path(args.out) as tmp:
            write(tmp, frames, format="extxyz")
        out["written"] = args.out
    _print(out, args.json, "\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0


def _count(items) -> dict:
    from collections import Counter

    return dict(Counter(items))


def cmd_candidates(args) -> int:
    from common.atomic import atomic_write_text
    from common.errors import InputError
    from reference.candidates import formulas_from, parse_composition, propose

    formulas = list(args.formulas)
    if args.table:
        formulas += formulas_from(args.table)
    if not formulas:
        raise InputError("no compositions given; list formulas (e.g. Li10SiP2S12) or pass --from table.parquet")
    for formula in formulas:  # bad input is exit 2, not a rejected candidate
        parse_composition(formula)
    if args.out_dir:
        from common.atomic import check_writable

        check_writable(f"{args.out_dir}/candidates.json")
    prototypes = [p.strip() for p in args.prototypes.split(",")] if args.prototypes else None
    oracle = _make_oracle(args) if args.relax else None
    cands = propose(formulas, prototypes=prototypes, oracle=oracle, max_volume_change=args.max_volume_change)
    records = [c.to_dict() for c in cands]
    if args.out_dir:
        for c, rec in zip(cands, records):
            if c.structure is not None and c.status in ("proposed", "relaxed"):
                rec["cif"] = _write_structure(c.structure, f"{args.out_dir}/{c.formula}__{c.prototype}.cif")
        atomic_write_text(f"{args.out_dir}/candidates.json", json.dumps(records, indent=1, default=str))
    if args.json:
        print(json.dumps(records, default=str))
    else:
        for rec in records:
            extra = f"  ({rec['reason']})" if rec["reason"] else ""
            print(f"{rec['formula']:16s} {str(rec['prototype']):14s} {rec['status']:12s}{extra}")
    return 0 if any(c.status in ("proposed", "relaxed") for c in cands) else 1
