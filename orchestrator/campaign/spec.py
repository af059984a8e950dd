"""The campaign spec: a tree of the packages' own configuration dataclasses, read from YAML.

Each section is a package's dataclass (``space``: ``reference.candidates.SpaceSpec``, ``oracle``:
``reference.oracles.OracleConfig``, ``models``: ``models.EnsembleConfig``, ``training``: ``models.TrainConfig``,
``md.protocol``: ``md.protocol.Protocol``, ``stability``: ``analysis.verdicts.VerdictThresholds``), or the
campaign's own (``candidates``, ``md``, ``active_learning``, ``reference_data``, ``resources``, ``tracking``,
``store``, defined here).  The YAML keys are the field names; each field's default, unit, help and bounds live
once, on its dataclass (``common.config.param``).  Every key has a default, so ``{}`` is a valid campaign.
Errors name the key path: ``md.temperatures_K[2]: expected a number, got 'hot'``; a renamed key names its
new path.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from analysis.planning import PrecisionPlan, planned_temperatures
from analysis.ranking import THRESHOLD_MS_CM, TOP_K
from analysis.verdicts import VerdictThresholds
from common.config import (check_fields, coerce, construct, default_of, from_mapping, hints, param, show, spec_fields,
                           suggest)
from common.errors import InputError
from md.protocol import Protocol
from models.ensemble_training import EnsembleConfig
from models.training import TrainConfig
from reference.candidates import CandidateConfig, SpaceSpec
from reference.oracles import OracleConfig
from reference.user_reference import KIND as USER_REFERENCE, UserReference

MAX_CHUNKS = 400      # production chunks one budget may buy (each is a planner call, an MD call, a ledger row)
RANK_KEYS = ("log10_sigma_300K", "activation_energy_eV", "conductivity_mS_cm")


def section(cls):
    """A spec field holding a whole section (a dataclass)."""
    return field(default_factory=cls, metadata={"help": "", "section": True})


@dataclass(frozen=True)
class CandidatesSpec(CandidateConfig):
    """``reference.candidates.CandidateConfig`` and how the results table ranks them."""
    rank_by: str = param("log10_sigma_300K", "metric that ranks converged candidates (higher is better; Ea: lower)",
                         choices=RANK_KEYS)
    threshold_mS_cm: float = param(THRESHOLD_MS_CM, "the table gives each ranked candidate's probability that sigma(300 K) "
                                   "exceeds this (its log10 value normal with the total error)", unit="mS/cm", gt=0)
    top_k: int = param(TOP_K, "the table gives each ranked candidate's probability of being among the k highest "
                       "log10 sigma(300 K)", gt=0)

    def ranking(self) -> dict:
        """The keyword arguments of ``orchestrator.campaign.results.ranked``."""
        return {"rank_by": self.rank_by, "threshold_mS_cm": self.threshold_mS_cm, "top_k": self.top_k}


@dataclass(frozen=True)
class MDPlan:
    """The campaign's MD budget: where and how long students and the oracle run.  Steps of ``protocol``."""
    temperatures_K: tuple[float, ...] = param((), "production temperatures for D(T), sigma(T), Arrhenius; empty = "
                                              "planned (precision.n_temperatures from the reference temperature "
                                              "down); at the reference temperature the judged exploration replicas "
                                              "are production replicas", unit="K", gt=0)
    replicas: int = param(1, "independent replicas per production temperature (one batch)", gt=0)
    steps: int = param(2500, "steps per replica of one production chunk (precision.budget_ps decides how many "
                       "chunks each temperature gets)", gt=0)
    supercell: tuple[int, int, int] = param((1, 1, 1), "repeats of the candidate's cell in production runs (the "
                                            "reference and exploration keep the cell; with a supercell the "
                                            "exploration runs are not production runs)", gt=0)
    equilibration_steps: int = param(50, "steps discarded before analysis (production, reference and exploration "
                                     "runs)", ge=0)
    reference_temperature_K: float = param(800.0, "temperature of the oracle reference trajectory", unit="K", gt=0)
    reference_steps: int = param(2000, "steps of the oracle reference trajectory: long enough for its D(Li) and "
                                 "RDF noise to be measured (checks on too short a reference are inconclusive)", gt=0)
    exploration_steps: int | None = param(None, "student steps of one exploration run; null = reference_steps "
                                          "(the dynamics check compares equal protocols and lengths)", gt=0)
    exploration_replicas: int = param(4, "replicas of each exploration run, one batch, judged as one (RDF blocks "
                                      "pool, D combine, audits spread over them)", gt=0)
    species: str = param("Li", "the mobile ion: its D(T) and sigma(T); every other element is the framework")
    protocol: Protocol = section(Protocol)

    def __post_init__(self):
        from ase.data import atomic_numbers

        check_fields(self)
        if len(self.supercell) != 3:
            raise InputError(f"supercell: give three repeats like [2, 2, 1], got {list(self.supercell)}")
        for key in ("steps", "reference_steps", "exploration_steps"):
            value = getattr(self, key)
            if value is not None and self.equilibration_steps >= value:
                raise InputError(f"equilibration_steps: must be smaller than md.{key} (every run drops it)")
        if self.species not in atomic_numbers:
            raise InputError(f"species: {self.species!r} is not a chemical symbol; give e.g. Li")

    def run_protocol(self, steps: int, equilibration_steps: int = 0) -> Protocol:
        """Straight NVT at the target with this plan's protocol: ``steps`` long, ``equilibration_steps``
        dropped from every analysis of the run."""
        p = self.protocol
        return replace(p, total_fs=steps * p.timestep_fs, ramp_fs=0.0, discard_fs=equilibration_steps * p.timestep_fs,
                       checkpoint_every=max(p.stride, 50))


@dataclass(frozen=True)
class ActiveLearning:
    """Labelling and retraining rounds per candidate."""
    max_rounds: int = param(3, "labelling/retraining rounds per candidate before budget_spent", ge=0)
    labels_per_round: int = param(8, "frames labelled by the oracle per round", gt=0)
    audit_labels: int = param(8, "frames of each exploration run, spread evenly over it whatever their deviation, "
                              "that the oracle labels to measure the student's true force error on its own MD (the "
                              "accuracy check; they train the next round); 0 = no audit", ge=0)
    initial_labels: int = param(16, "oracle frames (from the reference trajectory) before the first training", gt=0)
    calibration_holdout: float = param(0.2, "final fraction of the reference after the equilibration that is never "
                                       "labelled: it sets the trust levels and the reference calibration; 0 = "
                                       "calibrate on all its frames (in sample: trust levels too low)", ge=0, lt=1)
    min_frame_distance_A: float = param(0.1, "frames closer than this RMSD to a selected one are skipped", unit="Å",
                                        ge=0)
    min_shared_elements: int | None = param(None, "training data = store frames (same oracle) sharing at least this "
                                            "many elements with the candidate; null = all but one of its elements "
                                            "(at least 1)", gt=0)
    fine_tune: bool = param(True, "fine-tune the previous round's ensemble instead of retraining from scratch")
    fine_tune_epochs: int = param(15, "epochs when fine-tuning the previous round's ensemble", ge=0)
    max_failure_fraction: float = param(0.5, "a round whose labels fail above this fraction ends the candidate as "
                                        "oracle_failing", ge=0, le=1)

    def __post_init__(self):
        check_fields(self)
        if self.audit_labels == 1:
            raise InputError("audit_labels: 1 frame has no scatter to judge; give 0 (off) or at least 2")


@dataclass(frozen=True)
class Funnel:
    """The screening funnel: tier 1 (every candidate, no oracle MD) ranks, tier 2 (oracle MD, the full checks)
    verifies the candidates that could be in the top ``candidates.top_k``.  Off: every candidate is tier 2."""
    enabled: bool = param(False, "screen in two tiers; off = every candidate gets oracle reference MD (tier 2)")
    tier2_candidates: int = param(1, "the oracle-MD budget: at most this many tier-1 candidates get tier 2 "
                                  "(those whose upper error reaches the top k: any without a number first, then "
                                  "by their probability of being in the top k); a candidate with a reference_data "
                                  "trajectory is tier 2 from the start and not counted", ge=0)
    upper_z: float = param(1.645, "the upper end of a tier-1 error is value + upper_z x total error (1.645: a "
                           "one-sided 95 % bound); a candidate whose upper end reaches the k-th highest lower "
                           "end (value - upper_z x error) could be in the top k", gt=0)
    seed_labels: int = param(8, "oracle single points of each tier-1 candidate before its fine-tuning: its "
                             "substituted structure and rattled copies", ge=2)
    rattle_A: float = param(0.1, "standard deviation of the seed copies' atomic displacements", unit="Å", gt=0)
    warmup_steps: int = param(500, "steps of the short student MD at every production temperature (one batch) "
                              "whose frames the oracle labels before production (md_labels of them)", ge=1)
    md_labels: int = param(8, "oracle single points spread over the warm-up MD (they fine-tune the student "
                           "with the seed labels)", ge=0)
    transfer_log10_err: float = param(0.5, "the tier-1 model term of log10 sigma(300 K): no oracle dynamics of "
                                      "the candidate were compared, so the student-vs-oracle error of log10 D "
                                      "is this prior, added in quadrature to the model term of the verified "
                                      "candidate the family model came from", unit="log10", gt=0)
    target_log10_err: float | None = param(None, "tier 1's production target; null = precision.target_log10_err",
                                           unit="log10 mS/cm", gt=0)
    budget_ps: float | None = param(None, "tier 1's student MD budget per candidate; null = precision.budget_ps",
                                    unit="ps", gt=0)
    n_temperatures: int | None = param(None, "tier 1's planned temperatures (the reference temperature included); "
                                       "null = precision.n_temperatures", ge=2)
    lowest_temperature_K: float | None = param(None, "tier 1's coldest planned temperature; null = "
                                               "precision.lowest_temperature_K", unit="K", gt=0)
    replay_frames: int | None = param(64, "a tier-1 fine-tuning trains on the candidate's own labels and at most "
                                      "this many other shared-element frames of the store, evenly spaced (the "
                                      "replay that keeps the family's knowledge); null = the whole store",
                                      ge=1)
    refresh_every: int = param(1, "the family model (the start of every tier-1 fine-tuning) is replaced by the "
                               "latest finished candidate's model, which trained on every shared-element label "
                               "so far, after every this many candidates; 0 = never (the first verified "
                               "candidate's model throughout)", ge=0)

    def __post_init__(self):
        check_fields(self)

    def tier1_precision(self, plan: PrecisionPlan) -> PrecisionPlan:
        """``plan`` with tier 1's target, budget and temperatures (and no slope check: tier 1 runs no oracle MD)."""
        return replace(plan, target_log10_err=self.target_log10_err or plan.target_log10_err,
                       budget_ps=self.budget_ps or plan.budget_ps, slope_check_temperature_K=None,
                       n_temperatures=self.n_temperatures or plan.n_temperatures,
                       lowest_temperature_K=self.lowest_temperature_K or plan.lowest_temperature_K)


@dataclass(frozen=True)
class ReferenceData:
    """The user's own reference trajectories (e.g. AIMD), judged against instead of oracle MD."""
    trajectories: dict = param(help="candidate key or formula -> {path, temperature_K, dt_fs, format, topology} "
                               "(reference.user_reference.UserReference); path: any format `matscreen analyze` "
                               "reads, relative to the working directory, or `package:<path>` inside matscreen's "
                               "installed packages", factory=dict)
    slope_trajectories: dict = param(help="candidate key or formula -> the same fields, at a second (lower) "
                                     "temperature: the slope check's reference instead of oracle MD "
                                     "(precision.slope_check_temperature_K); its labels train the student from the "
                                     "first round", factory=dict)
    oracle: str | None = param(None, "level of theory of those files' energies and forces (e.g. vasp-pbe): their "
                               "frames become the candidate's labels under this name; null = the campaign's oracle "
                               "labels frames of the trajectory")

    def __post_init__(self):
        object.__setattr__(self, "trajectories", _check_references("reference_data.trajectories", self.trajectories))
        object.__setattr__(self, "slope_trajectories",
                           _check_references("reference_data.slope_trajectories", self.slope_trajectories))


@dataclass(frozen=True)
class Resources:
    """Actors and what each holds (no effect on the numbers)."""
    md_workers: int = param(1, "MDWorker actors", gt=0)
    reference_workers: int = param(1, "ReferenceWorker actors (oracle labels, reference MD)", gt=0)
    gpus_per_md_worker: float | None = param(None, "GPUs per MDWorker; null = 1 when the cluster has GPUs, else 0",
                                             ge=0)
    cpus_per_md_worker: float = param(1.0, "CPUs per MDWorker", gt=0)
    cpus_per_oracle: float = param(1.0, "CPUs per ReferenceWorker", gt=0)
    cpus_per_trainer: float = param(1.0, "CPUs of the Trainer", gt=0)
    trainer_workers: int = param(1, "data-parallel training workers (Ray Train, torch DDP; > 1 streams the data)",
                                 gt=0)
    streaming: bool = param(False, "keep training frames on disk (an HDF5 frame cache) and build graphs per batch: "
                            "memory independent of the data size")
    queue_size: int = param(4, "candidates in flight at once (bounded queue)", gt=0)
    max_restarts: int = param(3, "times Ray restarts a crashed actor (-1 = unlimited)", ge=-1)
    max_task_retries: int = param(2, "times Ray retries a task on a restarted actor (-1 = unlimited)", ge=-1)

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class Tracking:
    """Where MLflow records the campaign."""
    uri: str | None = param(None, "MLflow tracking URI; null = $MLFLOW_TRACKING_URI or sqlite:///.matscreen/mlflow.db")
    experiment: str | None = param(None, "MLflow experiment; null = 'matscreen-<name>'")
    log_trajectories: bool = param(True, "attach compressed trajectories to candidate runs")
    register_models: bool = param(True, "register each round's ensemble in the MLflow model registry")


@dataclass(frozen=True)
class Store:
    """The data store."""
    path: str = param(".matscreen/store", "data-store directory (labels in <path>/shards, campaigns in "
                      "<path>/<name>), relative to cwd; overridden by $MATSCREEN_STORE and by `campaign run --store`")


@dataclass(frozen=True)
class CampaignSpec:
    """A validated campaign: sections are the packages' dataclasses (``spec.md.protocol.timestep_fs``)."""
    name: str = param("demo", "campaign name: one MLflow experiment and one ledger per name")
    seed: int = param(0, "random seed for enumeration order, model initialisation and MD")
    space: SpaceSpec = section(SpaceSpec)
    candidates: CandidatesSpec = section(CandidatesSpec)
    prototypes: tuple[str, ...] = param(("Li10GeP2S12",), "prototype structures (library names or CIF paths) for "
                                        "substitution")
    oracle: OracleConfig = section(OracleConfig)
    models: EnsembleConfig = section(EnsembleConfig)
    training: TrainConfig = section(TrainConfig)
    md: MDPlan = section(MDPlan)
    precision: PrecisionPlan = section(PrecisionPlan)
    stability: VerdictThresholds = section(VerdictThresholds)
    active_learning: ActiveLearning = section(ActiveLearning)
    funnel: Funnel = section(Funnel)
    reference_data: ReferenceData = section(ReferenceData)
    resources: Resources = section(Resources)
    tracking: Tracking = section(Tracking)
    store: Store = section(Store)

    def __post_init__(self):
        if self.name == "shards":
            raise InputError("name: 'shards' is the data store's label directory; choose another campaign name")
        if not self.name or any(c in self.name for c in "/\\ "):
            raise InputError(f"name: {self.name!r} must be non-empty without slashes or spaces")
        slope = self.precision.slope_check_temperature_K
        if isinstance(slope, float) and slope == float(self.md.reference_temperature_K):
            raise InputError("precision.slope_check_temperature_K: the slope check needs a second temperature; give "
                             f"one other than md.reference_temperature_K ({self.md.reference_temperature_K:g} K)")
        if self.funnel.enabled and not self.md.temperatures_K and self.precision.lowest_temperature_K is None \
                and self.funnel.lowest_temperature_K is None:
            raise InputError("funnel.enabled: tier 1 has no oracle MD to place its production temperatures with; give "
                             "funnel.lowest_temperature_K, precision.lowest_temperature_K or md.temperatures_K")
        # the judge's mobile species is the plan's: one value
        if self.stability.mobile_species != (self.md.species,):
            object.__setattr__(self, "stability", replace(self.stability, mobile_species=(self.md.species,)))

    # --- the spec as data ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Every key of the spec (the YAML tree) as plain data."""
        return _as_dict(self, "")

    def science_hash(self) -> str:
        """Hash of everything that changes results (not resources, not tracking)."""
        science = {k: v for k, v in self.to_dict().items() if k not in NON_SCIENCE_SECTIONS}
        return hashlib.sha256(json.dumps(science, sort_keys=True).encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # --- what the campaign derives from it ----------------------------------------------------------
    def monitor(self):
        """``md.monitors.MonitorConfig``: the judge's thresholds, checked every stored frame at most."""
        from md.monitors import MonitorConfig

        from common.vocabulary import BreakageRules

        return MonitorConfig(**{f.name: getattr(self.stability, f.name) for f in fields(BreakageRules)},
                             check_every=max(1, min(10, self.md.protocol.stride)))

    def reference_plan(self, temperature_K: float | None = None, steps: int | None = None,
                       labels: int | None = None):
        """``reference.reference_md.ReferencePlan``: oracle MD under the students' run protocol
        (:meth:`MDPlan.run_protocol`: the same engine, thermostat, time step and stride), labelling ``labels``
        evenly spaced frames (default ``active_learning.initial_labels``) before the held-out calibration block."""
        from reference.reference_md import ReferencePlan, calibration_block

        md, al = self.md, self.active_learning
        steps = md.reference_steps if steps is None else steps
        labels = al.initial_labels if labels is None else labels
        labelled_steps = calibration_block(steps + 1, md.equilibration_steps, al.calibration_holdout)
        return ReferencePlan(md.run_protocol(steps, md.equilibration_steps),
                             temperature_K=md.reference_temperature_K if temperature_K is None else temperature_K,
                             seed=self.seed, label_every=max(1, labelled_steps // max(1, labels)),
                             holdout_fraction=al.calibration_holdout)

    def exploration_steps(self, ref=None) -> int:
        """Steps of an exploration run: ``md.exploration_steps``, by default the reference's length (a user's
        reference trajectory: its duration in the student's time steps)."""
        if self.md.exploration_steps is not None:
            return self.md.exploration_steps
        meta = _metadata(ref)
        if meta.get("kind") == USER_REFERENCE:
            return max(1, round(meta["duration_fs"] / self.md.protocol.timestep_fs))
        return self.md.reference_steps

    def reference_temperature(self, ref=None) -> float:
        """The temperature of the candidate's reference (K): a user's trajectory's own, else the spec's."""
        meta = _metadata(ref)
        return float(meta["temperature_K"]) if meta.get("kind") == USER_REFERENCE else self.md.reference_temperature_K

    def chunk_ps(self) -> float:
        """Simulated time of one production chunk per replica (ps)."""
        return self.md.steps * self.md.protocol.timestep_fs / 1000.0

    def check_production_budget(self) -> None:
        """A campaign's production budget must buy at most ``MAX_CHUNKS`` chunks (the benchmark's fixed design
        does not plan, so this is checked when a campaign starts)."""
        chunks = self.precision.budget_ps / (self.chunk_ps() * self.md.replicas)
        if chunks > MAX_CHUNKS:
            raise InputError(f"precision.budget_ps: {self.precision.budget_ps:g} ps is {chunks:.0f} production chunks "
                             f"of md.steps ({self.chunk_ps():g} ps x {self.md.replicas} replicas); at most "
                             f"{MAX_CHUNKS}: raise md.steps or lower the budget")

    def production_temperatures(self, ref=None, reference_D_cm2_s: float | None = None,
                                slope_K: float | None = None) -> list[float]:
        """Production temperatures (K, hottest first): ``md.temperatures_K``, else planned from the reference
        temperature down (``analysis.planning.planned_temperatures``, placed with the reference's D).  The slope
        check's temperature (``slope_K``, else a number in ``precision.slope_check_temperature_K``) is always one
        of them: it replaces the planned temperature nearest to it in 1/T (is added to a listed set)."""
        t_ref = self.reference_temperature(ref)
        listed = bool(self.md.temperatures_K)
        if listed:
            temps = {float(t) for t in self.md.temperatures_K}
        else:
            temps = set(planned_temperatures(t_ref, reference_D_cm2_s, self.precision, self.stability.min_msd_A2,
                                             self.chunk_ps()))
        given = self.precision.slope_check_temperature_K
        slope_K = slope_K if slope_K is not None else (given if isinstance(given, float) else None)
        if slope_K is not None and slope_K not in temps:
            if not listed:
                others = [t for t in temps if t != t_ref]
                temps.discard(min(others, key=lambda t: abs(1.0 / t - 1.0 / slope_K)))
            temps.add(float(slope_K))
        return sorted(temps, reverse=True)

    def exploration_is_production(self) -> bool:
        """The judged exploration replicas count as production at the reference temperature (same cell)."""
        return tuple(self.md.supercell) == (1, 1, 1)

    def user_reference(self, row: dict, slope: bool = False) -> UserReference | None:
        """The candidate's entry in ``reference_data.trajectories`` (``slope``: in ``slope_trajectories``), by
        candidate key, else by reduced formula."""
        from pymatgen.core import Composition

        entries = self.reference_data.slope_trajectories if slope else self.reference_data.trajectories
        if row["key"] in entries:
            return UserReference(**entries[row["key"]])
        reduced = Composition(row["formula"]).reduced_formula
        for name, entry in entries.items():
            try:
                if Composition(name).reduced_formula == reduced:
                    return UserReference(**entry)
            except Exception:  # noqa: BLE001 - a candidate key, not a formula
                continue
        return None


Spec = CampaignSpec


def _metadata(ref) -> dict:
    """The metadata of a candidate's reference (a ``reference.reference_md.ReferenceRun``, or its dict)."""
    if ref is None:
        return {}
    return (ref.get("metadata") if isinstance(ref, dict) else ref.metadata) or {}
# sections whose change does not change the science (resume with a different value is fine)
NON_SCIENCE_SECTIONS = ("resources", "tracking")
# fields of a package's dataclass that the campaign sets itself (not spec keys)
EXCLUDED = {
    "training": ("seed", "device"),
    "stability": ("mobile_species",),
    "md.protocol": ("total_fs", "start_temperature_K", "ramp_fs", "discard_fs", "rescale_every", "checkpoint_every"),
}
# keys of earlier specs -> their path now
RENAMED = {
    "models": {"ensemble_size": "models.size"},
    "training": {"learning_rate": "training.lr", "validation_fraction": "training.val_fraction",
                 "max_minutes": "training.max_time_s (seconds)", "fine_tune": "active_learning.fine_tune",
                 "fine_tune_epochs": "active_learning.fine_tune_epochs", "streaming": "resources.streaming"},
    "md": {"timestep_fs": "md.protocol.timestep_fs", "save_every": "md.protocol.stride",
           "thermostat": "md.protocol.thermostat"},
    "oracle": {"max_failure_fraction": "active_learning.max_failure_fraction"},
}


def _as_dict(obj, path: str) -> Any:
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in spec_fields(type(obj), EXCLUDED.get(path, ())):
            out[f.name] = _as_dict(getattr(obj, f.name), f"{path}.{f.name}" if path else f.name)
        return out
    if isinstance(obj, (list, tuple)):
        return [_as_dict(v, path) for v in obj]
    if isinstance(obj, dict):
        return {k: _as_dict(v, path) for k, v in obj.items()}
    return obj


def build(cls, data: Any, path: str = "", base=None):
    """``cls`` from parsed YAML over ``base`` (default: the defaults), sections recursively; InputError names
    the key path."""
    if data is None:
        data = {}
    where = path or "the spec"
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping of keys, got {show(data)}")
    base = cls() if base is None else base
    renamed = RENAMED.get(path, {})
    allowed = {f.name: f for f in spec_fields(cls, EXCLUDED.get(path, ()))}
    tps = hints(cls)
    prefix = f"{path}." if path else ""
    values = {}
    for key, value in data.items():
        key = str(key)
        if key in renamed:
            raise InputError(f"{prefix}{key}: renamed to {renamed[key]}; rename the key in your spec")
        if key not in allowed:
            raise InputError(f"{prefix}{key}: unknown key{_suggest(key, allowed, prefix)}")
        values[key] = (build(tps[key], value, prefix + key, getattr(base, key)) if allowed[key].metadata.get("section")
                       else coerce(prefix + key, value, tps[key]))
    return construct(cls, values, path, base)


def _suggest(key: str, allowed: dict, prefix: str) -> str:
    """'; did you mean ...?' for the closest key of this section, else of any section."""
    import difflib

    if difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.5):
        return suggest(key, list(allowed), prefix)
    leaves = {p.rsplit(".", 1)[-1]: p for p in _all_paths(CampaignSpec, "")}
    near = difflib.get_close_matches(key, list(leaves), n=1, cutoff=0.7)
    return f"; did you mean '{leaves[near[0]]}'?" if near else f"; valid keys here: {', '.join(allowed)}"


def _all_paths(cls, path: str) -> list[str]:
    out = []
    for f in spec_fields(cls, EXCLUDED.get(path, ())):
        full = f"{path}.{f.name}" if path else f.name
        out.append(full)
        if f.metadata.get("section"):
            out.extend(_all_paths(hints(cls)[f.name], full))
    return out


def validate(data: Any) -> CampaignSpec:
    """Merge ``data`` (parsed YAML) over the defaults and validate; raise InputError naming the key."""
    return build(CampaignSpec, data)


def defaults() -> dict:
    """The full default spec as plain data."""
    return CampaignSpec().to_dict()


def commented_yaml(spec: CampaignSpec | None = None) -> str:
    """``spec`` (default: the defaults) as YAML with every key's meaning and unit as a comment; a key whose value
    differs from its default is marked ``(default: ...)``.  Loads back to ``spec.to_dict()``."""
    return _commented(CampaignSpec() if spec is None else spec, "", "")


def _commented(obj, path: str, indent: str) -> str:
    import yaml

    lines = []
    for f in spec_fields(type(obj), EXCLUDED.get(path, ())):
        full = f"{path}.{f.name}" if path else f.name
        value = getattr(obj, f.name)
        if f.metadata.get("section"):
            lines.append(f"{indent}{f.name}:")
            lines.append(_commented(value, full, indent + "  "))
            continue
        data = _as_dict(value, full)
        text = yaml.safe_dump(data, default_flow_style=True, width=10 ** 6).strip()
        text = text.removesuffix("...").strip()
        unit = f" [{f.metadata['unit']}]" if f.metadata.get("unit") else ""
        note = f.metadata["help"] + unit
        default = _as_dict(default_of(f), full)
        if data != default:
            note += f" (default: {json.dumps(default)})"
        lines.append(f"{indent}{f.name}: {text}  # {note}")
    return "\n".join(lines)


def describe() -> str:
    """Every key with its type, default and meaning, one per line."""
    from common.config import type_word

    lines = []
    for full in _all_paths(CampaignSpec, ""):
        obj = CampaignSpec()
        for part in full.split(".")[:-1]:
            obj = getattr(obj, part)
        name = full.rsplit(".", 1)[-1]
        f = {x.name: x for x in fields(type(obj))}[name]
        if f.metadata.get("section"):
            lines.append(f"{full}:")
            continue
        unit = f", {f.metadata['unit']}" if f.metadata.get("unit") else ""
        lines.append(f"  {full} ({type_word(hints(type(obj))[name])}, default "
                     f"{json.dumps(_as_dict(default_of(f), full), ensure_ascii=False)}{unit}): {f.metadata['help']}")
    return "\n".join(lines)


PACKAGE_PREFIX = "package:"      # a reference_data path inside matscreen's installed packages (bundled data)


def package_root() -> Path:
    """The folder holding matscreen's packages (``reference/``, ``orchestrator/``...): where a ``package:`` path
    starts (the repository in a development install, site-packages otherwise)."""
    import reference

    return Path(reference.__file__).resolve().parent.parent


def _check_references(path: str, value: Any) -> dict:
    """``reference_data.trajectories``: name -> ``UserReference`` fields; files must exist (paths resolved)."""
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a mapping of candidate: {{path, temperature_K}}, got {show(value)}")
    out = {}
    for name, entry in value.items():
        where = f"{path}.{name}"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected a mapping with path and temperature_K, got {show(entry)}")
        for key in ("path", "temperature_K"):
            if entry.get(key) is None:
                raise InputError(f"{where}.{key}: missing; give the trajectory's {key.replace('_K', ' (K)')}")
        clean = dataclasses.asdict(from_mapping(UserReference, entry, where))
        for key in ("path", "topology"):
            if clean[key] is None:
                continue
            if clean[key].startswith(PACKAGE_PREFIX):
                clean[key] = str(package_root() / clean[key][len(PACKAGE_PREFIX):])
            if not Path(clean[key]).expanduser().is_file():
                raise InputError(f"{where}.{key}: {clean[key]} not found; give an existing file (relative paths "
                                 "start from the working directory)")
            clean[key] = str(Path(clean[key]).expanduser().resolve())
        out[str(name)] = clean
    return out


def store_root(store: str | Path | None, spec: CampaignSpec) -> Path:
    """The data store directory: ``store`` (``--store``), else ``$MATSCREEN_STORE``, else ``store.path``.

    ``file://`` URIs are accepted; relative paths are resolved against the current directory, or against
    the home directory inside a Ray job (its working directory is deleted with the Ray session).
    """
    import os
    from urllib.parse import urlparse

    from orchestrator.ops.ray_runtime import base_dir

    text = str(store or os.environ.get("MATSCREEN_STORE") or spec.store.path)
    if text.startswith("file://"):
        text = urlparse(text).path
    elif "://" in text:
        raise InputError(f"store {text!r}: only directories or file:// URIs on a filesystem every worker mounts "
                         "are supported; fix --store / MATSCREEN_STORE / store.path")
    path = Path(text).expanduser()
    return (path if path.is_absolute() else base_dir() / path).resolve()




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


