"""Self-describing checkpoints: one ``torch.save`` file that rebuilds the model without any config.

Layout (a dict of plain types and tensors, loadable with ``torch.load(weights_only=True)``):

    format: "matscreen-mlff", format_version: 1,
    arch: "schnet" | "painn" | "dimenetpp" | "cgcnn",  hparams: {...},  dtype: "float32"|"float64",
    elements: [Z, ...],  normalisation: {reference_energies_eV: {Z: e0}, energy_scale_eV, energy_shift_eV_atom},
    state_dict: {...} (best-by-validation EMA weights),  training: {...} (metadata, metrics, history),
    training_state: {...} or absent (latest weights, optimiser, scheduler, EMA: for resuming)
An ensemble file has ``arch: "ensemble"`` and ``members: [member dicts as above]``.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch

from common.atomic import atomic_write_bytes
from common.errors import InputError
from models.ensemble import Ensemble

FORMAT = "matscreen-mlff"
FORMAT_VERSION = 1


def model_to_dict(model, training: dict | None = None, state_dict: dict | None = None) -> dict:
    """The checkpoint dict of one model (``state_dict`` overrides the model's own weights).

    The analytic ``lj`` potential is stored by its parameters alone (arch ``lj``, hparams).
    """
    if model.arch == "lj":
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": "lj", "hparams": model.hparams(),
                "training": dict(training or {})}
    dtype = "float64" if model.param_dtype == torch.float64 else "float32"
    sd = state_dict if state_dict is not None else model.state_dict()
    norm = model.normalisation()
    if state_dict is not None:   # describe the weights actually stored
        norm = {"reference_energies_eV": {int(z): float(e) for z, e in zip(model.elements, sd["reference_energies"].tolist())},
                "energy_scale_eV": float(sd["energy_scale"]), "energy_shift_eV_atom": float(sd["energy_shift"])}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": model.arch,
        "hparams": model.hparams(),
        "dtype": dtype,
        "elements": [int(z) for z in model.elements],
        "normalisation": norm,
        "state_dict": {k: v.detach().cpu().clone() for k, v in sd.items()},
        "training": dict(training or {}),
    }


def model_from_dict(ckpt: dict, device="cpu", dtype=None):
    from models.registry import build_model, resolve_dtype

    if ckpt["arch"] == "lj":
        from models.lennard_jones import LennardJones

        model = LennardJones(**ckpt["hparams"])
        model.training_info = ckpt.get("training", {})
        return model

    model = build_model(ckpt["arch"], ckpt["elements"], dtype=ckpt.get("dtype", "float32"), **ckpt["hparams"])
    model.load_state_dict(model.upgrade_state_dict(ckpt["state_dict"]))
    if dtype is not None:
        model = model.to(resolve_dtype(dtype))
    model.training_info = ckpt.get("training", {})
    return model.to(device).eval()


def save_checkpoint(path, payload: dict) -> Path:
    """Write a checkpoint dict atomically (temporary file, then rename)."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write_bytes(path, buf.getvalue())


def save_model(model, path, training: dict | None = None) -> Path:
    """Save one model (or an :class:`models.ensemble.Ensemble`) as a self-describing checkpoint."""
    if isinstance(model, Ensemble):
        payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": "ensemble",
                   "members": [model_to_dict(m, getattr(m, "training_info", None)) for m in model.models],
                   "training": dict(training or {})}
    else:
        payload = model_to_dict(model, training if training is not None else getattr(model, "training_info", None))
    return save_checkpoint(path, payload)


def read_checkpoint(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise InputError(f"checkpoint {path} not found; train one with `matscreen train --out {path.name}`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path} is not a readable matscreen checkpoint ({type(exc).__name__}); "
                         "give a file written by `matscreen train`") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError(f"{path} is not a matscreen checkpoint; give a file written by `matscreen train`")
    if int(ckpt.get("format_version", 0)) > FORMAT_VERSION:
        raise InputError(f"{path} has checkpoint format {ckpt['format_version']} (this code reads <= "
                         f"{FORMAT_VERSION}); upgrade matscreen")
    return ckpt


def load_model(path, device="cpu", dtype=None):
    """Rebuild a model (or an Ensemble) from a checkpoint file; ready for ``predict`` (eval mode)."""
    ckpt = read_checkpoint(path)
    if ckpt["arch"] == "ensemble":
        return Ensemble([model_from_dict(m, device, dtype) for m in ckpt["members"]])
    return model_from_dict(ckpt, device, dtype)


def load_ensemble(paths, device: str = "cpu") -> Ensemble:
    """An Ensemble of the member checkpoints ``paths`` (any architecture, the analytic ``lj`` too), eval mode."""
    return Ensemble([load_model(p, device=device) for p in paths]).eval()
