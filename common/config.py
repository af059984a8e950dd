"""Configuration dataclasses: each field has its name, unit, default, help and bounds once, in its package.

A package declares its settings as a dataclass whose fields are made with :func:`param`; its
``__post_init__`` calls :func:`check_fields` (bounds and choices of single fields) and adds only the
checks that tie fields together.  The campaign spec is a tree of these dataclasses
(``orchestrator.campaign.spec``): the YAML keys are the field names, and :func:`from_mapping` builds a
dataclass from parsed YAML, naming the key path of every error.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import MISSING
from typing import Any

from common.errors import InputError


def param(default: Any = MISSING, help: str = "", *, unit: str = "", choices: tuple = (), gt: float | None = None,
          ge: float | None = None, lt: float | None = None, le: float | None = None, factory=MISSING):
    """A dataclass field with its meaning: ``help`` (one line), ``unit`` (e.g. "K", "fs", "eV/Å"), allowed
    ``choices`` and bounds (``gt``/``ge``/``lt``/``le``; None values are not bounded).  For a mutable
    default give ``factory``."""
    meta = {"help": help, "unit": unit, "choices": tuple(choices), "gt": gt, "ge": ge, "lt": lt, "le": le}
    if factory is not MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _rule(meta: dict) -> str:
    """The bounds of a field in words: "> 0", ">= 0", "in (0, 0.5)", "in [0, 1)"."""
    lo, lo_open = (meta["gt"], True) if meta.get("gt") is not None else (meta.get("ge"), False)
    hi, hi_open = (meta["lt"], True) if meta.get("lt") is not None else (meta.get("le"), False)
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"{'<' if hi_open else '<='} {hi}" if hi is not None else ""


def _bound_error(name: str, value: Any, meta: dict) -> str | None:
    """``name: must be > 0, got -1`` when ``value`` (or an item of it) breaks the field's bounds."""
    if value is None or isinstance(value, (str, bool, dict)):
        return None
    many = isinstance(value, (list, tuple))
    for i, v in enumerate(value if many else [value]):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        bad = ((meta.get("gt") is not None and not v > meta["gt"]) or (meta.get("ge") is not None and not v >= meta["ge"])
               or (meta.get("lt") is not None and not v < meta["lt"]) or (meta.get("le") is not None and not v <= meta["le"]))
        if bad:
            where = f"{name}[{i}]" if many else name
            return f"{where}: must be {_rule(meta)}, got {v}"
    return None


def check_fields(obj) -> None:
    """Bounds and choices of every :func:`param` field of ``obj``; InputError naming the field."""
    for f in dataclasses.fields(obj):
        meta = f.metadata
        if not meta:
            continue
        value = getattr(obj, f.name)
        error = _bound_error(f.name, value, meta)
        if error:
            raise InputError(error)
        choices = meta.get("choices") or ()
        if choices and value is not None:
            many = isinstance(value, (list, tuple))
            for i, v in enumerate(value if many else [value]):
                if v not in choices:
                    near = difflib.get_close_matches(str(v), [str(c) for c in choices], n=1)
                    hint = f"; did you mean '{near[0]}'?" if near else ""
                    where = f"{f.name}[{i}]" if many else f.name
                    raise InputError(f"{where}: {v!r} is not one of {', '.join(map(str, choices))}{hint}")


def spec_fields(cls, exclude: tuple[str, ...] = ()) -> list[dataclasses.Field]:
    """The fields of ``cls`` a spec exposes: those made with :func:`param`, less ``exclude``."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata and f.name not in exclude]


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return MISSING


def type_word(tp: Any) -> str:
    """The YAML word of a field's type: int, float, str, bool, list[float], float?, mapping..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        return "|".join(type_word(a) for a in inner) + ("?" if type(None) in args else "")
    if origin in (list, tuple):
        return f"list[{type_word(args[0])}]"
    if origin is dict or tp is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "a boolean"}


def show(value: Any) -> str:
    """A short rendering of a bad value for an error message."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "...'"


def coerce(path: str, value: Any, tp: Any) -> Any:
    """``value`` (parsed YAML) as type ``tp`` (an annotation), or InputError naming ``path``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for a in inner[:-1]:              # the first type that takes the value (float | str: 600 or "auto")
            try:
                return coerce(path, value, a)
            except InputError:
                continue
        try:
            return coerce(path, value, inner[-1])
        except InputError:
            if len(inner) == 1:
                raise
            raise InputError(f"{path}: expected {' or '.join(_WORDS.get(a.__name__, a.__name__) for a in inner)}, "
                             f"got {show(value)}") from None
    if origin in (list, tuple):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]                       # a scalar where a list is expected: a one-element list
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{path}: expected a list of {type_word(args[0])}s, got {show(value)}")
        items = [coerce(f"{path}[{i}]", v, args[0]) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise InputError(f"{path}: expected a mapping, got {show(value)}")
        return dict(value)
    ok = {int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          str: isinstance(value, str), bool: isinstance(value, bool)}.get(tp)
    if ok is None:
        return value
    if not ok:
        raise InputError(f"{path}: expected {_WORDS[tp.__name__]}, got {show(value)}")
    return float(value) if tp is float else value


def hints(cls) -> dict:
    return typing.get_type_hints(cls)


def suggest(key: str, names: list[str], prefix: str) -> str:
    near = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    return f"; did you mean '{prefix}{near[0]}'?" if near else f"; valid keys here: {', '.join(names)}"


def construct(cls, values: dict, path: str, base=None):
    """``cls(**values)`` (or ``base`` with ``values`` replaced) from checked values; the dataclass's own
    errors name ``path`` (empty: the top level)."""
    prefix = f"{path}." if path else ""
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)
    except InputError as exc:
        text = str(exc)
        raise InputError(text if text.startswith(prefix) else f"{prefix}{text}") from None
    except TypeError as exc:
        raise InputError(f"{path or 'the spec'}: {exc}") from None


def from_mapping(cls, data: Any, path: str, base=None, exclude: tuple[str, ...] = ()):
    """``cls`` built from ``data`` (a mapping of field names, parsed YAML) over ``base`` (default: the
    class's defaults).  Unknown keys name the closest valid one; bad values name ``path.key``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of keys, got {show(data)}")
    allowed = [f.name for f in spec_fields(cls, exclude)]
    tps = hints(cls)
    values = {}
    for key, value in data.items():
        key = str(key)
        if key not in allowed:
            raise InputError(f"{path}.{key}: unknown key{suggest(key, allowed, path + '.')}")
        values[key] = coerce(f"{path}.{key}", value, tps[key])
    return construct(cls, values, path, base)
