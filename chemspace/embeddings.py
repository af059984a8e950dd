"""Compositional embeddings from element vectors (the ``elementembeddings`` package, offline).

A composition's vector pools the vectors of its elements weighted by atomic fraction: ``mean``
(fraction-weighted mean, the default), plus optional ``std`` (fraction-weighted standard
deviation), ``max``, ``min`` and ``sum`` (amount-weighted sum); several poolings concatenate.
Elements an embedding lacks are dropped (fractions renormalised over the rest) and counted;
a composition with no embedded element gets a row of NaN and is counted, never a crash.
"""
from __future__ import annotations

import functools
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from common.errors import InputError
from chemspace.species import species_table

EMBEDDINGS = ("magpie", "mat2vec", "megnet16", "oliynyk", "skipatom", "random_200")
POOLINGS = ("mean", "std", "max", "min", "sum")


@functools.lru_cache(maxsize=8)
def element_matrix(name: str, standardise: bool = True) -> np.ndarray:
    """(103, d) element vectors in Z order; rows of NaN where the embedding lacks the element."""
    from elementembeddings.core import Embedding

    if name not in EMBEDDINGS:
        raise InputError(f"unknown embedding {name!r}; use one of {', '.join(EMBEDDINGS)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        emb = Embedding.load_data(name)
        if standardise and name != "random_200":
            emb.standardise(inplace=True)
    vectors = emb.embeddings
    dim = len(next(iter(vectors.values())))
    mat = np.full((103, dim), np.nan)
    for i, sym in enumerate(species_table().symbols):
        if sym in vectors:
            mat[i] = np.asarray(vectors[sym], dtype=float)
    return mat


@dataclass
class EmbeddingResult:
    """Vectors (n, d) plus what was dropped."""

    vectors: np.ndarray
    embedding: str
    pooling: tuple[str, ...]
    dropped_elements: Counter = field(default_factory=Counter)  # symbol -> compositions affected
    empty_rows: int = 0  # compositions with no embedded element (rows of NaN)


def embed(compositions, embedding: str = "magpie", pooling=("mean",), standardise: bool = True) -> EmbeddingResult:
    """Embed compositions given as (symbols, amounts) pairs or a table with elements/amounts columns."""
    if isinstance(pooling, str):
        pooling = tuple(p.strip() for p in pooling.split(",") if p.strip())
    for p in pooling:
        if p not in POOLINGS:
            raise InputError(f"unknown pooling {p!r}; use one or more of {', '.join(POOLINGS)}")
    if hasattr(compositions, "column_names"):
        compositions = list(zip(compositions.column("elements").to_pylist(), compositions.column("amounts").to_pylist()))
    table = species_table()
    mat = element_matrix(embedding, standardise)
    dim = mat.shape[1]
    out = np.full((len(compositions), dim * len(pooling)), np.nan)
    dropped: Counter = Counter()
    empty = 0
    for r, (symbols, amounts) in enumerate(compositions):
        idx = np.array([table.index[s] for s in symbols])
        amt = np.asarray(amounts, dtype=float)
        ok = ~np.isnan(mat[idx, 0])
        for s, good in zip(symbols, ok):
            if not good:
                dropped[s] += 1
        if not ok.any():
            empty += 1
            continue
        vec, a = mat[idx[ok]], amt[ok]
        w = a / a.sum()
        parts = []
        for p in pooling:
            if p == "mean":
                parts.append(w @ vec)
            elif p == "std":
                mu = w @ vec
                parts.append(np.sqrt(w @ (vec - mu) ** 2))
            elif p == "max":
                parts.append(vec.max(axis=0))
            elif p == "min":
                parts.append(vec.min(axis=0))
            else:
                parts.append(a @ vec)
        out[r] = np.concatenate(parts)
    return EmbeddingResult(out, embedding, tuple(pooling), dropped, empty)
