"""The reference study's transferability benchmark as a matscreen run (``matscreen benchmark run``).

Another order of the campaign's steps, by the same roles (``actors.roles``) with the same settings
(``orchestrator.campaign.spec``): label oracle MD of the *training* material only (Li10GeP2S12)
at the study temperatures; train one ensemble per architecture on exactly those labels; then for
every architecture x material (the training material and the transfer materials Li3PS4, Li4GeS4)
run the student with the campaign's MD engine (``md.runner``) and judge it with the campaign's judge:

* ``force_mae_meV_A``  ensemble-mean force error on oracle frames of that material (meV/Å);
* ``rdf_mae``, ``rdf_noise_floor``, ``rdf_status``  the structure check of the student runs at the
                       reference temperature against the oracle run (mean MAE, the oracle's own noise
                       floor, pass | mismatch | inconclusive over the replicas);
* ``log10_D_ratio`` ± ``log10_D_ratio_err``, ``dynamics_status``  the dynamics check: log10 of the
                       student's D(Li) over the oracle's at the reference temperature (replicas combined
                       by inverse variance), and its status over the replicas;
* ``verdict``          the judge's status, worst over every replica and temperature (it names the check
                       that caught a failure: ``rdf_mismatch``, ``dynamics_mismatch``, ``atom_fusion``, ...);
* ``neg_log10_sigma_300K`` ± ``_err``  −log10 of the Arrhenius-extrapolated 300 K conductivity, σ in
                       mS/cm as the study reports it, from the student's unbroken runs (the campaign's
                       transport function: too-short temperatures are left out);
* ``oracle_neg_log10_sigma_300K`` ± ``_err``  the same from the oracle's own MD of that material at the
                       same temperatures (one run each): what the student should reproduce;
* ``sigma_status``     the σ(300 K) check: student against oracle with both errors, tolerance
                       ``SIGMA_LOG10_TOLERANCE`` (0.5), the judge's false-alarm rate (pass | mismatch |
                       inconclusive); the dynamics check sees one temperature, this one the extrapolation;
* ``activation_energy_eV`` ± ``_err``, ``oracle_activation_energy_eV`` ± ``_err``  both Arrhenius slopes;
* ``note``             why a number is missing, or which checks stayed open.

A second table, one row per material, puts the oracle beside the known values of the structure
library (experiment, the study's AIMD) with their sources: a student cannot be better than its oracle.

Rerunning the same command resumes: every finished oracle run, training and student MD batch leaves a
JSON record beside its output (``reference/<m>_<T>K.json``, ``models/<arch>/training.json``,
``md/<arch>/<m>/runs.json``) and is not redone; the judging is always redone (minutes).

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
import re
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text
from common.errors import InputError
from common import vocabulary as V

BENCHMARK_KEYS = {
    "train_on": (str, "material whose oracle data trains the models"),
    "test_on": (list, "transfer materials (tested, never trained on)"),
    "structures": (dict, "material -> CIF/POSCAR path (relative to the spec file)"),
    "architectures": (list, "one ensemble per architecture, e.g. [schnet, dimenetpp, painn]"),
    "training_steps": (int, "oracle MD steps per temperature on the training material"),
    "test_frames": (int, "oracle frames per transfer material for the force MAE"),
}
COLUMNS = ["model", "material", "role", "force_mae_meV_A", "rdf_mae", "rdf_noise_floor", "rdf_status",
           "log10_D_ratio", "log10_D_ratio_err", "dynamics_status", "verdict", "neg_log10_sigma_300K",
           "neg_log10_sigma_300K_err", "oracle_neg_log10_sigma_300K", "oracle_neg_log10_sigma_300K_err",
           "sigma_status", "activation_energy_eV", "activation_energy_eV_err", "oracle_activation_energy_eV",
           "oracle_activation_energy_eV_err", "note"]
# |log10 σ300K student − oracle| the σ check allows (a factor ~3): the target the study's Table 2 sets itself
SIGMA_LOG10_TOLERANCE = 0.5
MATERIAL_COLUMNS = ["material", "oracle_neg_log10_sigma_300K", "oracle_neg_log10_sigma_300K_err",
                    "oracle_activation_energy_eV", "study_aimd_neg_log10_sigma_300K", "experiment_neg_log10_sigma_300K",
                    "oracle_minus_study_aimd", "oracle_minus_experiment", "oracle_note", "sources"]


def load_benchmark(path: str | os.PathLike):
    """(benchmark section, validated ``CampaignSpec``) from a benchmark YAML; InputError names the key."""
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
    return bench, validate(data)


class _Roles:
    """The campaign's roles, in this process (serial) or as Ray actors (``workers`` per role)."""

    def __init__(self, spec, use_ray: bool):
        from actors import roles

        self.use_ray = use_ray
        r = spec.resources
        make = {"reference": (roles.ReferenceWorker, (spec.oracle, r.cpus_per_oracle), r.cpus_per_oracle, 0.0),
                "md": (roles.MDWorker, (r.cpus_per_md_worker,), r.cpus_per_md_worker, r.gpus_per_md_worker or 0.0),
                "trainer": (roles.Trainer, (r.cpus_per_trainer,), r.cpus_per_trainer, 0.0),
                "judge": (roles.StabilityJudge, (), 0.0, 0.0)}
        counts = {"reference": r.reference_workers, "md": r.md_workers, "trainer": 1, "judge": 1}
        if use_ray:
            from orchestrator.ops.ray_runtime import ray_init

            # a private local Ray counts the CPUs the roles ask for (all actors live at once; each thread
            # count is what its role was granted), like `matscreen demo`; a cluster counts its own
            ray_init(num_cpus=max(1, math.ceil(sum(counts[k] * cpus for k, (_, _, cpus, _) in make.items()))))
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


def _neg_log10_sigma(transport: dict) -> tuple[float, float]:
    """(−log10 σ300K, its error), σ in mS/cm as the study reports it; NaN without an Arrhenius fit."""
    value = transport.get("log10_sigma_300K")
    if value is None:
        return float("nan"), float("nan")
    return -float(value), float(transport.get("log10_sigma_300K_err") or float("nan"))


def _activation_energy(transport: dict) -> tuple[float, float]:
    """(Ea, its error) in eV of an Arrhenius fit; NaN without one."""
    value = transport.get("activation_energy_eV")
    if value is None:
        return float("nan"), float("nan")
    return float(value), float(transport.get("activation_energy_eV_err") or float("nan"))


def _recorded(keys: list, record_of, compute) -> dict:
    """``{key: answer}``: answers recorded by an earlier run of the same command (``record_of(key)``, a JSON
    file beside the step's output) are reused; the rest are computed in one ``compute(keys)`` call and
    recorded when they succeeded, so a stopped benchmark resumes where it stopped."""
    done = {k: json.loads(record_of(k).read_text()) for k in keys if record_of(k).is_file()}
    todo = [k for k in keys if k not in done]
    if todo:
        for k, answer in zip(todo, compute(todo)):
            done[k] = answer
            failed = isinstance(answer, dict) and answer.get("error")
            if not failed:
                atomic_write_text(record_of(k), json.dumps(answer, default=float) + "\n")
    return done


def run_benchmark(spec_path: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                  use_ray: bool | None = None, tracking_uri: str | None = None) -> list[dict]:
    """Run the benchmark described by ``spec_path``; returns the table rows (also written and logged)."""
    from dataclasses import replace

    from orchestrator.campaign.spec import store_root
    from reference.store import shard_name
    from reference.structures import get_structure, write_structure

    bench, spec = load_benchmark(spec_path)
    store = store_root(None, spec)                    # $MATSCREEN_STORE, else store.path
    out = Path(out_dir or store / spec.name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    use_ray = bool(os.environ.get("RAY_ADDRESS")) if use_ray is None else use_ray
    md, name, stride = spec.md, spec.name, spec.md.protocol.stride
    train_mat, materials = bench["train_on"], [bench["train_on"], *bench["test_on"]]
    t_ref = md.reference_temperature_K
    temps = sorted(set(md.temperatures_K) | {t_ref})
    structures = {m: write_structure(get_structure(bench["structures"][m])[0], out / "structures" / f"{m}.extxyz")
                  for m in materials}
    roles = _Roles(spec, use_ray)
    try:
        # 1. oracle MD of every material at every temperature: the training material's runs are the training
        #    data; every material's runs are its structure/dynamics reference (at the reference T) and its
        #    oracle conductivity; the transfer materials' labels are the force-error test frames
        ref_keys = [(m, t) for m in materials for t in temps]

        def oracle_md(m, t):
            steps, labels = ((bench["training_steps"], bench["training_steps"] // stride) if m == train_mat
                             else (max(md.reference_steps, bench["test_frames"] * stride), bench["test_frames"]))
            return (structures[m], spec.reference_protocol(t, steps, labels),
                    str(out / "reference" / f"{m}_{t:g}K.h5"), str(store), shard_name(name, f"{m}_{t:g}K", 0),
                    f"{name}/{m}_{t:g}K")

        refs = _recorded(ref_keys, lambda k: out / "reference" / f"{k[0]}_{k[1]:g}K.json",
                         lambda keys: roles.map("reference", "reference_md", [oracle_md(*k) for k in keys]))
        for (m, t), ref in refs.items():
            if ref["error"] or not ref["labelled_frames"]:
                raise InputError(f"oracle MD of {m} at {t:g} K failed ({ref['error'] or 'no labels'}); "
                                 "check oracle.name and the structure")
        oracle = dict(zip(materials, roles.map("judge", "transport", [
            ([refs[(m, t)]["trajectory"] for t in temps], md.species, str(out / "plots" / "oracle" / m),
             spec.stability.min_msd_A2) for m in materials])))

        # 2. one ensemble per architecture, trained on the training material's labels only
        selection = {"shards": [[Path(refs[(train_mat, t)]["shard"]).name, list(range(refs[(train_mat, t)]["labelled_frames"]))]
                                for t in temps], "oracle": refs[(train_mat, t_ref)]["oracle"]}
        archs = bench["architectures"]
        trained = _recorded(archs, lambda a: out / "models" / a / "training.json",
                            lambda keys: roles.map("trainer", "train", [
                                (str(store), selection, replace(spec.models, architectures=(a,)),
                                 spec.training, str(out / "models" / a), spec.seed) for a in keys]))

        # 3. student MD: every architecture x material, all temperatures x replicas of it as one batch
        md_keys = [(a, m) for a in archs for m in materials]
        runs = _recorded(md_keys, lambda k: out / "md" / k[0] / k[1] / "runs.json",
                         lambda keys: roles.map("md", "run", [
                             (trained[a]["members"], structures[m], temps, md.replicas,
                              md.run_protocol(md.steps, md.equilibration_steps), spec.monitor(),
                              spec.seed + 1, str(out / "md" / a / m)) for a, m in keys]))

        # 4. judge, force errors and transport by the campaign's judge role
        rows = [_row(roles, spec, a, m, m == train_mat, trained[a], runs[(a, m)], refs[(m, t_ref)], out,
                     oracle[m]["transport"]) for a, m in md_keys]
    finally:
        roles.close()
    mat_rows = [material_row(m, oracle[m]["transport"]) for m in materials]
    write_tables(out, rows, mat_rows)
    _log_mlflow(spec, bench, rows, out, tracking_uri)
    return rows


def _short(text: str) -> str:
    """A note with every trajectory path cut to its file name."""
    return re.sub(r"(?:/[^\s/:]+)+/([^\s/:]+\.h5)", r"\1", text)


def _combined_status(statuses: list[str]) -> str:
    """One check over several replicas: any mismatch decides; pass only when every replica passes."""
    from analysis import checks

    if not statuses:
        return ""
    if checks.MISMATCH in statuses:
        return checks.MISMATCH
    return checks.PASS if all(s == checks.PASS for s in statuses) else checks.INCONCLUSIVE


def check_summary(verdicts: list[dict]) -> dict:
    """The structure and dynamics checks of the runs compared with the reference (those at its temperature)."""
    from analysis.checks import inverse_variance_mean

    ev = [v["evidence"] for v in verdicts]
    rdf = [e for e in ev if "rdf_mae" in e]
    dyn = [e for e in ev if e.get("log10_ratio") is not None and math.isfinite(e["log10_ratio"])
           and math.isfinite(e.get("log10_ratio_err", float("nan"))) and e["log10_ratio_err"] > 0]
    ratio, ratio_err = (inverse_variance_mean([e["log10_ratio"] for e in dyn], [e["log10_ratio_err"] for e in dyn])
                        if dyn else (float("nan"), float("nan")))
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {"rdf_mae": mean([e["rdf_mae"] for e in rdf]),
            "rdf_noise_floor": mean([e["rdf_noise_floor"] for e in rdf if e.get("rdf_noise_floor") is not None]),
            "rdf_status": _combined_status([e["rdf_status"] for e in rdf if "rdf_status" in e]),
            "log10_D_ratio": ratio, "log10_D_ratio_err": ratio_err,
            "dynamics_status": _combined_status([e["dynamics_status"] for e in ev if "dynamics_status" in e])}


def _row(roles: _Roles, spec, arch: str, material: str, training: bool, trained: dict, runs: list[dict],
         ref: dict, out: Path, oracle_transport: dict | None = None) -> dict:
    """One table row from the judge role: force MAE, verdict (worst of all runs), the structure and dynamics
    checks at the reference temperature, and −log10 σ300K of the student and of the oracle."""
    members = trained["members"]
    (force,) = roles.map("judge", "force_errors", [(members, ref["shard"], spec.stability.false_alarm_rate, None)])
    (verdicts,) = roles.map("judge", "judge_runs", [([r["trajectory"] for r in runs], ref["trajectory"],
                                                     spec.stability)])
    from analysis.verdicts import Verdict, worst

    verdict = worst([Verdict.from_dict(v) for v in verdicts]).status
    sigma = err = ea = ea_err = float("nan")
    notes = sorted({why for v in verdicts for why in v["evidence"].get("inconclusive", [])}
                   | {f"dynamics: {v['evidence']['dynamics_reason']}" for v in verdicts
                      if v["evidence"].get("dynamics_status") == "mismatch" and v["evidence"].get("dynamics_reason")}
                   | {f"structure: {v['evidence']['rdf_reason']}" for v in verdicts
                      if v["evidence"].get("rdf_status") == "mismatch" and v["evidence"].get("rdf_reason")})
    # an inconclusive run broke nothing: its numbers are reported, flagged by the verdict column
    unbroken = [r["trajectory"] for r, v in zip(runs, verdicts) if v["status"] in V.JUDGED_USABLE]
    if verdict in V.JUDGED_USABLE:
        (res,) = roles.map("judge", "transport", [(unbroken, spec.md.species, str(out / "plots" / arch / material),
                                                   spec.stability.min_msd_A2)])
        sigma, err = _neg_log10_sigma(res["transport"])
        ea, ea_err = _activation_energy(res["transport"])
        if not math.isfinite(sigma):
            notes.append("student: " + ("; ".join(res["transport"]["notes"]) or "no Arrhenius fit"))
    oracle_sigma, oracle_err = _neg_log10_sigma(oracle_transport or {})
    from analysis.checks import decide

    sigma_status = decide(sigma - oracle_sigma, math.hypot(err, oracle_err), SIGMA_LOG10_TOLERANCE,
                          spec.stability.false_alarm_rate) if math.isfinite(sigma) else ""
    return {"model": arch, "material": material, "role": "train" if training else "transfer",
            "force_mae_meV_A": force["force_mae_meV_A"], **check_summary(verdicts), "verdict": verdict,
            "neg_log10_sigma_300K": sigma, "neg_log10_sigma_300K_err": err,
            "oracle_neg_log10_sigma_300K": oracle_sigma, "oracle_neg_log10_sigma_300K_err": oracle_err,
            "sigma_status": sigma_status, "activation_energy_eV": ea, "activation_energy_eV_err": ea_err,
            **dict(zip(("oracle_activation_energy_eV", "oracle_activation_energy_eV_err"),
                       _activation_energy(oracle_transport or {}))),
            "note": _short("; ".join(notes))[:300]}


def material_row(material: str, oracle_transport: dict) -> dict:
    """The oracle's −log10 σ300K (mS/cm) beside the structure library's known values, with their sources."""
    from reference.structures import known_log10_sigma, known_values

    known = known_values(material)
    sigma, err = _neg_log10_sigma(oracle_transport)
    exp, exp_src = known_log10_sigma(known, "experiment")
    aimd, aimd_src = known_log10_sigma(known, "AIMD")
    neg = lambda v: float("nan") if v is None else -v  # noqa: E731
    note = "" if math.isfinite(sigma) else "; ".join(oracle_transport.get("notes", [])) or "no Arrhenius fit"
    return {"material": material, "oracle_neg_log10_sigma_300K": sigma, "oracle_neg_log10_sigma_300K_err": err,
            "oracle_activation_energy_eV": _activation_energy(oracle_transport)[0],
            "study_aimd_neg_log10_sigma_300K": neg(aimd), "experiment_neg_log10_sigma_300K": neg(exp),
            "oracle_minus_study_aimd": sigma - neg(aimd), "oracle_minus_experiment": sigma - neg(exp),
            "oracle_note": _short(note)[:300], "sources": " | ".join(s for s in (exp_src, aimd_src) if s)}


def write_tables(out: Path, rows: list[dict], mat_rows: list[dict]) -> None:
    """``table.{csv,md,json}`` (model x material) and ``materials.{csv,json}`` (oracle vs known values)."""
    atomic_write_text(out / "table.csv", table_csv(rows))
    atomic_write_text(out / "materials.csv", table_csv(mat_rows, MATERIAL_COLUMNS))
    atomic_write_text(out / "table.md", format_table(rows) + "\n\n" + format_materials(mat_rows) + "\n")
    atomic_write_text(out / "table.json", json.dumps([{k: _json_num(v) for k, v in r.items()} for r in rows],
                                                     indent=2) + "\n")
    atomic_write_text(out / "materials.json", json.dumps([{k: _json_num(v) for k, v in r.items()} for r in mat_rows],
                                                         indent=2) + "\n")


def _json_num(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def table_csv(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows([{k: ("" if _json_num(r.get(k)) is None else r.get(k)) for k in columns} for r in rows])
    return buf.getvalue()


def _pm(v: Any, e: Any, spec: str = ".2f") -> str:
    text = _fmt(v, spec)
    return text if text == "-" or _fmt(e, spec) == "-" else f"{text} ± {_fmt(e, spec)}"


def _markdown(head: list[str], body: list[list[str]]) -> str:
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def format_table(rows: list[dict]) -> str:
    """The model x material table as Markdown (also readable on a console)."""
    head = ["model", "material", "role", "force MAE (meV/Å)", "RDF MAE / noise floor", "structure",
            "log10 D/D_oracle", "dynamics", "verdict", "-log10 σ300K student", "-log10 σ300K oracle",
            "σ300K check", "Ea student (eV)", "Ea oracle (eV)", "note"]
    body = [[r["model"], r["material"], r["role"], _fmt(r["force_mae_meV_A"], ".1f"),
             f"{_fmt(r.get('rdf_mae'), '.3f')} / {_fmt(r.get('rdf_noise_floor'), '.3f')}", r.get("rdf_status") or "-",
             _pm(r.get("log10_D_ratio"), r.get("log10_D_ratio_err")), r.get("dynamics_status") or "-", r["verdict"],
             _pm(r["neg_log10_sigma_300K"], r.get("neg_log10_sigma_300K_err")),
             _pm(r.get("oracle_neg_log10_sigma_300K"), r.get("oracle_neg_log10_sigma_300K_err")),
             r.get("sigma_status") or "-", _pm(r.get("activation_energy_eV"), r.get("activation_energy_eV_err")),
             _pm(r.get("oracle_activation_energy_eV"), r.get("oracle_activation_energy_eV_err")),
             r.get("note", "")] for r in rows]
    return _markdown(head, body) + "\n\nσ in mS/cm (the study's unit); ± is one standard error."


def format_materials(rows: list[dict]) -> str:
    """The oracle beside the known values (mS/cm): how far the oracle itself is from them."""
    head = ["material", "-log10 σ300K oracle", "Ea oracle (eV)", "study AIMD", "experiment", "oracle - AIMD",
            "oracle - experiment", "note"]
    body = [[r["material"], _pm(r["oracle_neg_log10_sigma_300K"], r["oracle_neg_log10_sigma_300K_err"]),
             _fmt(r["oracle_activation_energy_eV"], ".2f"), _fmt(r["study_aimd_neg_log10_sigma_300K"], ".2f"),
             _fmt(r["experiment_neg_log10_sigma_300K"], ".2f"), _fmt(r["oracle_minus_study_aimd"], "+.2f"),
             _fmt(r["oracle_minus_experiment"], "+.2f"), r["oracle_note"]] for r in rows]
    sources = sorted({s for r in rows for s in r["sources"].split(" | ") if s})
    return _markdown(head, body) + "\n\nSources: " + "; ".join(sources) if sources else _markdown(head, body)


def _log_mlflow(spec, bench: dict, rows: list[dict], out: Path, tracking_uri: str | None) -> str:
    """The table through the campaign's Tracker (the only MLflow writer)."""
    from orchestrator.campaign.tracking import Tracker, experiment_name, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri or spec.tracking.uri)
    params = {"train_on": bench["train_on"], "test_on": ",".join(bench["test_on"]),
              "architectures": ",".join(bench["architectures"]), "oracle": spec.oracle.name,
              "temperatures_K": ",".join(f"{t:g}" for t in spec.md.temperatures_K),
              "replicas": spec.md.replicas, "steps": spec.md.steps}
    return Tracker(uri, experiment_name(spec.name, spec.tracking.experiment)).log_benchmark(f"{spec.name}-table", params, rows,
                                                            [str(out / f) for f in ("table.csv", "table.md", "table.json",
                                                                                     "materials.csv", "materials.json")])
