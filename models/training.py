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

from common.errors import InputError
from models.batch import AtomsBatch
from models.graph import NeighborList, neighbor_list
from models.base import fit_reference_energies, symbol
from models.data import check_frames, check_single_oracle, frame_labels, split_frames


class TrainingDiverged(RuntimeError):
    """The loss stayed non-finite for ``max_nan`` consecutive batches."""


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-6
    energy_weight: float = 1.0
    force_weight: float = 1000.0
    stress_weight: float = 0.0         # on MSE(stress) in (eV/Å³)²; frames without stress labels are skipped
    ema_decay: float = 0.99
    grad_clip: float = 10.0
    lr_factor: float = 0.5
    lr_patience: int = 10
    min_lr: float = 1e-6
    early_stopping_patience: int = 40
    max_time_s: float | None = None
    val_fraction: float = 0.1
    val_per_group: int | None = None   # validation frames per (temperature, run) group, overrides val_fraction
    seed: int = 0
    max_nan: int = 5
    device: str = "cpu"


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
    """Frames with their labels and neighbour lists (built once at the model cutoff)."""

    def __init__(self, frames, cutoff: float, dtype=torch.float32, device="cpu"):
        self.dtype, self.device = dtype, device
        self.items = []
        for atoms in frames:
            lab = frame_labels(atoms)
            b = AtomsBatch.from_atoms(atoms, dtype=torch.float64)
            nl = neighbor_list(b, cutoff)
            self.items.append({
                "positions": b.positions, "numbers": b.numbers, "cell": b.cell, "pbc": b.pbc,
                "edge_index": nl.edge_index, "shifts": nl.shifts,
                "energy": lab["energy"], "forces": torch.as_tensor(lab["forces"]),
                "stress": (torch.full((3, 3), float("nan"), dtype=torch.float64) if lab["stress"] is None
                           else torch.as_tensor(lab["stress"])),
            })
        self.cutoff = cutoff

    def __len__(self) -> int:
        return len(self.items)

    def collate(self, idx) -> tuple[AtomsBatch, NeighborList, torch.Tensor, torch.Tensor, torch.Tensor]:
        """AtomsBatch, NeighborList, energies [S] eV, forces [N,3] eV/Å, stress [S,3,3] eV/Å³ (NaN: none)."""
        items = [self.items[k] for k in idx]
        counts = [len(it["numbers"]) for it in items]
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        dt, dev = self.dtype, self.device
        batch = AtomsBatch(
            positions=torch.cat([it["positions"] for it in items]).to(dev, dt),
            numbers=torch.cat([it["numbers"] for it in items]).to(dev),
            cell=torch.cat([it["cell"] for it in items]).to(dev, dt),
            system_index=torch.repeat_interleave(torch.arange(len(items)), torch.as_tensor(counts)).to(dev),
            pbc=torch.cat([it["pbc"] for it in items]).to(dev),
        )
        nl = NeighborList(
            edge_index=torch.cat([it["edge_index"] + int(o) for it, o in zip(items, offsets)], dim=1).to(dev),
            shifts=torch.cat([it["shifts"] for it in items]).to(dev, dt),
            cutoff=self.cutoff,
        )
        energy = torch.tensor([it["energy"] for it in items], dtype=dt, device=dev)
        forces = torch.cat([it["forces"] for it in items]).to(dev, dt)
        stress = torch.stack([it["stress"] for it in items]).to(dev, dt)
        return batch, nl, energy, forces, stress

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0):
        order = np.arange(len(self))
        if shuffle:
            np.random.default_rng(seed).shuffle(order)
        for start in range(0, len(order), batch_size):
            yield self.collate(order[start:start + batch_size])


# --------------------------------------------------------------------------- metrics
def evaluate(model, frames, batch_size: int = 16, data: GraphData | None = None) -> dict:
    """Energy MAE (meV/atom), force MAE (meV/Å), force R², also per element, on labelled frames."""
    if data is None:
        frames = check_frames(frames, "the evaluation set")
        first = model.models[0] if hasattr(model, "models") else model      # an analytic member: float64, cpu
        device = first.reference_energies.device if hasattr(first, "reference_energies") else "cpu"
        data = GraphData(frames, float(model.cutoff), getattr(first, "param_dtype", torch.float64), device)
    e_err, n_per, f_pred, f_true, zs = [], [], [], [], []
    for batch, nl, energy, forces, _ in data.batches(batch_size):
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
def fit_normalisation(model, frames) -> None:
    """Reference energies by least squares; network scale = RMS force (eV/Å·Å = eV)."""
    ref = fit_reference_energies(frames, model.elements)
    forces = np.concatenate([frame_labels(a)["forces"].ravel() for a in frames])
    scale = float(np.sqrt(np.mean(forces ** 2))) if forces.size else 0.0
    if not scale > 1e-8:
        resid = [(frame_labels(a)["energy"] - sum(ref[int(z)] for z in a.numbers)) / len(a) for a in frames]
        scale = float(np.std(resid)) or 1.0
    model.set_normalisation(ref, scale)


def fit_new_reference_energies(model, frames, new_elements) -> None:
    """For fine-tuning: e0 of newly added elements by least squares, keeping the existing ones."""
    if not new_elements:
        return
    norm = model.normalisation()["reference_energies_eV"]
    known = {z: e for z, e in norm.items() if z not in new_elements}
    counts = np.zeros((len(frames), len(new_elements)))
    resid = np.zeros(len(frames))
    for f, atoms in enumerate(frames):
        resid[f] = frame_labels(atoms)["energy"] - sum(known.get(int(z), 0.0) for z in atoms.numbers)
        for k, z in enumerate(new_elements):
            counts[f, k] = int((atoms.numbers == z).sum())
    sol, *_ = np.linalg.lstsq(counts, resid, rcond=None)
    ref = dict(known)
    ref.update({int(z): float(s) for z, s in zip(new_elements, sol)})
    model.set_normalisation(ref, float(model.energy_scale), float(model.energy_shift))


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
    for batch, nl, energy, _, _ in data.batches(batch_size):
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

    ``train_frames``: list of labelled ase.Atoms or a path (read with :func:`models.data.read_frames`).
    ``val_frames``: None -> a stratified split of ``train_frames`` (``config.val_fraction``, ``seed``).
    ``out``: checkpoint path, rewritten atomically after each epoch (best weights + resume state).
    ``resume``: a checkpoint written by an interrupted ``fit``; continues where it stopped
    (pass the same data).  ``fine_tune`` (default: True when the model already has fitted
    reference energies) keeps the normalisation and fits e0 only for elements new to the model,
    whose embeddings are grown.
    """
    from models.checkpoint import model_from_dict, model_to_dict, read_checkpoint, save_checkpoint
    from models.data import read_frames

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
        model.load_state_dict(state["model"])
    if model is None:
        raise InputError("fit needs a model (or resume=CHECKPOINT); build one with models.build_model")
    if train_frames is None:
        raise InputError("fit needs training frames; pass labelled ase.Atoms or a data file")
    frames = read_frames(train_frames) if not isinstance(train_frames, list) else check_frames(train_frames, "the training set")
    if val_frames is None:
        train, val = split_frames(frames, cfg.val_fraction, cfg.seed, val_per_group=cfg.val_per_group)
    else:
        train = frames
        val = read_frames(val_frames) if not isinstance(val_frames, list) else check_frames(val_frames, "the validation set")
    oracle = check_single_oracle(train + val)
    model = model.to(cfg.device)
    added = []
    if state is None:
        data_elements = sorted({int(z) for a in train + val for z in a.numbers})
        if fine_tune is None:
            fine_tune = bool(model.reference_energies.abs().sum() > 0)
        added = model.grow_elements(data_elements, seed=cfg.seed)
        if fine_tune:
            fit_new_reference_energies(model, train, added)
        else:
            fit_normalisation(model, train)
    if not val:
        val = train
    dtype, device = model.param_dtype, cfg.device
    train_data = GraphData(train, model.cutoff, dtype, device)
    val_data = GraphData(val, model.cutoff, dtype, device)

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.lr_factor, patience=cfg.lr_patience,
                                                       min_lr=cfg.min_lr)
    ema = _EMA(model, cfg.ema_decay)
    history, best_val, best_state, bad_epochs, start_epoch, elapsed0 = [], math.inf, None, 0, 0, 0.0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        ema.load_state_dict(state["ema"])
        history, best_val = list(state["history"]), float(state["best_val"])
        best_state, bad_epochs = state["best_state"], int(state["bad_epochs"])
        start_epoch, elapsed0 = int(state["epoch"]), float(state["elapsed_s"])
        say(f"resuming at epoch {start_epoch + 1} (best val loss {best_val:.4g})")

    train_meta = {"oracle": oracle, "n_train": len(train), "n_val": len(val),
                  "config": asdict(cfg), **(metadata or {})}
    t0 = time.monotonic() - elapsed0
    nan_run, stop_reason, epoch = 0, "max epochs", start_epoch

    def time_left() -> float:
        return math.inf if cfg.max_time_s is None else cfg.max_time_s - (time.monotonic() - t0)

    def write(epoch_done: int) -> None:
        if out is None:
            return
        payload = model_to_dict(ema.module, {**train_meta, "epochs": epoch_done, "best_val_loss": best_val,
                                             "history": history}, state_dict=best_state)
        payload["training_state"] = {
            "epoch": epoch_done, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "ema": ema.state_dict(), "history": history,
            "best_val": best_val, "best_state": best_state, "bad_epochs": bad_epochs,
            "elapsed_s": time.monotonic() - t0, "config": asdict(cfg),
        }
        save_checkpoint(out, payload)

    out_of_time = False
    refit = _ReferenceRefit(len(model.elements))
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        losses = []
        for batch, nl, energy, forces, stress in train_data.batches(cfg.batch_size, shuffle=True, seed=cfg.seed * 100003 + epoch):
            if time_left() <= 0:
                out_of_time = True
                break
            loss, e_pred = _loss(model, batch, nl, energy, forces, stress, cfg)
            if not torch.isfinite(loss):
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
            refit.add(model.species(batch.numbers), batch.system_index, batch.n_systems, energy - e_pred)
        if not losses and out_of_time and best_state is not None:
            break
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
        write(epoch + 1)
        if out_of_time or left <= 0:
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
