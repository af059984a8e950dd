"""The typed requests the campaign's roles answer: one frozen dataclass per task, naming its result type.

A role runs a request with ``handle(request)`` (``actors.roles``); the result is the package's own
dataclass where it has one (``CandidateSet``, ``ReferenceRun``, ``LabelResult``, ``EnsembleTrainResult``,
``ExplorationReport``), else one of the small result types below.  Every result has ``to_dict`` (the
ledger's JSON) and ``from_dict`` (a recorded step read back).  Paths are strings (they cross process
boundaries); settings are the packages' config dataclasses exactly as the spec holds them.  No ray here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from analysis.planning import Chunk  # noqa: F401  (the result of PlanChunk)
from analysis.selection import ExplorationReport
from analysis.verdicts import Verdict
from md.runner import SystemResult
from models.ensemble_training import EnsembleTrainResult
from reference.candidates import CandidateSet
from reference.oracles import LabelResult
from reference.reference_md import ReferenceRun


def _known(cls, d: dict) -> dict:
    """The entries of ``d`` that are fields of ``cls`` (a recorded step may carry keys a later version dropped)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


# --- results without a package type of their own ------------------------------------------------------
@dataclass
class Runs:
    """Student MD of one batch (temperatures x replicas): one ``SystemResult`` per system."""
    runs: list[SystemResult]

    @property
    def trajectories(self) -> list[str]:
        return [r.trajectory for r in self.runs]

    def to_dict(self) -> dict:
        return {"runs": [r.to_dict() for r in self.runs]}

    @classmethod
    def from_dict(cls, d: dict) -> "Runs":
        return cls([SystemResult.from_dict(r) for r in d["runs"]])


@dataclass
class Frames:
    """Frame indices per trajectory (one list per replica)."""
    frames: list[list[int]]

    def to_dict(self) -> dict:
        return {"frames": [list(f) for f in self.frames]}

    @classmethod
    def from_dict(cls, d: dict) -> "Frames":
        return cls([[int(i) for i in f] for f in d["frames"]])


@dataclass
class Verdicts:
    """One verdict per run, in the order asked."""
    verdicts: list[Verdict]

    def to_dict(self) -> dict:
        return {"verdicts": [v.to_dict() for v in self.verdicts]}

    @classmethod
    def from_dict(cls, d: dict) -> "Verdicts":
        return cls([Verdict.from_dict(v) for v in d["verdicts"]])


@dataclass
class Errors:
    """An ensemble's per-frame force deviation and true error (eV/Å) on oracle frames, and the calibration of
    one against the other (``analysis.calibration``).  ``force_mae_meV_A``: the ensemble mean's force MAE
    (on labelled frames); ``first_frame``: where a reference's held-out block starts."""
    deviation_eV_A: list[float]
    max_error_eV_A: list[float]
    mean_error_eV_A: list[float]
    calibration: dict
    force_mae_meV_A: float | None = None
    first_frame: int | None = None
    transit_error_eV_A: list[float] | None = None    # per frame, on its ions in transit (NaN: none)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> "Errors":
        return cls(**_known(cls, d))


@dataclass
class Transport:
    """D(T), sigma(T), Ea, log10 sigma(300 K) as the flat record (``analysis.transport.TransportResult.to_dict``)
    and the plots drawn of it."""
    transport: dict
    plots: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"transport": self.transport, "plots": list(self.plots)}

    @classmethod
    def from_dict(cls, d: dict) -> "Transport":
        return cls(d["transport"], list(d.get("plots", [])))


# --- requests ---------------------------------------------------------------------------------------------
class Request:
    """A task for one role; ``result`` is the type its answer has."""
    result: ClassVar[type]


@dataclass(frozen=True)
class GenerateCandidates(Request):
    """chemspace -> formulas -> candidate structures written under ``out_dir``."""
    out_dir: str
    config: Any                       # reference.candidates.CandidateConfig
    prototypes: list[str]
    space: Any                        # orchestrator's SpaceSpec (chemspace settings)
    result: ClassVar[type] = CandidateSet


@dataclass(frozen=True)
class ReferenceMD(Request):
    """Oracle MD of ``structure`` under ``plan`` (``reference.reference_md.ReferencePlan``) in the students'
    engine, stopped if it breaks by ``monitor`` (``md.monitors.MonitorConfig``; None: the default breakage
    rules, not a campaign's stability settings, which judge students); its labels become the store shard
    ``shard``."""
    structure: str
    plan: Any
    trajectory: str
    store: str
    shard: str
    run_id: str
    monitor: Any = None
    result: ClassVar[type] = ReferenceRun


@dataclass(frozen=True)
class ImportReference(Request):
    """A user's trajectory (``reference.user_reference.UserReference``) as the candidate's reference instead of
    oracle MD: the service's HDF5 copy and its first labels (``discard_fs`` fs of equilibration skipped)."""
    source: Any
    structure: str
    trajectory: str
    discard_fs: float
    store: str
    shard: str
    n_labels: int
    labels_oracle: str | None
    run_id: str
    holdout_fraction: float = 0.0
    result: ClassVar[type] = ReferenceRun


@dataclass(frozen=True)
class Label(Request):
    """Oracle labels of ``frames[k]`` of ``trajectories[k]`` (replicas) as one store shard; each frame carries
    its ions of ``species`` in transit (the per-atom array ``in_transit``, ``analysis.transit``)."""
    trajectories: list[str]
    frames: list[list[int]]
    temperature_K: float
    store: str
    shard: str
    run_id: str
    species: tuple = ("Li",)
    result: ClassVar[type] = LabelResult


@dataclass(frozen=True)
class SeedLabels(Request):
    """Oracle labels of a structure and ``n - 1`` rattled copies (``reference.seeding.seed_frames``) as one
    store shard: a tier-1 candidate's first labels."""
    structure: str
    n: int
    rattle_A: float
    seed: int
    store: str
    shard: str
    run_id: str
    result: ClassVar[type] = LabelResult


@dataclass(frozen=True)
class RunMD(Request):
    """Student MD: every temperature (K) x ``replicas`` as one batch, written under ``out_dir``."""
    members: list[str]
    structure: str
    temperatures_K: list[float]
    replicas: int
    protocol: Any                     # md.protocol.Protocol
    monitor: Any                      # md.monitors.MonitorConfig
    seed: int
    out_dir: str
    device: str | None = None         # None: the device the worker was given (its GPU, else the CPU)
    supercell: tuple[int, int, int] = (1, 1, 1)   # repeats of the structure's cell
    result: ClassVar[type] = Runs


@dataclass(frozen=True)
class Judge(Request):
    """The verdict on an exploration run's replicas against the reference, judged as one, and up to ``n_label``
    frames to label; ``reference_deviation``/``reference_error``: the ensemble's on the reference's held-out
    block (``reference_transit``: on its ions in transit); ``audit``: {frames, mean_error_eV_A,
    transit_error_eV_A} of the oracle's audit of the run."""
    explore: list[str]
    reference: str
    thresholds: Any                   # analysis.verdicts.VerdictThresholds
    n_label: int
    min_rmsd_A: float
    rdf_plot: str | None = None
    reference_deviation: list[float] | None = None
    reference_error: list[float] | None = None
    audit: dict | None = None
    reference_transit: list[float] | None = None
    same_material: bool = True        # False: the reference is another material's (tier 1): no structure/dynamics
    result: ClassVar[type] = ExplorationReport


@dataclass(frozen=True)
class JudgeRuns(Request):
    """One verdict per group of runs against the reference, each group judged as one (replicas at one
    temperature; no frame selection)."""
    groups: list[list[str]]
    reference: str
    thresholds: Any
    result: ClassVar[type] = Verdicts


@dataclass(frozen=True)
class AuditFrames(Request):
    """``n`` frames spread over an exploration run's replicas for the oracle to audit, and ``n_transit`` with the
    most ions of ``species`` in transit."""
    explore: list[str]
    n: int
    n_transit: int = 0
    species: tuple = ("Li",)
    result: ClassVar[type] = Frames


@dataclass(frozen=True)
class ReferenceErrors(Request):
    """The ensemble's deviation and true error on the held-out block of an oracle trajectory, calibrated."""
    members: list[str]
    trajectory: str
    thresholds: Any
    result: ClassVar[type] = Errors


@dataclass(frozen=True)
class ForceErrors(Request):
    """The ensemble's force MAE and deviation calibration on the labelled frames of a store shard, against the
    levels of ``reference_calibration`` when given; ``alpha``: the false-alarm rate."""
    members: list[str]
    shard: str
    alpha: float
    reference_calibration: dict | None = None
    result: ClassVar[type] = Errors


@dataclass(frozen=True)
class TransportRequest(Request):
    """D(T), sigma(T) and the Arrhenius fit of ``species`` over the trajectories; plots into ``plot_dir``."""
    trajectories: list[str]
    species: str
    plot_dir: str | None = None
    min_msd_A2: float = 10.0
    checks: list = field(default_factory=list)    # analysis.planning.ModelCheck dicts: the budget's model term
    alpha: float = 0.05                           # the curvature test's false-alarm rate
    model_prior: float | None = None              # a tier-1 candidate's model term (log10; no oracle dynamics)
    title: str | None = None                      # the plots' title: the candidate's name
    result: ClassVar[type] = Transport


@dataclass(frozen=True)
class PlanChunk(Request):
    """Where the next chunk of production goes, or why production stops (``analysis.planning.next_chunk``),
    from the runs so far: ``runs`` [[T, [stable trajectory paths]], ...] and ``ps`` [[T, ps per replica], ...]
    for every planned temperature; ``failed``: temperatures out of the plan."""
    runs: list
    ps: list
    failed: list
    plan: Any                         # analysis.planning.PrecisionPlan
    chunk_ps: float
    replicas: int
    spent_ps: float
    species: str
    discard_ps: float
    min_msd_A2: float
    checks: list = field(default_factory=list)    # analysis.planning.ModelCheck dicts
    model_prior: float | None = None              # a tier-1 candidate's model term (log10; no oracle dynamics)
    result: ClassVar[type] = Chunk


@dataclass(frozen=True)
class Train(Request):
    """Train (``init`` None) or fine-tune the ensemble on exactly the store ``selection`` into ``out_dir``."""
    store: str
    selection: dict                   # reference.store.Selection.to_dict()
    ensemble: Any                     # models.EnsembleConfig
    training: Any                     # models.TrainConfig
    out_dir: str
    seed: int
    init: list[str] | None = None
    fine_tune_epochs: int | None = None
    streaming: bool = False
    workers: int = 1
    result: ClassVar[type] = EnsembleTrainResult
