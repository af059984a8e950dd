"""The reference study's transferability benchmark as a matscreen run (``matscreen benchmark run``).

Another order of the campaign's steps, by the same roles (``actors.roles``) with the same settings
(``orchestrator.campaign.configs``): label oracle MD of the *training* material only (Li10GeP2S12)
at the study temperatures; train one ensemble per architecture on exactly those labels; then for
every architecture x material (the training material and the transfer materials Li3PS4, Li4GeS4)
run the student with the campaign's MD engine (``md.runner``) and judge it with the campaign's judge:

* ``force_mae_meV_A``  ensemble-mean force error on oracle frames of that material (meV/Å);
* ``rdf_mae``          mean RDF MAE of the student runs at the reference T against the oracle run;
* ``verdict``          the judge's status, worst over every replica and temperature
                       (``stable | rdf_mismatch | uncertain | framework_drift | atom_fusion | exploded``);
* ``neg_log10_sigma_300K`` −log10 of the Arrhenius-extrapolated 300 K conductivity (σ in S/cm, as the
                       study reports it) from the stable runs (the campaign's transport function);
* ``note``             why a number is missing (e.g. no Arrhenius fit).

The table is printed and logged to MLflow through the campaign's Tracker (experiment
``matscreen-<name>``, run ``<name>-table``, ``benchmark/table.{csv,md,json}`` artifacts, one metric
set per cell).  Labels go to the data store as deterministic shards ``campaign-<name>-<material>_<T>K-r0``.
With Ray (``RAY_ADDRESS`` set, or ``--ray``) the roles are Ray actors, several per role, otherwise
plain objects in this process.

The spec is a campaign spec (same keys and validation, ``orchestrator.campaign.spec``) plus a
``benchmark`` section validated here; every bad key is an error naming its path.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

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
COLUMNS = ["model", "material", "role", "force_mae_meV_A", "rdf_mae", "verdict", "neg_log10_sigma_300K", "note"]


def load_benchmark(path: str | os.PathLike) -> tuple[dict, dict]:
    """(benchmark section, validated campaign cfg dict) from a benchmark YAML; InputError names the key."""
    import yaml

    from orchestrator.campaign.spec import validate

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


class _Roles:
    """The campaign's roles, in this process (serial) or as Ray actors (``workers`` per role)."""

    def __init__(self, cfg: dict, use_ray: bool):
        from actors import roles
        from orchestrator.campaign import configs

        self.use_ray = use_ray
        r = cfg["resources"]
        make = {"reference": (roles.ReferenceWorker, (configs.oracle(cfg), r["cpus_per_oracle"]), r["cpus_per_oracle"], 0.0),
                "md": (roles.MDWorker, (r["cpus_per_md_worker"],), r["cpus_per_md_worker"], r["gpus_per_md_worker"] or 0.0),
                "trainer": (roles.Trainer, (r["cpus_per_trainer"],), r["cpus_per_trainer"], 0.0),
                "judge": (roles.StabilityJudge, (), 0.0, 0.0)}
        counts = {"reference": r["reference_workers"], "md": r["md_workers"], "trainer": 1, "judge": 1}
        if use_ray:
            from orchestrator.ops.ray_runtime import ray_init

            ray_init()
            self.pools = {k: [roles.remote(cls, num_cpus=cpus, num_gpus=gpus).remote(*args) for _ in range(counts[k])]
                          for k, (cls, args, cpus, gpus) in make.items()}
        else:
            self.pools = {k: [cls(*args)] for k, (cls, args, _, _) in make.items()}

    def map(self, role: str, method: str, calls: list[tuple]) -> list:
        """``method(*args)`` for every ``args`` of ``calls`` on the role's workers (in parallel with Ray)."""
        pool = self.pools[role]
        if not self.use_ray:
            return [getattr(pool[0], method)(*args) for args in calls]
        import ray

        return ray.get([getattr(pool[i % len(pool)], method).remote(*args) for i, args in enumerate(calls)])

    def close(self) -> None:
        if self.use_ray:
            import ray

            for pool in self.pools.values():
                for a in pool:
                    ray.kill(a, no_restart=True)


def _neg_log10_sigma_S_cm(result: dict) -> float:
    value = result.get("log10_sigma_300K")  # sigma in mS/cm
    return float("nan") if value is None else -(float(value) - 3.0)


def run_benchmark(spec_path: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                  use_ray: bool | None = None, tracking_uri: str | None = None) -> list[dict]:
    """Run the benchmark described by ``spec_path``; returns the table rows (also written and logged)."""
    from orchestrator.campaign import configs
    from orchestrator.campaign.spec import store_root
    from reference.store import shard_name
    from reference.structures import get_structure, write_structure

    bench, cfg = load_benchmark(spec_path)
    store = store_root(None, cfg)                    # $MATSCREEN_STORE, else store.path
    out = Path(out_dir or store / cfg["name"]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    use_ray = bool(os.environ.get("RAY_ADDRESS")) if use_ray is None else use_ray
    md, name = cfg["md"], cfg["name"]
    train_mat, materials = bench["train_on"], [bench["train_on"], *bench["test_on"]]
    t_ref = md["reference_temperature_K"]
    temps = sorted(set(md["temperatures_K"]) | {t_ref})
    structures = {m: write_structure(get_structure(bench["structures"][m])[0], out / "structures" / f"{m}.extxyz")
                  for m in materials}
    roles = _Roles(cfg, use_ray)
    try:
        # 1. oracle MD: the training material at every temperature (training data, RDF reference),
        #    transfer materials at the reference temperature (RDF reference, force test frames)
        ref_keys = [(m, t) for m in materials for t in (temps if m == train_mat else [t_ref])]
        calls = []
        for m, t in ref_keys:
            steps, labels = ((bench["training_steps"], bench["training_steps"] // md["save_every"]) if m == train_mat
                             else (max(md["reference_steps"], bench["test_frames"] * md["save_every"]), bench["test_frames"]))
            calls.append((structures[m], configs.reference_protocol(cfg, t, steps, labels),
                          str(out / "reference" / f"{m}_{t:g}K.h5"), str(store), shard_name(name, f"{m}_{t:g}K", 0),
                          f"{name}/{m}_{t:g}K"))
        refs = dict(zip(ref_keys, roles.map("reference", "reference_md", calls)))
        for (m, t), ref in refs.items():
            if ref["error"] or not ref["labelled_frames"]:
                raise InputError(f"oracle MD of {m} at {t:g} K failed ({ref['error'] or 'no labels'}); "
                                 "check oracle.name and the structure")

        # 2. one ensemble per architecture, trained on the training material's labels only
        selection = {"shards": [[Path(refs[(train_mat, t)]["shard"]).name, list(range(refs[(train_mat, t)]["labelled_frames"]))]
                                for t in temps], "oracle": refs[(train_mat, t_ref)]["oracle"]}
        archs = bench["architectures"]
        trained = dict(zip(archs, roles.map("trainer", "train", [
            (str(store), selection, {**configs.ensemble(cfg), "architectures": [a]}, configs.training(cfg),
             str(out / "models" / a), cfg["seed"]) for a in archs])))

        # 3. student MD: every architecture x material, all temperatures x replicas of it as one batch
        md_keys = [(a, m) for a in archs for m in materials]
        runs = dict(zip(md_keys, roles.map("md", "run", [
            (trained[a]["members"], structures[m], temps, md["replicas"],
             configs.protocol(cfg, md["steps"], md["equilibration_steps"]), configs.monitor(cfg), cfg["seed"] + 1,
             str(out / "md" / a / m)) for a, m in md_keys])))

        # 4. judge, force errors and transport by the campaign's judge role
        rows = [_row(roles, cfg, a, m, m == train_mat, trained[a], runs[(a, m)], refs[(m, t_ref)], out)
                for a, m in md_keys]
    finally:
        roles.close()
    csv_text, table = table_csv(rows), format_table(rows)
    atomic_write_text(out / "table.csv", csv_text)
    atomic_write_text(out / "table.md", table + "\n")
    atomic_write_text(out / "table.json", json.dumps([{k: _json_num(v) for k, v in r.items()} for r in rows], indent=2) + "\n")
    _log_mlflow(cfg, bench, rows, out, tracking_uri)
    return rows


def _row(roles: _Roles, cfg: dict, arch: str, material: str, training: bool, trained: dict, runs: list[dict],
         ref: dict, out: Path) -> dict:
    """One table row from the judge role: force MAE, verdicts (worst of all runs), RDF MAE and -log10 sigma."""
    import math

    from orchestrator.campaign import configs

    members = trained["members"]
    (force,) = roles.map("judge", "force_errors", [(members, ref["shard"], None, cfg["stability"]["false_alarm_rate"])])
    (verdicts,) = roles.map("judge", "judge_runs", [([r["trajectory"] for r in runs], ref["trajectory"],
                                                     configs.thresholds(cfg))])
    from analysis.verdicts import Verdict, worst

    verdict = worst([Verdict.from_dict(v) for v in verdicts]).status
    maes = [v["evidence"]["rdf_mae"] for v in verdicts if "rdf_mae" in v["evidence"]]
    sigma, note = float("nan"), ""
    # an inconclusive run broke nothing: its numbers are reported, flagged by the verdict column
    stable = [r["trajectory"] for r, v in zip(runs, verdicts) if v["status"] in ("stable", "inconclusive")]
    if verdict in ("stable", "inconclusive"):
        (res,) = roles.map("judge", "transport", [(stable, cfg["md"]["species"], str(out / "plots" / arch / material),
                                                   cfg["stability"]["min_msd_A2"])])
        sigma = _neg_log10_sigma_S_cm(res["transport"])
        note = "" if math.isfinite(sigma) else "; ".join(res["transport"]["notes"])[:120] or "no Arrhenius fit"
    return {"model": arch, "material": material, "role": "train" if training else "transfer",
            "force_mae_meV_A": force["force_mae_meV_A"], "rdf_mae": sum(maes) / len(maes) if maes else float("nan"),
            "verdict": verdict, "neg_log10_sigma_300K": sigma, "note": note}


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
    head = ["model", "material", "role", "force MAE (meV/Å)", "RDF MAE", "verdict", "-log10 σ300K (S/cm)", "note"]
    body = [[r["model"], r["material"], r["role"], _fmt(r["force_mae_meV_A"], ".1f"), _fmt(r["rdf_mae"], ".4f"),
             r["verdict"], _fmt(r["neg_log10_sigma_300K"], ".2f"), r.get("note", "")] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def _log_mlflow(cfg: dict, bench: dict, rows: list[dict], out: Path, tracking_uri: str | None) -> str:
    """The table through the campaign's Tracker (the only MLflow writer)."""
    from orchestrator.campaign.tracking import Tracker, experiment_name, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri or cfg["tracking"]["uri"])
    params = {"train_on": bench["train_on"], "test_on": ",".join(bench["test_on"]),
              "architectures": ",".join(bench["architectures"]), "oracle": cfg["oracle"]["name"],
              "temperatures_K": ",".join(f"{t:g}" for t in cfg["md"]["temperatures_K"]),
              "replicas": cfg["md"]["replicas"], "steps": cfg["md"]["steps"]}
    return Tracker(uri, experiment_name(cfg)).log_benchmark(f"{cfg['name']}-table", params, rows,
                                                            [str(out / f) for f in ("table.csv", "table.md", "table.json")])
