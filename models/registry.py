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


def build_model(arch: str, elements, dtype="float32", seed: int | None = None, **hparams):
    """A freshly initialised model of ``arch`` for ``elements`` (atomic numbers)."""
    cls = model_class(arch)
    if seed is not None:
        torch.manual_seed(int(seed))
    try:
        model = cls(elements, **hparams)
    except TypeError as exc:
        raise InputError(f"bad hyper-parameters for {arch}: {exc}; see the model's docstring") from None
    return model.to(resolve_dtype(dtype))
