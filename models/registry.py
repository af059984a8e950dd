"""Architecture names -> classes (``schnet``, ``painn``, ``dimenetpp``, ``cgcnn``)."""
from __future__ import annotations

import importlib

import torch

from common.errors import InputError

ARCHITECTURES = {
    "schnet": ("models.schnet", "SchNet"),
    "painn": ("models.painn", "PaiNN"),
    "dimenetpp": ("models.dimenetpp", "DimeNetPP"),
    "cgcnn": ("models.cgcnn", "CGCNN"),
}

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def model_class(arch: str):
    if arch not in ARCHITECTURES:
        raise InputError(f"unknown model architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    module, name = ARCHITECTURES[arch]
    return getattr(importlib.import_module(module), name)


def resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; use float32 or float64")
    return DTYPES[dtype]


# the campaign's generic sizes (models.hidden, models.layers) -> each architecture's own keywords
SIZE_KEYWORDS = {
    "schnet": lambda hidden, layers: dict(hidden_channels=hidden, num_filters=hidden, num_interactions=layers),
    "painn": lambda hidden, layers: dict(hidden_channels=hidden, num_layers=layers),
    "dimenetpp": lambda hidden, layers: dict(hidden_channels=hidden, num_blocks=layers),
    "cgcnn": lambda hidden, layers: dict(hidden_channels=hidden, num_layers=layers),
}


def size_hparams(arch: str, hidden: int, layers: int) -> dict:
    """Constructor keywords of ``arch`` for a hidden width and a number of interaction blocks."""
    model_class(arch)
    if hidden < 1 or layers < 1:
        raise InputError(f"hidden width and layers must be >= 1 (got {hidden}, {layers})")
    return SIZE_KEYWORDS[arch](int(hidden), int(layers))


def build_model(arch: str, elements, dtype="float32", seed: int | None = None, **hparams):
    """A freshly initialised model of ``arch`` for ``elements`` (atomic numbers).

    ``seed`` makes the initial weights reproducible without touching the caller's global torch RNG.
    """
    cls = model_class(arch)
    try:
        if seed is None:
            model = cls(elements, **hparams)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                model = cls(elements, **hparams)
    except TypeError as exc:
        raise InputError(f"bad hyper-parameters for {arch}: {exc}; see the model's docstring") from None
    return model.to(resolve_dtype(dtype))
