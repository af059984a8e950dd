"""Training force fields on labelled frames (a ``fit``-style API) and evaluating them.

Loss (per batch):  w_E * MSE(E/atom) [eV²/atom²] + w_F * MSE(F) [eV²/Å²], default w_E:w_F = 1:1000,
plus optionally w_S * MSE(stress) [(eV/Å³)²] over frames with stress labels (default w_S = 0).
AdamW, ReduceLROnPlateau on the validation loss, an exponential moving average (EMA) of the
weights (validated, checkpointed and returned), gradient clipping, early stopping, a wall-clock
budget (``max_time_s``), the best-by-validation checkpoint written atomically after every epoch
and resumable (``fit(..., resume=path)``).  A non-finite loss skips the batch and halves the
learning rate; ``max_nan`` of them in a row raise :class:`TrainingDiverged` (never sys.exit).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

from common.config import check_fields, param
from common.errors import InputError
from common.progress import report as report_progress
from models.batching import atoms_item, collate_items, epoch_plan, rank_world
from models.base import composition, symbol
from models.data import check_frames, check_single_oracle, frame_labels, split_frames
from models.streaming import FrameCache, StreamedGraphs


class TrainingDiverged(RuntimeError):
    """The loss stayed non-finite for ``max_nan`` consecutive batches."""


@dataclass
class TrainConfig:
    """How one force field is trained (``models.fit``).  Energies eV/atom, forces eV/Å, stress eV/Å³."""
    epochs: int = param(200, "epochs of a training from scratch (the budget: the same seed gives the same model)",
                        gt=0)
    batch_size: int = param(8, "frames per optimisation step", gt=0)
    lr: float = param(1e-3, "Adam learning rate", gt=0)
    weight_decay: float = param(1e-6, "Adam weight decay", ge=0)
    energy_weight: float = param(1.0, "loss weight of energies (eV/atom)", ge=0)
    force_weight: float = param(1000.0, "loss weight of forces (eV/Å)", ge=0)
    stress_weight: float = param(0.0, "loss weight of MSE(stress) in (eV/Å³)²; frames without stress are skipped",
                                 ge=0)
    ema_decay: float = param(0.99, "decay of the weights' exponential moving average", ge=0, lt=1)
    grad_clip: float = param(10.0, "gradient norm clip", gt=0)
    lr_factor: float = param(0.5, "learning-rate factor on a plateau", gt=0, lt=1)
    lr_patience: int = param(10, "epochs without improvement before the learning rate drops", gt=0)
    min_lr: float = param(1e-6, "smallest learning rate", ge=0)
    early_stopping_patience: int = param(40, "epochs without improvement before training stops", gt=0)
    max_time_s: float | None = param(None, "wall-clock safety net (the budget is epochs; when the net stops a "
                                     "training, the epochs done are recorded); null = none", unit="s", gt=0)
    val_fraction: float = param(0.1, "fraction of frames held out for validation", ge=0, lt=1)
    val_per_group: int | None = param(None, "validation frames per (temperature, run) group; overrides "
                                      "val_fraction", gt=0)
    seed: int = param(0, "random seed of initialisation, split and shuffling")
    max_nan: int = param(5, "consecutive non-finite batches before training stops", gt=0)
    device: str = param("cpu", "torch device")
    loader_workers: int = param(0, "data-loader processes that build graphs of streamed data while the model "
                                "trains", ge=0)
    max_atoms_per_batch: int | None = param(1024, "at most this many atoms per batch as well as batch_size frames "
                                            "(a larger frame is a batch alone): memory bounded by atoms, not by "
                                            "the cell size; null = batch_size frames whatever their size", gt=0)
    checkpoint_every_batches: int = param(0, "also checkpoint every N batches (resume mid-epoch); 0 = after "
                                          "epochs only", ge=0)
    mixed_precision: bool = param(False, "bf16 autocast of the forward pass (CUDA only)")

    def __post_init__(self):
        check_fields(self)


@dataclass
class TrainResult:
    model: object                      # the best-by-validation EMA model (eval mode)
    history: list = field(default_factory=list)
    best_val_loss: float = math.inf
    epochs_run: int = 0
    stop_reason: str = ""
    val_metrics: dict = field(default_factory=dict)
    added_elements: list = field(default_factory=list)


# --------------------------------------------------------------------------- data
class GraphData:
    """Frames with their labels and neighbour lists in memory (built once at the model cutoff)."""

    def __init__(self, frames, cutoff: float, dtype=torch.float32, device="cpu", max_atoms: int | None = None):
        self.dtype, self.device, self.max_atoms = dtype, device, max_atoms
        self.items = [atoms_item(atoms, cutoff) for atoms in frames]
        self.cutoff = cutoff

    def __len__(self) -> int:
        return len(self.items)

    def collate(self, idx):
        return collate_items([self.items[k] for k in idx], self.cutoff, self.dtype, self.device)

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0, start: int = 0, shard: bool = True):
        """Batches of an epoch from batch number ``start`` on (``shard`` is for the streamed, parallel data)."""
        n_atoms = [len(it["numbers"]) for it in self.items]
        for idx in epoch_plan(len(self), batch_size, shuffle, seed, n_atoms, self.max_atoms, start, shard):
            yield self.collate(idx)


# --------------------------------------------------------------------------- metrics
def evaluate(model, frames, batch_size: int = 16, data: GraphData | None = None) -> dict:
    """Energy MAE (meV/atom), force MAE (meV/Å), force R², also per element, on labelled frames."""
    if data is None:
        frames = check_frames(frames, "the evaluation set")
        first = model.models[0] if hasattr(model, "models") else model      # an analytic member: float64, cpu
        device = first.reference_energies.device if hasattr(first, "reference_energies") else "cpu"
        data = GraphData(frames, float(model.cutoff), getattr(first, "param_dtype", torch.float64), device,
                         TrainConfig().max_atoms_per_batch)
    e_err, f_pred, f_true, zs = [], [], [], []
    for batch, nl, energy, forces, _ in data.batches(batch_size, shard=False):
        pred = model.predict(batch, nl)
        n = batch.atoms_per_system.to(energy.dtype)
        e_err.append(((pred.energy - energy) / n).detach().cpu().double())
        f_pred.append(pred.forces.detach().cpu().double())
        f_true.append(forces.cpu().double())
        zs.append(batch.numbers.cpu())
    e_err = torch.cat(e_err)
    fp, ft, z = torch.cat(f_pred), torch.cat(f_true), torch.cat(zs)

    def force_stats(p, t):
        diff = p - t
        ss_tot = float(((t - t.mean()) ** 2).sum())
        r2 = 1.0 - float((diff ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
        return 1000 * float(diff.abs().mean()), 1000 * float(diff.pow(2).mean().sqrt()), r2

    f_mae, f_rmse, f_r2 = force_stats(fp, ft)
    per_element = {}
    for zz in sorted(set(z.tolist())):
        m = z == zz
        mae, rmse, r2 = force_stats(fp[m], ft[m])
        per_element[symbol(zz)] = {"force_mae_meV_A": mae, "force_rmse_meV_A": rmse, "force_r2": r2,
                                   "n_atoms": int(m.sum())}
    return {
        "energy_mae_meV_atom": 1000 * float(e_err.abs().mean()),
        "energy_rmse_meV_atom": 1000 * float(e_err.pow(2).mean().sqrt()),
        "force_mae_meV_A": f_mae,
        "force_rmse_meV_A": f_rmse,
        "force_r2": f_r2,
        "n_frames": len(data),
        "n_atoms": int(len(z)),
        "per_element": per_element,
    }


# --------------------------------------------------------------------------- normalisation
def set_fitted_normalisation(model, counts: np.ndarray, energies: np.ndarray, force_rms: float) -> None:
    """Reference energies by least squares on ``counts`` [F, model.elements]; network scale = RMS force (eV)."""
    sol, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    ref = {int(z): float(e) for z, e in zip(model.elements, sol)}
    scale = force_rms
    if not scale > 1e-8:
        scale = float(np.std((energies - counts @ sol) / np.maximum(counts.sum(1), 1))) or 1.0
    model.set_normalisation(ref, scale)


def fit_normalisation(model, frames) -> None:
    """Reference energies by least squares; network scale = RMS force (eV/Å·Å = eV)."""
    counts, energies = composition(frames, model.elements)
    forces = np.concatenate([frame_labels(a)["forces"].ravel() for a in frames])
    set_fitted_normalisation(model, counts, energies, float(np.sqrt(np.mean(forces ** 2))) if forces.size else 0.0)


def fit_core_off(model, frames, fine_tune: bool = False) -> None:
    """End the model's core repulsion of each element pair at its closest approach in ``frames`` (labelled
    ase.Atoms or a ``FrameCache``, training and validation frames alike): :meth:`ForceFieldModel.fit_core_off`."""
    from models.graph import closest_pairs

    if isinstance(frames, FrameCache):
        systems = ((f["numbers"], f["positions"], f["cell"], f["pbc"]) for f in map(frames.frame, range(len(frames))))
    else:
        systems = ((a.numbers, a.positions, a.cell.array, a.pbc) for a in frames)
    model.fit_core_off(closest_pairs(systems, model.cutoff), fine_tune=fine_tune)


def set_new_reference_energies(model, counts: np.ndarray, energies: np.ndarray, new_elements) -> None:
    """For fine-tuning: e0 of ``new_elements`` by least squares, keeping the others (counts over model.elements)."""
    if not new_elements:
        return
    norm = model.normalisation()["reference_energies_eV"]
    known = np.array([0.0 if int(z) in new_elements else norm.get(int(z), 0.0) for z in model.elements])
    cols = [model.elements.index(int(z)) for z in new_elements]
    sol, *_ = np.linalg.lstsq(counts[:, cols], energies - counts @ known, rcond=None)
    ref = {int(z): float(e) for z, e in zip(model.elements, known)}
    ref.update({int(z): float(v) for z, v in zip(new_elements, sol)})
    model.set_normalisation(ref, float(model.energy_scale), float(model.energy_shift))


def fit_new_reference_energies(model, frames, new_elements) -> None:
    """For fine-tuning: e0 of newly added elements by least squares, keeping the existing ones."""
    set_new_reference_energies(model, *composition(frames, model.elements), new_elements)


class _LossModule(torch.nn.Module):
    """The training loss as a module, so torch DDP can wrap it (gradients all-reduced in backward)."""

    def __init__(self, model, cfg):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, batch, nl, energy, forces, stress):
        return _loss(self.model, batch, nl, energy, forces, stress, self.cfg)


def _all(flag: bool, op: str) -> bool:
    """The same decision on every rank: ``any`` or ``all`` of ``flag`` across data-parallel workers."""
    import torch.distributed as dist

    if rank_world()[1] == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "any" else dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


# --------------------------------------------------------------------------- training
class _EMA:
    def __init__(self, model, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.module.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - d)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "state_dict": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["state_dict"])


def _loss(model, batch, nl, energy, forces, stress, cfg: TrainConfig):
    with_stress = cfg.stress_weight > 0 and bool(torch.isfinite(stress).all(dim=(1, 2)).any())
    pred = model.predict(batch, nl, compute_stress=with_stress, create_graph=True)
    n = batch.atoms_per_system.to(energy.dtype)
    e_loss = (((pred.energy - energy) / n) ** 2).mean()
    f_loss = ((pred.forces - forces) ** 2).mean()
    loss = cfg.energy_weight * e_loss + cfg.force_weight * f_loss
    if with_stress:
        has = torch.isfinite(stress).all(dim=(1, 2))
        loss = loss + cfg.stress_weight * ((pred.stress[has] - stress[has]) ** 2).mean()
    return loss, pred.energy.detach()


class _ReferenceRefit:
    """Accumulates (composition, E_true - E_pred) over an epoch; re-solves e0 by least squares.

    The per-element constants do not change forces, and with w_E:w_F = 1:1000 the network
    would otherwise learn them slowly; solving them in closed form each epoch keeps energies right.
    """

    def __init__(self, n_elements: int):
        self.n = n_elements
        self.rows, self.resid = [], []

    def add(self, species, system_index, n_systems, residual) -> None:
        counts = torch.zeros(n_systems, self.n, dtype=torch.float64)
        counts.index_put_((system_index.cpu(), species.cpu()), torch.ones(len(species), dtype=torch.float64),
                          accumulate=True)
        self.rows.append(counts)
        self.resid.append(residual.cpu().double())

    def gather(self) -> None:
        """Every data-parallel rank's accumulated rows (torch.distributed), in rank order."""
        import torch.distributed as dist

        mine = (self.rows, self.resid)
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, mine)
        self.rows = [r for rows, _ in everyone for r in rows]
        self.resid = [r for _, resid in everyone for r in resid]

    def apply(self, *models) -> None:
        if not self.rows:
            return
        a, b = torch.cat(self.rows).numpy(), torch.cat(self.resid).numpy()
        delta, *_ = np.linalg.lstsq(a, b, rcond=None)
        for m in models:
            m.reference_energies += torch.as_tensor(delta, dtype=m.reference_energies.dtype,
                                                    device=m.reference_energies.device)
        self.rows, self.resid = [], []


@torch.no_grad()
def _refit_reference_energies(model, data: GraphData, batch_size: int) -> None:
    """Shift ``model``'s per-element e0 by least squares on its own training-set energy residuals.

    Forward passes only (no forces): cheap, and it removes the per-element energy offsets that
    force-dominated training leaves undetermined.
    """
    refit = _ReferenceRefit(len(model.elements))
    for batch, nl, energy, _, _ in data.batches(batch_size, shard=False):
        batch = batch.to(dtype=model.param_dtype)
        pred = model.energy(batch, nl)
        refit.add(model.species(batch.numbers), batch.system_index, batch.n_systems, energy - pred)
    refit.apply(model)


def _val_loss(metrics: dict, cfg: TrainConfig) -> float:
    """The training loss evaluated on validation metrics (RMSEs are the square roots of the MSEs)."""
    return (cfg.energy_weight * (metrics["energy_rmse_meV_atom"] / 1000) ** 2
            + cfg.force_weight * (metrics["force_rmse_meV_A"] / 1000) ** 2)


def fit(model=None, train_frames=None, val_frames=None, config: TrainConfig | None = None,
        out=None, resume=None, progress: Callable[[str], None] | None = None,
        fine_tune: bool | None = None, metadata: dict | None = None) -> TrainResult:
    """Train ``model`` on labelled frames; returns the best-by-validation EMA model and history.

    ``train_frames``: list of labelled ase.Atoms, a path (read with :func:`models.data.read_frames`), or a
    :class:`models.streaming.FrameCache` (streamed: frames stay on disk, graphs are built per batch in
    ``config.loader_workers`` processes; its validation frames are its own stratified split).
    ``val_frames``: None -> a stratified split of ``train_frames`` (``config.val_fraction``, ``seed``).
    ``out``: checkpoint path, rewritten atomically after each epoch (and every ``checkpoint_every_batches``
    batches) with the best weights and the state ``resume`` needs to continue where it stopped (pass the
    same data).  ``fine_tune`` (default: True when the model already has fitted reference energies) keeps
    the normalisation and fits e0 only for elements new to the model, whose embeddings are grown.
    Data-parallel: when ``torch.distributed`` is initialised (e.g. by Ray Train), every rank takes its share
    of each global batch and DDP averages the gradients; rank 0 writes the checkpoint.
    """
    from contextlib import nullcontext

    from models.checkpoint import model_from_dict, model_to_dict, read_checkpoint, save_checkpoint
    from models.data import read_frames, split_indices

    cfg = config or TrainConfig()
    say = progress or (lambda line: None)
    state = None
    if resume is not None:
        ckpt = read_checkpoint(resume)
        state = ckpt.get("training_state")
        if state is None:
            raise InputError(f"{resume} holds no training state (it was written by a finished run or an "
                             "ensemble); use it with --init to fine-tune instead")
        if config is None:
            cfg = TrainConfig(**state["config"])
        model = model_from_dict(ckpt, cfg.device)
        model.load_state_dict(model.upgrade_state_dict(state["model"]))
    if model is None:
        raise InputError("fit needs a model (or resume=CHECKPOINT); build one with models.build_model")
    if train_frames is None:
        raise InputError("fit needs training frames; pass labelled ase.Atoms or a data file")
    if cfg.mixed_precision and not str(cfg.device).startswith("cuda"):
        raise InputError("mixed precision needs a CUDA device; drop it or train with device=cuda")
    rank, world = rank_world()
    streamed = isinstance(train_frames, FrameCache)
    if streamed:
        cache = train_frames
        if val_frames is not None:
            raise InputError("a frame cache brings its own validation split; drop the separate validation frames")
        if len(cache.oracles) > 1:
            raise InputError(f"the dataset mixes labels from oracles {cache.oracles}; "
                             "train on one oracle's labels (filter the data store by oracle)")
        oracle = cache.oracles[0] if cache.oracles else None
        tr_idx, va_idx = (np.asarray(x, dtype=np.int64) for x in split_indices(
            cache.groups, cfg.val_fraction, cfg.seed, cfg.val_per_group))
        data_elements, n_train, n_val = cache.elements(), len(tr_idx), len(va_idx)
    else:
        frames = read_frames(train_frames) if not isinstance(train_frames, list) else check_frames(train_frames, "the training set")
        if val_frames is None:
            train, val = split_frames(frames, cfg.val_fraction, cfg.seed, val_per_group=cfg.val_per_group)
        else:
            train = frames
            val = read_frames(val_frames) if not isinstance(val_frames, list) else check_frames(val_frames, "the validation set")
        oracle = check_single_oracle(train + val)
        data_elements, n_train, n_val = sorted({int(z) for a in train + val for z in a.numbers}), len(train), len(val)
    model = model.to(cfg.device)
    added = []
    if state is None:
        if fine_tune is None:
            fine_tune = bool(model.reference_energies.abs().sum() > 0)
        added = model.grow_elements(data_elements, seed=cfg.seed)
        if streamed:
            counts, energies = cache.element_counts(model.elements)[tr_idx], cache.energy[tr_idx]
            if fine_tune:
                set_new_reference_energies(model, counts, energies, added)
            else:
                set_fitted_normalisation(model, counts, energies, cache.force_rms(tr_idx))
        elif fine_tune:
            fit_new_reference_energies(model, train, added)
        else:
            fit_normalisation(model, train)
        if getattr(model, "core_repulsion", False):
            fit_core_off(model, cache if streamed else train + val, fine_tune)
    dtype, device = model.param_dtype, cfg.device
    if streamed:
        va_idx = va_idx if len(va_idx) else tr_idx
        train_data = StreamedGraphs(cache, tr_idx, model.cutoff, dtype, device, cfg.loader_workers, cfg.max_atoms_per_batch)
        val_data = StreamedGraphs(cache, va_idx, model.cutoff, dtype, device, cfg.loader_workers, cfg.max_atoms_per_batch)
    else:
        val = val or train
        train_data = GraphData(train, model.cutoff, dtype, device, cfg.max_atoms_per_batch)
        val_data = GraphData(val, model.cutoff, dtype, device, cfg.max_atoms_per_batch)

    step = _LossModule(model, cfg)
    if world > 1:
        step = torch.nn.parallel.DistributedDataParallel(step)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cfg.mixed_precision else nullcontext
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.lr_factor, patience=cfg.lr_patience,
                                                       min_lr=cfg.min_lr)
    ema = _EMA(model, cfg.ema_decay)
    history, best_val, best_state, bad_epochs, start_epoch, elapsed0 = [], math.inf, None, 0, 0, 0.0
    start_batch, losses, refit = 0, [], _ReferenceRefit(len(model.elements))
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        ema.load_state_dict(state["ema"])
        history, best_val = list(state["history"]), float(state["best_val"])
        best_state, bad_epochs = state["best_state"], int(state["bad_epochs"])
        start_epoch, elapsed0 = int(state["epoch"]), float(state["elapsed_s"])
        start_batch, losses = int(state.get("batch", 0)), list(state.get("epoch_losses", []))
        refit.rows, refit.resid = list(state.get("refit_rows", [])), list(state.get("refit_resid", []))
        where = f"batch {start_batch + 1} of epoch {start_epoch + 1}" if start_batch else f"epoch {start_epoch + 1}"
        say(f"resuming at {where} (best val loss {best_val:.4g})")

    train_meta = {"oracle": oracle, "n_train": n_train, "n_val": n_val, "config": asdict(cfg),
                  "data_parallel_workers": world, **(metadata or {})}
    t0 = time.monotonic() - elapsed0
    nan_run, stop_reason, epoch = 0, "max epochs", start_epoch

    def time_left() -> float:
        return math.inf if cfg.max_time_s is None else cfg.max_time_s - (time.monotonic() - t0)

    def write(epoch_done: int, batch_done: int = 0) -> None:
        if out is None or rank != 0:
            return
        payload = model_to_dict(ema.module, {**train_meta, "epochs": epoch_done, "best_val_loss": best_val,
                                             "history": history}, state_dict=best_state)
        payload["training_state"] = {
            "epoch": epoch_done, "batch": batch_done, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "ema": ema.state_dict(), "history": history,
            "best_val": best_val, "best_state": best_state, "bad_epochs": bad_epochs,
            "elapsed_s": time.monotonic() - t0, "config": asdict(cfg),
            "epoch_losses": list(losses) if batch_done else [],
            "refit_rows": list(refit.rows) if batch_done else [], "refit_resid": list(refit.resid) if batch_done else [],
        }
        save_checkpoint(out, payload)

    out_of_time = False
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        first = start_batch if epoch == start_epoch else 0
        if first == 0:
            losses = []
        batches = train_data.batches(cfg.batch_size, shuffle=True, seed=cfg.seed * 100003 + epoch, start=first)
        for b, (batch, nl, energy, forces, stress) in enumerate(batches, start=first):
            if _all(time_left() <= 0, "any"):
                out_of_time = True
                break
            with autocast():
                loss, e_pred = step(batch, nl, energy, forces, stress)
            if not _all(bool(torch.isfinite(loss)), "all"):
                nan_run += 1
                for g in opt.param_groups:
                    g["lr"] *= 0.5
                say(f"epoch {epoch + 1}: non-finite loss, batch skipped, lr -> {opt.param_groups[0]['lr']:.2e}")
                if nan_run >= cfg.max_nan:
                    raise TrainingDiverged(f"training diverged: {nan_run} non-finite losses in a row at epoch "
                                           f"{epoch + 1}; lower --lr or check the labels for outliers")
                continue
            nan_run = 0
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            ema.update(model)
            losses.append(float(loss.detach()))
            if rank == 0:
                report_progress("training", epoch, cfg.epochs, "epoch", batch=b + 1, loss=float(np.mean(losses)))
            refit.add(model.species(batch.numbers), batch.system_index, batch.n_systems, energy - e_pred)
            if cfg.checkpoint_every_batches and (b + 1) % cfg.checkpoint_every_batches == 0:
                write(epoch, b + 1)
        if not losses and out_of_time and best_state is not None:
            stop_reason = "time budget"
            break
        if world > 1:
            refit.gather()
        refit.apply(model)
        _refit_reference_energies(ema.module, train_data, cfg.batch_size)
        metrics = evaluate(ema.module, None, cfg.batch_size, data=val_data)
        val_loss = _val_loss(metrics, cfg)
        sched.step(val_loss)
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "val_loss": val_loss, "energy_mae_meV_atom": metrics["energy_mae_meV_atom"],
               "force_mae_meV_A": metrics["force_mae_meV_A"], "lr": opt.param_groups[0]["lr"],
               "time_s": time.monotonic() - t0}
        history.append(row)
        if val_loss < best_val:
            best_val, bad_epochs = val_loss, 0
            best_state = {k: v.detach().cpu().clone() for k, v in ema.module.state_dict().items()}
        else:
            bad_epochs += 1
        left = time_left()
        say(f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4g}  val {val_loss:.4g}  "
            f"E MAE {row['energy_mae_meV_atom']:.2f} meV/atom  F MAE {row['force_mae_meV_A']:.1f} meV/Å  "
            f"lr {row['lr']:.1e}  {row['time_s']:.0f} s" + ("" if math.isinf(left) else f"  left {max(left, 0):.0f} s"))
        losses = []
        if rank == 0:
            report_progress("training", epoch + 1, cfg.epochs, "epoch", final=True, loss=row["train_loss"])
        write(epoch + 1)
        if out_of_time or _all(left <= 0, "any"):
            stop_reason = "time budget"
            break
        if bad_epochs >= cfg.early_stopping_patience:
            stop_reason = "early stopping"
            break
    if best_state is not None:
        ema.module.load_state_dict(best_state)
    best = ema.module.eval()
    best.training_info = {**train_meta, "epochs": len(history), "best_val_loss": best_val, "history": history,
                          "stop_reason": stop_reason}
    final = evaluate(best, None, cfg.batch_size, data=val_data)
    best.training_info["val_metrics"] = final
    if out is not None:
        write(len(history))
    return TrainResult(model=best, history=history, best_val_loss=best_val, epochs_run=len(history),
                       stop_reason=stop_reason, val_metrics=final, added_elements=[int(z) for z in added])
