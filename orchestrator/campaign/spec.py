"""The campaign spec: a YAML file, validated against a schema with defaults for every key.

Every key has a default, so ``{}`` is a valid (demo-sized) campaign.  Unknown or mistyped keys
are errors naming the key's path and the closest valid key, e.g.
``md.temperatures[2]: expected a number, got 'hot'`` or
``md.temperature: unknown key; did you mean 'md.temperatures'?``.

Units are in the key names: K, fs, Å (``_A``), eV/Å (``_eV_A``), minutes, seconds.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import InputError


@dataclass(frozen=True)
class Field:
    """One leaf of the schema: ``kind`` is int, float, str, bool, list[str], list[float], list[int],
    str?, float?, int? (nullable) or mapping (free-form str -> str)."""

    kind: str
    default: Any
    help: str
    choices: tuple = ()


F = Field
# models.ARCHITECTURES + the analytic test student (tests/test_campaign.py checks they agree)
ARCHITECTURE_CHOICES = ("schnet", "painn", "dimenetpp", "cgcnn", "lj")
SCHEMA: dict[str, Any] = {
    "name": F("str", "demo", "campaign name: one MLflow experiment and one ledger per name"),
    "seed": F("int", 0, "random seed for enumeration order, model initialisation and MD"),
    "space": {
        "elements": F("list[str]", ["Li", "Ge", "Si", "Sn", "P", "S"], "elements the compositions are drawn from"),
        "require": F("list[str]", ["Li", "S"], "elements every composition must contain"),
        "arity_min": F("int", 3, "fewest distinct elements per composition"),
        "arity_max": F("int", 4, "most distinct elements per composition"),
        "max_stoichiometry": F("int", 12, "largest integer amount of one element in a formula unit"),
        "charge_neutral": F("bool", True, "keep only charge-balanced compositions (SMACT oxidation states)"),
        "electronegativity": F("bool", True, "apply SMACT's Pauling electronegativity test"),
    },
    "candidates": {
        "formulas": F("list[str]", [], "explicit formulas to screen; empty = enumerate from `space`"),
        "structures": F("mapping", {}, "formula -> CIF/POSCAR path that gives its structure directly"),
        "max_candidates": F("int", 3, "most candidates taken into the campaign"),
        "max_atoms": F("int", 64, "largest simulation cell (atoms) accepted for a candidate"),
        "include_known": F("bool", True, "also screen enumerated compositions already known; false: only unknown "
                           "ones (the known ones skipped are counted in the summary)"),
        "known": F("str?", None, "known formulas for include_known: a CSV/Parquet file with a formula column, or "
                   "'mp' (Materials Project); null = chemspace's bundled Li-thiophosphate file"),
        "rank_by": F("str", "log10_sigma_300K", "metric that ranks converged candidates (higher is better)",
                     ("log10_sigma_300K", "activation_energy_eV", "conductivity_mS_cm")),
    },
    "prototypes": F("list[str]", ["Li10GeP2S12"], "prototype structures (library names or CIF paths) for substitution"),
    "oracle": {
        "name": F("str", "chgnet", "reference calculator: chgnet, lj, emt, or an importable 'module:factory'"),
        "version": F("str?", None, "oracle model version (chgnet: 0.3.0 default)"),
        "device": F("str", "cpu", "device for the oracle (cpu or cuda)"),
        "max_failure_fraction": F("float", 0.5, "a round whose labels fail above this fraction ends the candidate as oracle_failing"),
    },
    "models": {
        "architectures": F("list[str]", ["schnet"], "student architectures; an ensemble member cycles through them "
                           "(lj: an analytic Lennard-Jones student for tests)", ARCHITECTURE_CHOICES),
        "ensemble_size": F("int", 2, "ensemble members (>= 2 gives a force deviation)"),
        "cutoff_A": F("float", 5.0, "graph cutoff radius (Å)"),
        "hidden": F("int", 32, "hidden feature width"),
        "layers": F("int", 2, "interaction blocks"),
    },
    "training": {
        "epochs": F("int", 30, "epochs for a training from scratch"),
        "fine_tune_epochs": F("int", 15, "epochs when fine-tuning the previous round's ensemble"),
        "learning_rate": F("float", 1e-3, "Adam learning rate"),
        "batch_size": F("int", 8, "frames per optimisation step"),
        "energy_weight": F("float", 1.0, "loss weight of energies (eV/atom)"),
        "force_weight": F("float", 10.0, "loss weight of forces (eV/Å)"),
        "fine_tune": F("bool", True, "fine-tune the previous ensemble instead of retraining from scratch"),
        "max_minutes": F("float?", None, "wall-clock safety net of one training round (minutes); the budget is "
                         "epochs (reproducible); when the net stops a round, the epochs done are recorded"),
        "validation_fraction": F("float", 0.1, "fraction of frames held out"),
        "streaming": F("bool", False, "keep training frames on disk (an HDF5 frame cache) and build graphs per batch: "
                       "memory independent of the data size"),
        "loader_workers": F("int", 0, "data-loader processes that build graphs while the model trains (streaming)"),
        "max_atoms_per_batch": F("int?", None, "batch by atom count instead of batch_size frames (cells of any size mix)"),
    },
    "md": {
        "temperatures_K": F("list[float]", [600.0, 800.0, 1000.0], "production temperatures (K) for D(T), sigma(T), Arrhenius; at the reference temperature the judged exploration replicas are production replicas (with exploration_replicas >= replicas it is not run again)"),
        "replicas": F("int", 1, "independent replicas per temperature"),
        "steps": F("int", 400, "production steps per replica"),
        "equilibration_steps": F("int", 50, "steps discarded before analysis (production, reference and "
                                 "exploration runs)"),
        "timestep_fs": F("float", 2.0, "integration time step (fs)"),
        "save_every": F("int", 10, "steps between stored frames"),
        "thermostat": F("str", "langevin", "NVT thermostat of the student MD", ("langevin", "nose-hoover")),
        "reference_temperature_K": F("float", 800.0, "temperature of the short oracle reference trajectory"),
        "reference_steps": F("int", 2000, "steps of the oracle reference trajectory: long enough for its D(Li) and "
                             "RDF noise to be measured (checks on too short a reference are inconclusive)"),
        "exploration_steps": F("int?", None, "MLFF steps of one active-learning exploration run; null = "
                               "reference_steps (the dynamics check compares equal protocols and lengths)"),
        "exploration_replicas": F("int", 4, "independent replicas of each exploration run, one batch, judged as one: "
                                  "their RDF blocks pool, their D combine (the dynamics check's error falls as "
                                  "1/sqrt(n)), the audits spread over them; each is a production replica at the "
                                  "reference temperature"),
        "species": F("str", "Li", "the mobile ion: its D(T) and sigma(T); every other element is the framework"),
    },
    "stability": {
        "false_alarm_rate": F("float", 0.05, "false-alarm rate of each check against the reference (a perfect student "
                              "is called a mismatch this often)"),
        "rdf_mae": F("float", 0.09, "tolerance of the pair-weighted partial-RDF MAE against the reference: above it "
                     "and above the reference's own noise is rdf_mismatch; a pass needs the noise well below it "
                     "(the study's 0.02 suits windows of several ns)"),
        "rdf_block_fs": F("float", 200.0, "time block of the RDF noise bootstrap (fs): frames closer than this are "
                          "not independent"),
        "lattice_tolerance": F("float", 0.01, "relative difference of the mean cell lengths that is lattice_mismatch"),
        "dynamics_log10_tolerance": F("float", 0.3, "|log10 D_student / D_reference| allowed at the reference "
                                      "temperature (0.3: a factor 2)"),
        "framework_log10_tolerance": F("float", 0.3, "framework MSD may exceed the reference's by this (log10)"),
        "accuracy_log10_tolerance": F("float", 0.1, "the student's mean atomic force error on its own MD (oracle "
                                      "audit labels) may exceed its error on the reference's held-out frames by this "
                                      "(log10; 0.1: 26 %); beyond it and beyond noise: uncertain"),
        "min_msd_A2": F("float", 10.0, "mobile-ion MSD a run must reach for its D to count (Å^2); below: too_short"),
        "fusion_fraction": F("float", 0.5, "a pair closer than this fraction of the sum of covalent radii is atom fusion"),
        "framework_drift_A": F("float", 3.0, "framework (non-Li) centre-of-mass drift beyond this (Å) is framework_drift"),
        "trust_lo_eV_A": F("float?", None, "ensemble force deviation below this is accurate (eV/Å); null = derived "
                           "each round from the ensemble's deviation on the reference's frames (its "
                           "accurate_fraction quantile)"),
        "trust_hi_eV_A": F("float?", None, "deviation above this is failed (eV/Å); null = trust_band_ratio x trust_lo"),
        "trust_band_ratio": F("float", 3.0, "trust_hi / trust_lo when the levels are derived"),
        "max_temperature_factor": F("float", 3.0, "kinetic T above factor x target (and above min_runaway_K) "
                                    "is an explosion"),
        "min_runaway_K": F("float", 1000.0, "never call a run exploded below this kinetic temperature (K)"),
        "accurate_fraction": F("float", 0.9, "fraction of accurate frames a run needs (fewer, beyond binomial "
                               "noise: uncertain, label and retrain)"),
    },
    "active_learning": {
        "max_rounds": F("int", 3, "labelling/retraining rounds per candidate before budget_spent"),
        "labels_per_round": F("int", 8, "frames labelled by the oracle per round"),
        "audit_labels": F("int", 8, "frames of each exploration run, spread evenly over it whatever their deviation, "
                          "that the oracle labels to measure the student's true force error on its own MD (the "
                          "accuracy check; they train the next round); 0 = no audit (the ensemble's deviation "
                          "alone stands for the error)"),
        "initial_labels": F("int", 16, "oracle frames (from the reference trajectory) before the first training"),
        "calibration_holdout": F("float", 0.2, "final fraction of the reference after the equilibration that is never "
                                 "labelled: the ensemble's deviation and true error there (out of sample) set the "
                                 "trust levels and the reference calibration; 0 = calibrate on all its frames "
                                 "(in sample: trust levels too low)"),
        "min_frame_distance_A": F("float", 0.1, "frames closer than this RMSD (Å) to a selected one are skipped"),
        "min_shared_elements": F("int?", None, "training data = store frames (same oracle) sharing at least this many "
                                 "elements with the candidate; null = all but one of its elements (at least 1)"),
    },
    "reference_data": {
        "trajectories": F("references", {}, "candidate key or formula -> the user's own trajectory (e.g. AIMD) to "
                          "judge the student against instead of oracle MD: {path (any format `matscreen analyze` "
                          "reads; relative to the working directory, or `package:<path>` inside matscreen's installed "
                          "packages, e.g. the demo's bundled reference), temperature_K, dt_fs (fs between frames; null = "
                          "the file's), format (ASE name; null = from the file name), topology (LAMMPS data file)}"),
        "oracle": F("str?", None, "level of theory of those files' energies and forces (e.g. vasp-pbe): their frames "
                    "become the candidate's labels under this name and it trains on that oracle only (no new labels "
                    "unless oracle.name is the same); null = the campaign's oracle labels frames of the trajectory"),
    },
    "resources": {
        "md_workers": F("int", 1, "MDWorker actors"),
        "reference_workers": F("int", 1, "ReferenceWorker actors (oracle labels, reference MD)"),
        "gpus_per_md_worker": F("float?", None, "GPUs per MDWorker; null = 1 when the cluster has GPUs, else 0"),
        "cpus_per_md_worker": F("float", 1.0, "CPUs per MDWorker"),
        "cpus_per_oracle": F("float", 1.0, "CPUs per ReferenceWorker"),
        "cpus_per_trainer": F("float", 1.0, "CPUs of the Trainer"),
        "trainer_workers": F("int", 1, "data-parallel training workers (Ray Train, torch DDP; > 1 streams the data)"),
        "queue_size": F("int", 4, "candidates in flight at once (bounded queue)"),
        "max_restarts": F("int", 3, "times Ray restarts a crashed actor"),
        "max_task_retries": F("int", 2, "times Ray retries a task on a restarted actor"),
    },
    "tracking": {
        "uri": F("str?", None, "MLflow tracking URI; null = $MLFLOW_TRACKING_URI or sqlite:///.matscreen/mlflow.db"),
        "experiment": F("str?", None, "MLflow experiment; null = 'matscreen-<name>'"),
        "log_trajectories": F("bool", True, "attach compressed trajectories to candidate runs"),
        "register_models": F("bool", True, "register each round's ensemble in the MLflow model registry"),
    },
    "store": {
        "path": F("str", ".matscreen/store", "data-store directory (labels in <path>/shards, campaigns in <path>/<name>), "
                  "relative to cwd; overridden by $MATSCREEN_STORE, and by `campaign run --store`"),
    },
}

# keys whose change does not change the science (resume with a different value is fine)
NON_SCIENCE_SECTIONS = ("resources", "tracking")


class Spec:
    """A validated campaign spec: attribute access by section (``spec.md.steps``), ``to_dict()``."""

    def __init__(self, data: dict):
        self._data = data

    def __getattr__(self, name):
        data = object.__getattribute__(self, "_data")
        if name not in data:
            raise AttributeError(name)
        value = data[name]
        return Spec(value) if isinstance(value, dict) and name != "structures" else value

    def __getitem__(self, name):
        return self._data[name]

    def to_dict(self) -> dict:
        return copy.deepcopy(self._data)

    def science_hash(self) -> str:
        """Hash of everything that changes results (not resources, not tracking)."""
        science = {k: v for k, v in self._data.items() if k not in NON_SCIENCE_SECTIONS}
        return hashlib.sha256(json.dumps(science, sort_keys=True).encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self._data, sort_keys=False)

    def __repr__(self) -> str:
        return f"Spec({self._data!r})"


def defaults() -> dict:
    """The full default spec as a plain dict."""
    return _defaults(SCHEMA)


def _defaults(schema: dict) -> dict:
    return {k: (_defaults(v) if isinstance(v, dict) else copy.deepcopy(v.default)) for k, v in schema.items()}


def _all_paths(schema: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in schema.items():
        path = f"{prefix}{k}"
        out.append(path)
        if isinstance(v, dict):
            out.extend(_all_paths(v, path + "."))
    return out


def _suggest(path: str, key: str, schema: dict) -> str:
    """' ; did you mean ...?' for the closest valid key (same section first, then anywhere)."""
    prefix = path.rsplit(".", 1)[0] + "." if "." in path else ""
    local = difflib.get_close_matches(key, list(schema), n=1, cutoff=0.5)
    if local:
        return f"; did you mean '{prefix}{local[0]}'?"
    anywhere = _all_paths(SCHEMA)
    leaf_names = {p.rsplit(".", 1)[-1]: p for p in anywhere}
    near = difflib.get_close_matches(key, list(leaf_names), n=1, cutoff=0.7)
    if near:
        return f"; did you mean '{leaf_names[near[0]]}'?"
    return f"; valid keys here: {', '.join(schema)}"


def _check_leaf(path: str, value: Any, f: Field) -> Any:
    kind = f.kind
    nullable = kind.endswith("?")
    if nullable:
        kind = kind[:-1]
        if value is None:
            return None
    if kind == "references":
        return _check_references(path, value)
    if kind == "mapping":
        if not isinstance(value, dict):
            raise InputError(f"{path}: expected a mapping of formula: path, got {_show(value)}")
        for k, v in value.items():
            if not isinstance(v, str):
                raise InputError(f"{path}.{k}: expected a file path string, got {_show(v)}")
        return {str(k): v for k, v in value.items()}
    if kind.startswith("list["):
        inner = kind[5:-1]
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a scalar where a list is expected: accept as a one-element list
        if not isinstance(value, list):
            raise InputError(f"{path}: expected a list of {_kind_word(inner)}s, got {_show(value)}")
        return [_check_scalar(f"{path}[{i}]", v, inner, f.choices) for i, v in enumerate(value)]
    return _check_scalar(path, value, kind, f.choices)


REFERENCE_ENTRY = {"path": ("str", True), "temperature_K": ("float", True), "dt_fs": ("float", False),
                   "format": ("str", False), "topology": ("str", False)}


PACKAGE_PREFIX = "package:"      # a reference_data path inside matscreen's installed packages (bundled data)


def package_root() -> Path:
    """The folder holding matscreen's packages (``reference/``, ``orchestrator/``...): where a ``package:`` path
    starts (the repository in a development install, site-packages otherwise)."""
    import reference

    return Path(reference.__file__).resolve().parent.parent


def _check_references(path: str, value: Any) -> dict:
    """``reference_data.trajectories``: name -> {path, temperature_K, dt_fs?, format?, topology?}; files must exist."""
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a mapping of candidate: {{path, temperature_K}}, got {_show(value)}")
    out = {}
    for name, entry in value.items():
        where = f"{path}.{name}"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected a mapping with path and temperature_K, got {_show(entry)}")
        clean = {}
        for key, item in entry.items():
            if key not in REFERENCE_ENTRY:
                near = difflib.get_close_matches(str(key), list(REFERENCE_ENTRY), n=1, cutoff=0.5)
                hint = f"; did you mean '{where}.{near[0]}'?" if near else f"; valid keys: {', '.join(REFERENCE_ENTRY)}"
                raise InputError(f"{where}.{key}: unknown key{hint}")
            kind, _ = REFERENCE_ENTRY[key]
            clean[key] = None if item is None else _check_scalar(f"{where}.{key}", item, kind, ())
        for key, (kind, required) in REFERENCE_ENTRY.items():
            if required and clean.get(key) is None:
                raise InputError(f"{where}.{key}: missing; give the trajectory's {key.replace('_K', ' (K)')}")
            clean.setdefault(key, None)
        for key in ("temperature_K", "dt_fs"):
            if clean[key] is not None and clean[key] <= 0:
                raise InputError(f"{where}.{key}: must be > 0, got {clean[key]}")
        for key in ("path", "topology"):
            if clean[key] is not None and clean[key].startswith(PACKAGE_PREFIX):
                clean[key] = str(package_root() / clean[key][len(PACKAGE_PREFIX):])
            if clean[key] is not None and not Path(clean[key]).expanduser().is_file():
                raise InputError(f"{where}.{key}: {clean[key]} not found; give an existing file (relative paths "
                                 "start from the working directory)")
            if clean[key] is not None:
                clean[key] = str(Path(clean[key]).expanduser().resolve())
        out[str(name)] = clean
    return out


def _kind_word(kind: str) -> str:
    return {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}[kind]


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "...'"


def _check_scalar(path: str, value: Any, kind: str, choices: tuple) -> Any:
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
    }[kind]
    if not ok:
        article = "an" if kind == "int" else "a"
        raise InputError(f"{path}: expected {article} {_kind_word(kind)}, got {_show(value)}")
    if kind == "float":
        value = float(value)
    if choices and value not in choices:
        near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise InputError(f"{path}: {value!r} is not one of {', '.join(map(str, choices))}{hint}")
    return value


def _merge(path: str, user: Any, schema: dict, base: dict) -> dict:
    if not isinstance(user, dict):
        where = path or "the spec"
        raise InputError(f"{where}: expected a mapping of keys, got {_show(user)}")
    out = base
    for key, value in user.items():
        key = str(key)
        full = f"{path}.{key}" if path else key
        if key not in schema:
            raise InputError(f"{full}: unknown key{_suggest(full, key, schema)}")
        sub = schema[key]
        if isinstance(sub, dict):
            out[key] = _merge(full, {} if value is None else value, sub, out[key])
        else:
            out[key] = _check_leaf(full, value, sub)
    return out


def _semantic_checks(d: dict) -> None:
    def positive(path, value, strict=True):
        if value < 0 or (strict and value == 0):
            raise InputError(f"{path}: must be {'> 0' if strict else '>= 0'}, got {value}")

    for i, t in enumerate(d["md"]["temperatures_K"]):
        positive(f"md.temperatures_K[{i}]", t)
    if not d["md"]["temperatures_K"]:
        raise InputError("md.temperatures_K: give at least one temperature (K)")
    for key in ("steps", "timestep_fs", "save_every", "replicas", "exploration_replicas", "reference_steps",
                "reference_temperature_K"):
        positive(f"md.{key}", d["md"][key])
    if d["md"]["exploration_steps"] is not None:
        positive("md.exploration_steps", d["md"]["exploration_steps"])
        if d["md"]["equilibration_steps"] >= d["md"]["exploration_steps"]:
            raise InputError("md.equilibration_steps: must be smaller than md.exploration_steps (both runs drop it)")
    if d["md"]["equilibration_steps"] >= d["md"]["reference_steps"]:
        raise InputError("md.equilibration_steps: must be smaller than md.reference_steps (both runs drop it)")
    positive("md.equilibration_steps", d["md"]["equilibration_steps"], strict=False)
    if d["md"]["equilibration_steps"] >= d["md"]["steps"]:
        raise InputError("md.equilibration_steps: must be smaller than md.steps")
    s = d["stability"]
    lo, hi = s["trust_lo_eV_A"], s["trust_hi_eV_A"]
    if (lo is None) != (hi is None):
        raise InputError("stability.trust_hi_eV_A: give both trust levels or neither (null: derived from the reference)")
    if lo is not None and not 0 < lo < hi:
        raise InputError(f"stability.trust_hi_eV_A: must exceed stability.trust_lo_eV_A ({lo}) > 0")
    if not 0 < s["false_alarm_rate"] < 0.5:
        raise InputError(f"stability.false_alarm_rate: must be in (0, 0.5), got {s['false_alarm_rate']}")
    for key in ("rdf_mae", "rdf_block_fs", "lattice_tolerance", "dynamics_log10_tolerance", "framework_log10_tolerance",
                "accuracy_log10_tolerance", "min_msd_A2", "fusion_fraction", "framework_drift_A", "max_temperature_factor"):
        positive(f"stability.{key}", s[key])
    if s["trust_band_ratio"] <= 1:
        raise InputError(f"stability.trust_band_ratio: must be > 1, got {s['trust_band_ratio']}")
    positive("stability.min_runaway_K", s["min_runaway_K"], strict=False)
    from ase.data import atomic_numbers

    if d["md"]["species"] not in atomic_numbers:
        raise InputError(f"md.species: {d['md']['species']!r} is not a chemical symbol; give e.g. Li")
    if not 0 < s["accurate_fraction"] <= 1:
        raise InputError("stability.accurate_fraction: must be in (0, 1]")
    if not 0 <= d["oracle"]["max_failure_fraction"] <= 1:
        raise InputError("oracle.max_failure_fraction: must be in [0, 1]")
    for key in ("ensemble_size", "hidden", "layers"):
        positive(f"models.{key}", d["models"][key])
    positive("models.cutoff_A", d["models"]["cutoff_A"])
    if not d["models"]["architectures"]:
        raise InputError("models.architectures: give at least one architecture, e.g. [schnet]")
    for key in ("epochs", "batch_size", "learning_rate"):
        positive(f"training.{key}", d["training"][key])
    if d["training"]["max_minutes"] is not None:
        positive("training.max_minutes", d["training"]["max_minutes"])
    positive("training.fine_tune_epochs", d["training"]["fine_tune_epochs"], strict=False)
    positive("training.loader_workers", d["training"]["loader_workers"], strict=False)
    if d["training"]["max_atoms_per_batch"] is not None:
        positive("training.max_atoms_per_batch", d["training"]["max_atoms_per_batch"])
    al = d["active_learning"]
    positive("active_learning.max_rounds", al["max_rounds"], strict=False)
    positive("active_learning.labels_per_round", al["labels_per_round"])
    positive("active_learning.initial_labels", al["initial_labels"])
    positive("active_learning.audit_labels", al["audit_labels"], strict=False)
    if al["audit_labels"] == 1:
        raise InputError("active_learning.audit_labels: 1 frame has no scatter to judge; give 0 (off) or at least 2")
    if not 0.0 <= al["calibration_holdout"] < 1.0:
        raise InputError(f"active_learning.calibration_holdout: must be in [0, 1), got {al['calibration_holdout']}")
    if al["min_shared_elements"] is not None:
        positive("active_learning.min_shared_elements", al["min_shared_elements"])
    r = d["resources"]
    for key in ("md_workers", "reference_workers", "queue_size", "trainer_workers"):
        positive(f"resources.{key}", r[key])
    for key in ("max_restarts", "max_task_retries"):
        if r[key] < -1:
            raise InputError(f"resources.{key}: must be >= -1 (-1 = unlimited)")
    positive("candidates.max_candidates", d["candidates"]["max_candidates"])
    if d["space"]["arity_min"] > d["space"]["arity_max"]:
        raise InputError("space.arity_min: must not exceed space.arity_max")
    if d["name"] == "shards":
        raise InputError("name: 'shards' is the data store's label directory; choose another campaign name")
    if not d["name"] or any(c in d["name"] for c in "/\\ "):
        raise InputError(f"name: {d['name']!r} must be non-empty without slashes or spaces")


def store_root(store: str | Path | None, spec: dict) -> Path:
    """The data store directory: ``store`` (``--store``), else ``$MATSCREEN_STORE``, else ``store.path``.

    ``file://`` URIs are accepted; relative paths are resolved against the current directory, or against
    the home directory inside a Ray job (its working directory is deleted with the Ray session).
    """
    import os
    from urllib.parse import urlparse

    from orchestrator.ops.ray_runtime import base_dir

    text = str(store or os.environ.get("MATSCREEN_STORE") or spec["store"]["path"])
    if text.startswith("file://"):
        text = urlparse(text).path
    elif "://" in text:
        raise InputError(f"store {text!r}: only directories or file:// URIs on a filesystem every worker mounts "
                         "are supported; fix --store / MATSCREEN_STORE / store.path")
    path = Path(text).expanduser()
    return (path if path.is_absolute() else base_dir() / path).resolve()


def validate(data: Any) -> Spec:
    """Merge ``data`` (parsed YAML) over the defaults and validate; raise InputError naming the key."""
    if data is None:
        data = {}
    merged = _merge("", data, SCHEMA, defaults())
    _semantic_checks(merged)
    return Spec(merged)


def load_spec(path: str | Path | None) -> Spec:
    """Read and validate a campaign YAML file (``None``: the embedded demo spec)."""
    import yaml

    if path is None:
        return validate(yaml.safe_load(demo_spec_text()))
    path = Path(path)
    if not path.exists():
        raise InputError(f"campaign file {path} not found; check the path (see campaigns/demo.yaml for an example)")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise InputError(f"{path}{where}: {problem}; fix the YAML syntax") from None
    return validate(data)


def demo_spec_text() -> str:
    """The embedded default campaign (campaigns/demo.yaml links to this file)."""
    from importlib.resources import files

    return files("orchestrator").joinpath("campaign_demo.yaml").read_text()


def describe(schema: dict | None = None, prefix: str = "") -> str:
    """Every key with its default and meaning, one per line (for docs and ``--help``)."""
    schema = SCHEMA if schema is None else schema
    lines = []
    for k, v in schema.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            lines.append(f"{path}:")
            lines.append(describe(v, path + "."))
        else:
            lines.append(f"  {path} ({v.kind}, default {json.dumps(v.default)}): {v.help}")
    return "\n".join(lines)


def commented_yaml(values: dict | None = None, schema: dict | None = None, indent: str = "") -> str:
    """``values`` (default: the schema defaults) as YAML with every key's meaning as a comment; a key whose
    value differs from its default is marked ``(default: ...)``.  Loads back to ``values``."""
    import yaml

    schema = SCHEMA if schema is None else schema
    values = defaults() if values is None else values
    lines = []
    for key, field in schema.items():
        value = values[key]
        if isinstance(field, dict):
            lines.append(f"{indent}{key}:")
            lines.append(commented_yaml(value, field, indent + "  "))
            continue
        text = yaml.safe_dump(value, default_flow_style=True, width=10 ** 6).strip()
        if text.endswith("\n..."):
            text = text[:-4].strip()
        text = text.removesuffix("...").strip()
        note = field.help
        if value != field.default:
            note += f" (default: {json.dumps(field.default)})"
        lines.append(f"{indent}{key}: {text}  # {note}")
    return "\n".join(lines)
