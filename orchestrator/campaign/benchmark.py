"""The reference study's transferability benchmark as a matscreen run (``matscreen benchmark run``).

Another order of the campaign's steps, by the same roles (``actors.roles``) with the same settings
(``orchestrator.campaign.spec``): label oracle MD of the *training* material only (Li10GeP2S12)
at the study temperatures; train one ensemble per architecture on exactly those labels; then for
every architecture x material (the training material and the transfer materials Li3PS4, Li4GeS4)
run the student with the campaign's MD engine (``md.runner``) and judge it with the campaign's judge:

* ``force_mae_meV_A``  ensemble-mean force error on oracle frames of that material (meV/Å);
* ``rdf_mae``, ``rdf_noise_floor``, ``rdf_status``  the structure check of the student runs at the
                       reference temperature against the oracle run, its replicas judged as one like the
                       campaign's exploration (pooled MAE, the oracle's own noise floor, pass | mismatch |
                       inconclusive);
* ``log10_D_ratio`` ± ``log10_D_ratio_err``, ``dynamics_status``  the dynamics check of the same replicas:
                       log10 of the student's D(Li) over the oracle's at the reference temperature;
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

Rerunning the same command resumes: the campaign's step runner (``orchestrator.campaign.runner``) records
every finished oracle run, training and student MD batch in the ledger ``<out>/ledger.sqlite``
(``oracle:<m>:<T>K``, ``train:<arch>``, ``md:<arch>:<m>``), and none is redone; the judging is always
redone (minutes).

The table is printed and logged to MLflow through the campaign's Tracker (experiment
``matscreen-<name>``, run ``<name>-table``, ``benchmark/table.{csv,md,json}`` artifacts, one metric
set per cell).  Labels go to the data store as deterministic shards ``campaign-<name>-<material>_<T>K-r0``.
With Ray (``RAY_ADDRESS`` set, or ``--ray``) the roles are Ray actors, several per role, otherwise
plain objects in this process.

The spec is a campaign spec (same keys and validation, ``orchestrator.campaign.spec``) plus a
``benchmark`` section validated here; every bad key is an error naming its path.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text
from common.tables import blank, csv_text, markdown
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


def run_benchmark(spec_path: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                  use_ray: bool | None = None, tracking_uri: str | None = None) -> list[dict]:
    """Run the benchmark described by ``spec_path``; returns the table rows (also written and logged)."""
    from dataclasses import replace

    from actors import requests as rq
    from orchestrator.campaign.runner import Roles, StepRunner
    from orchestrator.campaign.spec import store_root
    from orchestrator.campaign.state import Ledger
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
    if use_ray:
        from orchestrator.ops.ray_runtime import ray_init

        # a private local Ray counts the CPUs the roles ask for (all actors live at once), like `matscreen demo`
        ray_init(num_cpus=Roles.cpus(spec))
    roles = Roles(spec, use_ray=use_ray, gpus_per_md_worker=spec.resources.gpus_per_md_worker or 0.0)
    steps = StepRunner(Ledger(out / "ledger.sqlite"), roles)
    try:
        # 1. oracle MD of every material at every temperature: the training material's runs are the training
        #    data; every material's runs are its structure/dynamics reference (at the reference T) and its
        #    oracle conductivity; the transfer materials' labels are the force-error test frames
        def oracle_md(m: str, t: float) -> rq.ReferenceMD:
            n, labels = ((bench["training_steps"], bench["training_steps"] // stride) if m == train_mat
                         else (max(md.reference_steps, bench["test_frames"] * stride), bench["test_frames"]))
            return rq.ReferenceMD(structures[m], spec.reference_plan(t, n, labels),
                                  str(out / "reference" / f"{m}_{t:g}K.h5"), str(store),
                                  shard_name(name, f"{m}_{t:g}K", 0), f"{name}/{m}_{t:g}K")

        refs = steps.map({(m, t): (f"oracle:{m}:{t:g}K", oracle_md(m, t)) for m in materials for t in temps})
        for (m, t), ref in refs.items():
            if ref.error or not ref.labelled_frames:
                raise InputError(f"oracle MD of {m} at {t:g} K failed ({ref.error or 'no labels'}); "
                                 "check oracle.name and the structure")
        oracle = dict(zip(materials, roles.map([
            rq.TransportRequest([refs[(m, t)].trajectory for t in temps], md.species,
                                str(out / "plots" / "oracle" / m), spec.stability.min_msd_A2) for m in materials])))

        # 2. one ensemble per architecture, trained on the training material's labels only
        own = [refs[(train_mat, t)] for t in temps]
        selection = {"shards": [[Path(r.shard).name, list(range(r.labelled_frames))] for r in own],
                     "oracle": refs[(train_mat, t_ref)].oracle}
        archs = bench["architectures"]
        trained = steps.map({a: (f"train:{a}", rq.Train(str(store), selection, replace(spec.models, architectures=(a,)),
                                                        spec.training, str(out / "models" / a), spec.seed))
                             for a in archs})

        # 3. student MD: every architecture x material, all temperatures x replicas of it as one batch
        runs = steps.map({(a, m): (f"md:{a}:{m}", rq.RunMD(trained[a].members, structures[m], temps, md.replicas,
                                                          md.run_protocol(md.steps, md.equilibration_steps),
                                                          spec.monitor(), spec.seed + 1, str(out / "md" / a / m)))
                          for a in archs for m in materials})

        # 4. judge, force errors and transport by the campaign's judge role (always redone: minutes)
        rows = [_row(roles, spec, a, m, m == train_mat, trained[a].members, runs[(a, m)].runs, refs[(m, t_ref)],
                     out, oracle[m].transport) for (a, m) in runs]
    finally:
        roles.close()
        steps.ledger.close()
    mat_rows = [material_row(m, oracle[m].transport) for m in materials]
    write_tables(out, rows, mat_rows)
    _log_mlflow(spec, bench, rows, out, tracking_uri)
    return rows


def _short(text: str) -> str:
    """A note with every trajectory path cut to its file name."""
    return re.sub(r"(?:/[^\s/:]+)+/([^\s/:]+\.h5)", r"\1", text)


def _row(roles, spec, arch: str, material: str, training: bool, members: list[str], runs: list,
         ref, out: Path, oracle_transport: dict | None = None) -> dict:
    """One table row from the judge role: force MAE; the structure and dynamics checks of the runs at the
    reference temperature, judged as one like the campaign's exploration replicas; the verdict (worst of that
    and the other temperatures' runs); −log10 σ300K of the student and of the oracle.  ``runs``: the student's
    ``md.runner.SystemResult`` s, ``ref``: the oracle's ``ReferenceRun`` at the reference temperature."""
    from actors import requests as rq
    from analysis.checks import decide
    from analysis.verdicts import check_summary, worst

    t_ref = spec.md.reference_temperature_K
    at_ref = [r.trajectory for r in runs if r.temperature_K == t_ref]
    groups = ([at_ref] if at_ref else []) + [[r.trajectory] for r in runs if r.temperature_K != t_ref]
    force = roles.call(rq.ForceErrors(members, ref.shard, spec.stability.false_alarm_rate))
    verdicts = roles.call(rq.JudgeRuns(groups, ref.trajectory, spec.stability)).verdicts
    verdict = worst(verdicts).status
    checks = check_summary(verdicts[0]) if at_ref else {}
    sigma = err = ea = ea_err = float("nan")
    ev = [v.evidence for v in verdicts]
    notes = sorted({why for e in ev for why in e.get("inconclusive", [])}
                   | {f"dynamics: {e['dynamics_reason']}" for e in ev
                      if e.get("dynamics_status") == "mismatch" and e.get("dynamics_reason")}
                   | {f"structure: {e['rdf_reason']}" for e in ev
                      if e.get("rdf_status") == "mismatch" and e.get("rdf_reason")})
    # an inconclusive run broke nothing: its numbers are reported, flagged by the verdict column
    unbroken = [t for group, v in zip(groups, verdicts) if v.status in V.JUDGED_USABLE for t in group]
    if verdict in V.JUDGED_USABLE:
        res = roles.call(rq.TransportRequest(unbroken, spec.md.species, str(out / "plots" / arch / material),
                                             spec.stability.min_msd_A2))
        sigma, err = _neg_log10_sigma(res.transport)
        ea, ea_err = _activation_energy(res.transport)
        if not math.isfinite(sigma):
            notes.append("student: " + ("; ".join(res.transport["notes"]) or "no Arrhenius fit"))
    oracle_sigma, oracle_err = _neg_log10_sigma(oracle_transport or {})
    sigma_status = decide(sigma - oracle_sigma, math.hypot(err, oracle_err), SIGMA_LOG10_TOLERANCE,
                          spec.stability.false_alarm_rate) if math.isfinite(sigma) else ""
    nan = float("nan")
    return {"model": arch, "material": material, "role": "train" if training else "transfer",
            "force_mae_meV_A": force.force_mae_meV_A, "rdf_mae": checks.get("rdf_mae", nan),
            "rdf_noise_floor": nan if checks.get("rdf_noise_floor") is None else checks["rdf_noise_floor"],
            "rdf_status": checks.get("rdf_status", ""), "log10_D_ratio": checks.get("log10_ratio", nan),
            "log10_D_ratio_err": checks.get("log10_ratio_err", nan),
            "dynamics_status": checks.get("dynamics_status", ""), "verdict": verdict,
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
    atomic_write_text(out / "table.csv", csv_text(rows, COLUMNS))
    atomic_write_text(out / "materials.csv", csv_text(mat_rows, MATERIAL_COLUMNS))
    atomic_write_text(out / "table.md", format_table(rows) + "\n\n" + format_materials(mat_rows) + "\n")
    atomic_write_text(out / "table.json", json.dumps([{k: blank(v) for k, v in r.items()} for r in rows],
                                                     indent=2) + "\n")
    atomic_write_text(out / "materials.json", json.dumps([{k: blank(v) for k, v in r.items()} for r in mat_rows],
                                                         indent=2) + "\n")


def _fmt(v: Any, spec: str) -> str:
    return "-" if blank(v) is None else format(v, spec)


def _pm(v: Any, e: Any, spec: str = ".2f") -> str:
    text = _fmt(v, spec)
    return text if text == "-" or _fmt(e, spec) == "-" else f"{text} ± {_fmt(e, spec)}"


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
    return markdown(head, body) + "\n\nσ in mS/cm (the study's unit); ± is one standard error."


def format_materials(rows: list[dict]) -> str:
    """The oracle beside the known values (mS/cm): how far the oracle itself is from them."""
    head = ["material", "-log10 σ300K oracle", "Ea oracle (eV)", "study AIMD", "experiment", "oracle - AIMD",
            "oracle - experiment", "note"]
    body = [[r["material"], _pm(r["oracle_neg_log10_sigma_300K"], r["oracle_neg_log10_sigma_300K_err"]),
             _fmt(r["oracle_activation_energy_eV"], ".2f"), _fmt(r["study_aimd_neg_log10_sigma_300K"], ".2f"),
             _fmt(r["experiment_neg_log10_sigma_300K"], ".2f"), _fmt(r["oracle_minus_study_aimd"], "+.2f"),
             _fmt(r["oracle_minus_experiment"], "+.2f"), r["oracle_note"]] for r in rows]
    sources = sorted({s for r in rows for s in r["sources"].split(" | ") if s})
    return markdown(head, body) + "\n\nSources: " + "; ".join(sources) if sources else markdown(head, body)


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
