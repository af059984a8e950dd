"""Train (or fine-tune) an ensemble of force fields on labelled frames: the one training path of
``matscreen train`` and of the campaign's Trainer.

Member ``m`` uses architecture ``architectures[m % len(architectures)]`` and seed ``seed + m``; a
GNN is trained with :func:`models.fit`, the analytic ``lj`` potential is fitted to a bootstrap of
the forces (:func:`models.lennard_jones.fit_lennard_jones`).  With ``init`` (models, or checkpoint
files) member ``m`` is fine-tuned from ``init[m % len(init)]`` (``fine_tune_epochs`` when given);
elements the data adds are appended to its tables.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from common.config import check_fields, param
from common.errors import InputError
from models.registry import ARCHITECTURES

if TYPE_CHECKING:
    from models.training import TrainConfig

ANALYTIC = ("lj",)
ARCHITECTURE_NAMES = tuple(ARCHITECTURES)


@dataclass(frozen=True)
class EnsembleConfig:
    """What to train: sizes in generic words (``models.registry.size_hparams``), or explicit ``hparams``
    (the architecture's own constructor keywords, which win), a cutoff (Å) and a parameter dtype."""
    architectures: tuple[str, ...] = param(("schnet",), "architectures; member m is architectures[m % n] (lj: an "
                                           "analytic Lennard-Jones student for tests)",
                                           choices=(*ARCHITECTURE_NAMES, *ANALYTIC))
    size: int = param(2, "ensemble members (>= 2 gives a force deviation)", gt=0)
    cutoff_A: float = param(5.0, "graph cutoff radius", unit="Å", gt=0)
    hidden: int | None = param(32, "hidden feature width (null: the architecture's default)", gt=0)
    layers: int | None = param(2, "interaction blocks (null: the architecture's default)", gt=0)
    hparams: dict = param(help="the architecture's own constructor keywords; win over hidden/layers", factory=dict)
    dtype: str = param("float32", "parameter dtype", choices=("float32", "float64"))

    def __post_init__(self):
        check_fields(self)
        if not self.architectures:
            raise InputError("architectures: give at least one architecture, e.g. [schnet]")

    def model_keywords(self, arch: str) -> dict:
        from models.registry import size_hparams

        sizes = size_hparams(arch, self.hidden, self.layers) if self.hidden and self.layers else {}
        return {"cutoff": self.cutoff_A, **sizes, **self.hparams}


@dataclass
class EnsembleTrainResult:
    members: list[str]                 # checkpoint paths, one per member ([] when nothing was written)
    n_frames: int
    force_mae_meV_A: float             # mean over members of the validation force MAE
    epochs: list[int] = field(default_factory=list)     # epochs actually run per member (0 for analytic fits)
    val_metrics: list[dict] = field(default_factory=list)
    stop_reasons: list[str] = field(default_factory=list)   # per member: max epochs | time budget | early stopping
    started_s: float | None = None     # wall clock (unix s) when the training began and ended
    finished_s: float | None = None
    models: list = field(default_factory=list, repr=False, compare=False)   # in memory only (not serialised)

    def to_dict(self) -> dict:
        return {"members": self.members, "n_frames": self.n_frames, "force_mae_meV_A": self.force_mae_meV_A,
                "epochs": self.epochs, "val_metrics": self.val_metrics, "stop_reasons": self.stop_reasons,
                "started_s": self.started_s, "finished_s": self.finished_s}

    @classmethod
    def from_dict(cls, d: dict) -> "EnsembleTrainResult":
        return cls(**d)


def train_ensemble(frames, config: EnsembleConfig, train: "TrainConfig", out_dir=None, seed: int = 0,
                   init: list | None = None, fine_tune_epochs: int | None = None, val_frames=None,
                   member_paths: list[str] | None = None, resumable: bool = False,
                   progress: Callable[[str], None] | None = None, metadata: dict | None = None,
                   fit_fn: Callable | None = None, processes: int = 1) -> EnsembleTrainResult:
    """Train ``config.size`` members on ``frames`` (labelled ase.Atoms, or a ``models.streaming.FrameCache``
    whose frames stay on disk).  ``fit_fn``: what trains one GNN member (default :func:`models.fit`; e.g.
    ``actors.distributed.data_parallel_fit(workers)`` for data-parallel training on Ray Train).

    Checkpoints: ``member_paths`` (one per member), else ``out_dir/member<m>.pt``, else none (use
    ``result.models``).  ``resumable``: ``models.fit`` rewrites each after every epoch with the state
    ``fit(resume=...)`` needs; otherwise each is written once, weights only.

    ``processes`` > 1: members train at once in that many processes, one torch thread each (in-memory
    frames, checkpoint paths and the default ``fit_fn`` only); each member's seed and data are the same as
    one after another.
    """
    from models.checkpoint import load_model
    from models.streaming import FrameCache

    started = time.time()
    streamed = isinstance(frames, FrameCache)
    frames = frames if streamed else list(frames)
    if not len(frames):
        raise InputError("no labelled frames to train on; label some frames first")
    if member_paths is None and out_dir is not None:
        member_paths = [str(Path(out_dir) / f"member{m}.pt") for m in range(config.size)]
    if member_paths is not None and len(member_paths) != config.size:
        raise InputError(f"{len(member_paths)} member paths for {config.size} members")
    starts = [load_model(p) if isinstance(p, (str, Path)) else p for p in init] if init else None
    say = progress or (lambda line: None)
    elements = frames.elements() if streamed else sorted({int(z) for a in frames for z in a.numbers})
    jobs = []
    for m in range(config.size):
        arch = config.architectures[m % len(config.architectures)]
        start = copy.deepcopy(starts[m % len(starts)]) if starts else None
        if arch in ANALYTIC and streamed:
            raise InputError("the analytic lj student is fitted in memory; give it frames, not a frame cache")
        jobs.append(dict(m=m, arch=arch, start=start, path=member_paths[m] if member_paths else None))
    common = dict(frames=frames, val_frames=val_frames, config=config, train=train, seed=seed, elements=elements,
                  fine_tune_epochs=fine_tune_epochs, resumable=resumable, metadata=metadata)
    parallel = (processes > 1 and config.size > 1 and not streamed and fit_fn is None and member_paths is not None)
    if parallel:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        say(f"{config.size} ensemble members in {min(processes, config.size)} processes")
        with ProcessPoolExecutor(max_workers=min(processes, config.size),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(_member_in_process, [{**common, **job} for job in jobs]))
        trained = [(load_model(job["path"]), *rest) for job, rest in zip(jobs, done)]
    else:
        trained = []
        for job in jobs:
            if config.size > 1:
                say(f"ensemble member {job['m'] + 1}/{config.size} (seed {seed + job['m']})")
            trained.append(_member(**common, **job, fit_fn=fit_fn, progress=progress))
    for *_, added in trained:
        if added:
            from models.base import symbol

            say(f"added elements: {', '.join(symbol(z) for z in added)}")
    models = [t[0] for t in trained]
    metrics = [t[1] for t in trained]
    return EnsembleTrainResult(members=list(member_paths or []), n_frames=len(frames),
                               force_mae_meV_A=float(np.mean([float(x.get("force_mae_meV_A", math.nan))
                                                              for x in metrics])),
                               epochs=[t[2] for t in trained], val_metrics=metrics, models=models,
                               stop_reasons=[t[3] for t in trained], started_s=started, finished_s=time.time())


def _member(*, m, arch, start, path, frames, val_frames, config, train, seed, elements, fine_tune_epochs, resumable,
            metadata, fit_fn=None, progress=None):
    """Train member ``m``: (model, validation metrics, epochs run, stop reason, elements added)."""
    from dataclasses import replace

    from models.checkpoint import save_model
    from models.lennard_jones import fit_lennard_jones
    from models.registry import build_model
    from models.training import fit

    if arch in ANALYTIC:
        model, mae_eV_A = fit_lennard_jones(frames, seed=seed + m, start=start)
        if path:
            save_model(model, path, training={"force_mae_meV_A": 1000.0 * mae_eV_A, "n_frames": len(frames)})
        return model, {"force_mae_meV_A": 1000.0 * mae_eV_A, "n_frames": len(frames)}, 0, "analytic fit", []
    model = start.train() if start is not None else build_model(
        arch, elements, dtype=config.dtype, seed=seed + m, **config.model_keywords(arch))
    cfg = replace(train, seed=seed + m, **({"epochs": fine_tune_epochs} if start is not None and fine_tune_epochs
                                            is not None else {}))
    result = (fit_fn or fit)(model, frames, val_frames, cfg, out=path if resumable else None, progress=progress,
                             fine_tune=start is not None, metadata={**(metadata or {}), "seed": seed + m})
    if path and not resumable:
        save_model(result.model, path)
    return (result.model, dict(result.val_metrics), len(result.history), result.stop_reason,
            list(result.added_elements))


def _member_in_process(job: dict):
    """:func:`_member` in a pool process (one torch thread): everything but the model, which is on disk."""
    import torch

    torch.set_num_threads(1)
    _, metrics, epochs, stop, added = _member(**job)
    return metrics, epochs, stop, added
