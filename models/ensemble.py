"""Ensembles of force fields: mean prediction and per-atom force deviation (DP-GEN's model deviation).

    force_std[a] = sqrt( mean_k || F_k[a] - <F>[a] ||^2 )        (eV/Å)

The active-learning criterion of DP-GEN is ``max_a force_std[a]`` per structure
(:func:`max_force_deviation`).

On a CPU the members can run at once, one per thread (:func:`concurrent_members`); results are
bit-identical to one member after another on one thread.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from models.batch import AtomsBatch
from models.graph import NeighborList, neighbor_list
from models.interface import Prediction


class Ensemble:
    """K force fields (same elements, different seeds) behind the ForceField protocol."""

    def __init__(self, models):
        models = list(models)
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = models
        self.cutoff = max(float(m.cutoff) for m in models)
        self._pool = None           # a thread pool while inside concurrent_members (never pickled)

    def __len__(self) -> int:
        return len(self.models)

    @property
    def elements(self) -> list[int] | None:
        """Elements every member knows (None when a member, e.g. an analytic potential, takes any)."""
        sets = [set(m.elements) for m in self.models if getattr(m, "elements", None) is not None]
        return sorted(set.intersection(*sets)) if sets else None

    @property
    def param_dtype(self) -> torch.dtype:
        """The float dtype the members compute in (float64 for analytic potentials)."""
        return getattr(self.models[0], "param_dtype", torch.float64)

    @property
    def arch(self) -> str:
        return "ensemble"

    def to(self, *args, **kwargs) -> "Ensemble":
        self.models = [m.to(*args, **kwargs) for m in self.models]
        return self

    def eval(self) -> "Ensemble":
        for m in self.models:
            m.eval()
        return self

    def predict(self, batch: AtomsBatch, neighbors: NeighborList | None = None,
                compute_stress: bool = False) -> Prediction:
        """Mean energy/forces/stress over members; ``force_std`` per atom (eV/Å; None for one member)."""
        if neighbors is None:
            neighbors = neighbor_list(batch, self.cutoff)
        if self._pool is not None:      # one member per thread; each member's arithmetic is unchanged
            preds = list(self._pool.map(lambda m: m.predict(batch, neighbors, compute_stress), self.models))
        else:
            preds = [m.predict(batch, neighbors, compute_stress) for m in self.models]
        forces = torch.stack([p.forces for p in preds])            # [K, n_atoms, 3]
        mean_f = forces.mean(0)
        # one member has no deviation (None, not a misleading zero)
        std = ((forces - mean_f) ** 2).sum(-1).mean(0).sqrt() if len(preds) > 1 else None   # [n_atoms]
        stress = torch.stack([p.stress for p in preds]).mean(0) if compute_stress else None
        return Prediction(energy=torch.stack([p.energy for p in preds]).mean(0), forces=mean_f,
                          stress=stress, force_std=std)

    def predict_atoms(self, atoms_list, compute_stress: bool = False) -> Prediction:
        m = self.models[0]
        device = m.reference_energies.device if hasattr(m, "reference_energies") else "cpu"
        batch = AtomsBatch.from_atoms(atoms_list, dtype=self.param_dtype, device=device)
        return self.predict(batch, compute_stress=compute_stress)


def _on_cpu(ensemble: Ensemble) -> bool:
    for m in ensemble.models:
        buffer = getattr(m, "reference_energies", None)
        if buffer is not None and buffer.device.type != "cpu":
            return False
    return True


@contextmanager
def concurrent_members(force_field, threads: int | None = None):
    """For the duration: an :class:`Ensemble` on the CPU evaluates its members at once, one per thread, each
    with ``threads // n`` torch threads (``threads``: default torch's current count; n = min(members,
    threads)).  Each member computes exactly what it computes alone (the same kernels, single-threaded
    when n = threads), so results are bit-identical to one member after another; only the wall time
    changes.  Anything else (one member, a GPU, one thread) is left as it is.  torch's thread count is
    restored on exit.
    """
    threads = torch.get_num_threads() if threads is None else int(threads)
    n = min(len(force_field), threads) if isinstance(force_field, Ensemble) else 1
    if n < 2 or force_field._pool is not None or not _on_cpu(force_field):
        yield force_field
        return
    from concurrent.futures import ThreadPoolExecutor

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // n))
    force_field._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="member")
    try:
        yield force_field
    finally:
        force_field._pool.shutdown(wait=True)
        force_field._pool = None
        torch.set_num_threads(before)


def max_force_deviation(pred: Prediction, system_index: torch.Tensor, n_systems: int | None = None) -> torch.Tensor:
    """DP-GEN model deviation per system: max over its atoms of ``force_std`` (eV/Å)."""
    if pred.force_std is None:
        raise ValueError("this prediction has no force_std; predict with an Ensemble")
    n = int(system_index.max()) + 1 if n_systems is None else n_systems
    out = torch.zeros(n, dtype=pred.force_std.dtype, device=pred.force_std.device)
    return out.scatter_reduce(0, system_index, pred.force_std, reduce="amax", include_self=True)


def unknown_elements(ensemble: Ensemble, frames) -> list[str]:
    """Chemical symbols in ``frames`` that some member has no embedding for (a species-blind model: none)."""
    from ase.data import chemical_symbols

    present = {int(z) for a in frames for z in a.numbers}
    missing = set()
    for m in ensemble.models:
        known = getattr(m, "elements", None)
        if known is not None:
            missing |= present - {int(z) for z in known}
    return sorted(chemical_symbols[z] for z in missing)


def ensemble_errors(ensemble: Ensemble, frames, batch_size: int = 16) -> dict:
    """Per frame: the ensemble's max atomic force deviation and, where the frame carries reference forces,
    its max and mean atomic force error (norm of the error vector; all eV/Å), for calibrating the deviation
    against the truth and comparing the accuracy on two sets of frames (the deviation is NaN for a single
    member).  ``transit_error_eV_A``: the mean error on the atoms a frame's ``in_transit`` array marks
    (``analysis.transit``; NaN where it marks none), None when no frame carries the array.

    ``frames``: ``ase.Atoms`` (with a calculator holding forces for the error; NaN otherwise).
    """
    import numpy as np

    dev, err, mean_err, transit = [], [], [], []
    marked = any("in_transit" in a.arrays for a in frames)
    for start in range(0, len(frames), batch_size):
        chunk = frames[start:start + batch_size]
        pred = ensemble.predict_atoms(chunk)
        sizes = [len(a) for a in chunk]
        index = torch.repeat_interleave(torch.arange(len(chunk)), torch.as_tensor(sizes)).to(pred.forces.device)
        dev.extend(max_force_deviation(pred, index, len(chunk)).detach().cpu().double().tolist()
                   if pred.force_std is not None else [float("nan")] * len(chunk))   # one member: no deviation
        forces = pred.forces.detach().cpu().double().numpy()
        offset = 0
        for atoms, n in zip(chunk, sizes):
            truth = None
            if atoms.calc is not None and "forces" in (atoms.calc.results or {}):
                truth = np.asarray(atoms.calc.results["forces"], float)
            atom_err = (np.linalg.norm(forces[offset:offset + n] - truth, axis=1) if truth is not None
                        else np.full(n, np.nan))
            err.append(float(atom_err.max()))
            mean_err.append(float(atom_err.mean()))
            moving = np.asarray(atoms.arrays.get("in_transit", np.zeros(n)), bool)
            transit.append(float(atom_err[moving].mean()) if moving.any() else float("nan"))
            offset += n
    return {"deviation_eV_A": dev, "max_error_eV_A": err, "mean_error_eV_A": mean_err,
            "transit_error_eV_A": transit if marked else None}
