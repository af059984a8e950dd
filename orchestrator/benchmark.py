"""The reference study's transferability benchmark as a matscreen run (``matscreen benchmark run``).

Protocol (``campaigns/paper_benchmark.yaml``): label oracle MD of the *training* material only
(Li10GeP2S12) at the study temperatures; train one ensemble per architecture (SchNet, DimeNet++,
PaiNN) on it; then for every architecture x material (the training material and the transfer
materials Li3PS4, Li4GeS4):

* ``force_mae_meV_A``  ensemble-mean force error on oracle frames of that material (meV/Å);
* ``rdf_mae``          RDF mean absolute error, student MD vs oracle MD, at the reference T;
* ``verdict``          ``stable``, or ``unstable: fusion|exploded|rdf_mismatch`` (thresholds from
                       ``stability``; fusion/explosion checked in every replica and temperature);
* ``neg_log10_sigma_300K`` −log10 of the Arrhenius-extrapolated 300 K conductivity (σ in S/cm,
                       as the study reports it) from ``md.replicas`` replicas per temperature.

The table is printed and logged to MLflow (experiment ``matscreen-<name>``, one parent run,
``benchmark/table.csv`` and ``benchmark/table.md`` artifacts, one metric set per cell).  Work
items are independent; with Ray available (``RAY_ADDRESS`` set, or ``--ray``) MD and training run
as Ray tasks asking for ``resources.gpus_per_md_worker`` GPUs, otherwise serially in-process.

The spec is a campaign spec (same keys and validation, ``orchestrator.spec``) plus a
``benchmark`` section validated here; every bad key is an error naming its path.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

from common.atomic import atomic_write_text
from common.errors import InputError

BENCHMARK_KEYS = {
    "train_on": (str, "material whose oracle data trains the models"),
    "test_on": (list, "transfer materials (tested, never trained on)"),
    "structures": (dict, "material -> CIF/POSCAR path (relative to the spec file)"),
    "architectures": (list, "one ensemble per architecture, e.g. [schnet, dimenetpp, painn]"),
    "training_steps": (int, "oracle MD steps per temperature on the training material"),
    "test_frames": (int, "oracle frames per transfer material for the force MAE"),
}
COLUMNS = ["model", "material", "role", "force_mae_meV_A", "rdf_mae", "verdict", "neg_log10_sigma_300K"]


def load_benchmark(path: str | os.PathLike) -> tuple[dict, dict]:
    """(benchmark section, validated campaign cfg dict) from a benchmark YAML; InputError names the key."""
    import yaml

    from orchestrator.spec import validate

    path = Path(path)
    if not path.is_file():
        raise InputError(f"benchmark spec {path} not found; see campaigns/paper_benchmark.yaml")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InputError(f"{path}{where}: not valid YAML; fix the syntax") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmark"), dict):
        raise InputError(f"{path}: benchmark: missing section; add `benchmark:` with train_on, test_on, structures")
    bench = dict(data.pop("benchmark"))
    for key in bench:
        if key not in BENCHMARK_KEYS:
            import difflib

            near = difflib.get_close_matches(key, list(BENCHMARK_KEYS), n=1)
            hint = f"; did you mean 'benchmark.{near[0]}'?" if near else f"; valid keys: {', '.join(BENCHMARK_KEYS)}"
            raise InputError(f"benchmark.{key}: unknown key{hint}")
    for key, (kind, meaning) in BENCHMARK_KEYS.items():
        if key not in bench:
            raise InputError(f"benchmark.{key}: missing; give the {meaning}")
        if not isinstance(bench[key], kind) or (kind is int and isinstance(bench[key], bool)):
            raise InputError(f"benchmark.{key}: expected a {kind.__name__}, got {bench[key]!r}")
    for mat in [bench["train_on"], *bench["test_on"]]:
        if mat not in bench["structures"]:
            raise InputError(f"benchmark.structures.{mat}: missing; give a CIF/POSCAR path for {mat}")
        if str(bench["structures"][mat]).startswith("library:"):
            continue  # built from reference/library.json at run time
        p = Path(bench["structures"][mat])
        p = p if p.is_absolute() else path.parent / p
        if not p.is_file():
            raise InputError(f"benchmark.structures.{mat}: {p} not found; give an existing CIF/POSCAR path")
        bench["structures"][mat] = str(p.resolve())
    from models.registry import ARCHITECTURES

    for i, arch in enumerate(bench["architectures"]):
        if arch not in ARCHITECTURES and arch != "lj":
            raise InputError(f"benchmark.architectures[{i}]: unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    cfg = validate(data).to_dict()
    return bench, cfg


class _Serial:
    def map(self, fn: Callable, calls: list[tuple], gpus: float = 0.0) -> list:
        return [fn(*args) for args in calls]


class _RayTasks:
    def __init__(self, cpus: float):
        import ray

        from orchestrator.loop import ray_init

        ray_init()
        self.ray, self.cpus = ray, cpus

    def map(self, fn: Callable, calls: list[tuple], gpus: float = 0.0) -> list:
        task = self.ray.remote(fn).options(num_cpus=self.cpus, num_gpus=gpus, max_retries=2)
        return self.ray.get([task.remote(*args) for args in calls])


def _neg_log10_sigma_S_cm(result: dict) -> float:
    value = result.get("log10_sigma_300K")  # sigma in mS/cm
    return float("nan") if value is None else -(float(value) - 3.0)


def run_benchmark(spec_path: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                  use_ray: bool | None = None, tracking_uri: str | None = None) -> list[dict]:
    """Run the benchmark described by ``spec_path``; returns the table rows (also printed/logged)."""
    from actors import science
    from analysis.rdf import rdf_mae as rdf_mae_of

    bench, cfg = load_benchmark(spec_path)
    from orchestrator.spec import store_root

    out = Path(out_dir or store_root(None, cfg) / cfg["name"]).resolve()  # $MATSCREEN_STORE, else store.path
    out.mkdir(parents=True, exist_ok=True)
    use_ray = bool(os.environ.get("RAY_ADDRESS")) if use_ray is None else use_ray
    gpus = cfg["resources"]["gpus_per_md_worker"] or 0.0
    pool = _RayTasks(cfg["resources"]["cpus_per_md_worker"]) if use_ray else _Serial()
    md, seed, oracle = cfg["md"], cfg["seed"], cfg["oracle"]
    train_mat, materials = bench["train_on"], [bench["train_on"], *bench["test_on"]]
    t_ref = md["reference_temperature_K"]
    from ase.io import read

    structures = {}  # the science glue reads extended XYZ: convert each CIF/POSCAR once
    for mat in materials:
        source = bench["structures"][mat]
        atoms = _library_atoms(source[len("library:"):]) if source.startswith("library:") else read(source)
        structures[mat] = science._write_frames(out / "structures" / f"{mat}.extxyz", [atoms])
    bench = dict(bench, structures=structures)
    temps = sorted(set(md["temperatures_K"]) | {t_ref})

    # 1. oracle MD: training material at every temperature (training data + RDF reference);
    #    transfer materials at the reference temperature only (RDF reference + force test frames)
    ref_calls, ref_keys = [], []
    for mat in materials:
        for t in (temps if mat == train_mat else [t_ref]):
            steps = bench["training_steps"] if mat == train_mat else max(md["reference_steps"], bench["test_frames"] * md["save_every"])
            path = out / "reference" / f"{mat}_{t:g}K.h5"
            path.parent.mkdir(parents=True, exist_ok=True)
            ref_calls.append((bench["structures"][mat], oracle, float(t), steps, md["timestep_fs"], md["save_every"], seed, str(path)))
            ref_keys.append((mat, t))
    refs = dict(zip(ref_keys, pool.map(science.reference_md, ref_calls)))
    label_files = {}
    for (mat, t), status in refs.items():
        frames = science.trajectory_frames(status.get("path") or str(out / "reference" / f"{mat}_{t:g}K.h5"),
                                           labelled=True, oracle=status.get("oracle"), source=f"oracle-md:{mat}")
        # keep physical frames only: finite labels, none after an oracle-MD blow-up
        good = [f for f in frames[1:] if _finite(f)]
        if not good:
            raise InputError(f"oracle MD of {mat} at {t:g} K gave no usable frames; check oracle.name and the structure")
        label_files[(mat, t)] = science._write_frames(out / "labels" / f"{mat}_{t:g}K.extxyz", good)

    # 2. one ensemble per architecture, trained on the training material only
    train_labels = [label_files[(train_mat, t)] for t in temps]
    models = {a: dict(cfg["models"], architectures=[a]) for a in bench["architectures"]}
    trained = dict(zip(bench["architectures"], pool.map(science.train_ensemble, [
        (train_labels, models[a], cfg["training"], None, str(out / "models" / a), seed) for a in bench["architectures"]],
        gpus=gpus)))

    # 3. student MD for every architecture x material x temperature x replica
    md_calls, md_keys = [], []
    for a in bench["architectures"]:
        for mat in materials:
            for t in temps:
                for k in range(md["replicas"]):
                    path = out / "md" / a / f"{mat}_{t:g}K_r{k}.h5"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    md_calls.append((trained[a]["members"], bench["structures"][mat], float(t), md["steps"], md["timestep_fs"],
                                     md["save_every"], seed + 1000 * k + 1, str(path), cfg["stability"]))
                    md_keys.append((a, mat, t, k))
    runs = dict(zip(md_keys, pool.map(science.student_md, md_calls, gpus=gpus)))

    # 4. the table
    rows = []
    for a in bench["architectures"]:
        for mat in materials:
            mine = {key: r for key, r in runs.items() if key[0] == a and key[1] == mat}
            force = science.force_errors(trained[a]["members"], label_files[(mat, t_ref)])["force_mae_meV_A"]
            ref_path = refs[(mat, t_ref)].get("path") or str(out / "reference" / f"{mat}_{t_ref:g}K.h5")
            g_ref = science.rdf(ref_path, skip=2)
            maes = []
            for (_, _, t, _), r in mine.items():
                if t == t_ref and not (r.get("fusion") or r.get("exploded")):
                    maes.append(float(rdf_mae_of(science.rdf(r["path"], skip=2), g_ref)))
            rdf_mae = sum(maes) / len(maes) if maes else float("nan")
            if any(r.get("fusion") for r in mine.values()):
                verdict = "unstable: fusion"
            elif any(r.get("exploded") for r in mine.values()):
                verdict = "unstable: exploded"
            elif not maes or rdf_mae > cfg["stability"]["rdf_mae"]:
                verdict = "unstable: rdf_mismatch"
            else:
                verdict = "stable"
            sigma = float("nan")
            if verdict == "stable":
                try:
                    result = science.transport([dict(r) for r in mine.values()], bench["structures"][mat], md["equilibration_steps"])
                    sigma = _neg_log10_sigma_S_cm(result)
                    if not math.isfinite(sigma):
                        verdict = f"stable (no sigma: {str(result.get('note', 'no Arrhenius fit'))[:60]})"
                except (ValueError, ZeroDivisionError, RuntimeError) as exc:  # too short / no diffusion
                    sigma = float("nan")
                    verdict = f"stable (no sigma: {str(exc).splitlines()[0][:60]})"
            rows.append({"model": a, "material": mat, "role": "train" if mat == train_mat else "transfer",
                         "force_mae_meV_A": force, "rdf_mae": rdf_mae, "verdict": verdict,
                         "neg_log10_sigma_300K": sigma})
    csv_text, table = table_csv(rows), format_table(rows)
    atomic_write_text(out / "table.csv", csv_text)
    atomic_write_text(out / "table.md", table + "\n")
    atomic_write_text(out / "table.json", json.dumps([{k: _json_num(v) for k, v in r.items()} for r in rows], indent=2) + "\n")
    _log_mlflow(cfg, bench, rows, out, tracking_uri)
    return rows


def _library_atoms(name: str):
    """An ordered cell of ``name`` from the reference structure library, as ase.Atoms."""
    import importlib

    ref = importlib.import_module("reference")
    for attr in ("library_structure", "get_structure", "structure_from_library", "load_structure", "structure"):
        fn = getattr(ref, attr, None)
        if callable(fn):
            structure = fn(name)
            if not hasattr(structure, "get_positions"):
                from pymatgen.io.ase import AseAtomsAdaptor

                structure = AseAtomsAdaptor.get_atoms(structure)
            return structure
    raise InputError(f"benchmark.structures: library:{name} needs the reference structure library, not available "
                     "in this install; give a CIF/POSCAR path instead")


def _finite(atoms) -> bool:
    import numpy as np

    try:
        return bool(np.isfinite(atoms.get_positions()).all() and np.isfinite(atoms.get_forces()).all()
                    and math.isfinite(atoms.get_potential_energy()))
    except Exception:  # noqa: BLE001 - a frame without labels is not usable
        return False


def _json_num(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def table_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows([{k: ("" if _json_num(v) is None else v) for k, v in r.items()} for r in rows])
    return buf.getvalue()


def format_table(rows: list[dict]) -> str:
    """The model x material table as Markdown (also readable on a console)."""
    head = ["model", "material", "role", "force MAE (meV/Å)", "RDF MAE", "verdict", "-log10 σ300K (S/cm)"]
    body = [[r["model"], r["material"], r["role"], _fmt(r["force_mae_meV_A"], ".1f"), _fmt(r["rdf_mae"], ".4f"),
             r["verdict"], _fmt(r["neg_log10_sigma_300K"], ".2f")] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def _log_mlflow(cfg: dict, bench: dict, rows: list[dict], out: Path, tracking_uri: str | None) -> str:
    from mlflow import MlflowClient

    from orchestrator.secrets import redact
    from orchestrator.tracking import default_artifact_root, experiment_name, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri or cfg["tracking"]["uri"])
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(uri)
    name = experiment_name(cfg)
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        name, artifact_location=default_artifact_root() if uri.startswith("sqlite") else None)
    run = client.create_run(exp_id, run_name=f"{cfg['name']}-table", tags={"matscreen.kind": "benchmark"})
    rid = run.info.run_id
    params = redact({"train_on": bench["train_on"], "test_on": ",".join(bench["test_on"]),
                     "architectures": ",".join(bench["architectures"]), "oracle": cfg["oracle"]["name"],
                     "temperatures_K": ",".join(f"{t:g}" for t in cfg["md"]["temperatures_K"]),
                     "replicas": cfg["md"]["replicas"], "steps": cfg["md"]["steps"]})
    for k, v in params.items():
        client.log_param(rid, k, str(v))
    for r in rows:
        for metric in ("force_mae_meV_A", "rdf_mae", "neg_log10_sigma_300K"):
            v = r[metric]
            if isinstance(v, (int, float)) and math.isfinite(v):
                client.log_metric(rid, f"{metric}.{r['model']}.{r['material']}", float(v))
        client.set_tag(rid, f"verdict.{r['model']}.{r['material']}", r["verdict"])
    for f in ("table.csv", "table.md", "table.json"):
        client.log_artifact(rid, str(out / f), "benchmark")
    client.set_terminated(rid, "FINISHED")
    return rid
