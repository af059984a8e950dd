"""2D maps of compositional embeddings (PCA, t-SNE, UMAP) and their plots.

``make_map`` takes a labelled composition table (``category`` column, see
:mod:`chemspace.labels`), draws a balanced sample of up to ``per_category`` rows per category,
embeds it (:mod:`chemspace.embeddings`), projects it to 2D and writes
``map_<embedding>.parquet`` (key, formula, category, anion_family, <method>_x, <method>_y) and
one PNG per method with two panels: coloured by category and by anion family.

Anion family: decided by the composition's most electronegative element (smact Pauling values):
N, P, As, Sb, Bi -> pnictide; S, Se, Te -> chalcogenide; F, Cl, Br, I -> halide; O -> oxide;
anything else -> other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import InputError
from chemspace.labels import CATEGORIES
from chemspace.species import species_table

METHODS = ("pca", "tsne", "umap")
FAMILIES = ("pnictide", "chalcogenide", "halide", "oxide", "other")
_FAMILY_OF = {
    **{s: "pnictide" for s in ("N", "P", "As", "Sb", "Bi")},
    **{s: "chalcogenide" for s in ("S", "Se", "Te")},
    **{s: "halide" for s in ("F", "Cl", "Br", "I")},
    "O": "oxide",
}
CATEGORY_COLOURS = {"standard": "#1f77b4", "missing": "#ff7f0e", "interesting": "#2ca02c", "unlikely": "#bbbbbb"}
FAMILY_COLOURS = {"pnictide": "#9467bd", "chalcogenide": "#d62728", "halide": "#17becf", "oxide": "#e377c2",
                  "other": "#bbbbbb"}


def anion_family(symbols) -> str:
    """Anion family of a composition from its most electronegative element."""
    table = species_table()
    en = [(table.pauling[table.index[s]] or -1.0, s) for s in symbols]
    return _FAMILY_OF.get(max(en)[1], "other")


def balanced_sample(table, per_category: int, seed: int = 0):
    """Up to ``per_category`` random rows of each category (pyarrow Table in, Table out)."""
    import pyarrow as pa

    if "category" not in table.column_names:
        raise InputError("table has no 'category' column; run 'matscreen chemspace label' first")
    if per_category < 1:
        raise InputError(f"--per-category must be at least 1, got {per_category}")
    rng = np.random.default_rng(seed)
    cats = np.asarray(table.column("category").to_pylist(), dtype=object)
    take = []
    for c in CATEGORIES:
        idx = np.flatnonzero(cats == c)
        if len(idx) > per_category:
            idx = np.sort(rng.choice(idx, per_category, replace=False))
        take.append(idx)
    take = np.concatenate(take) if take else np.array([], dtype=np.int64)
    return table.take(pa.array(take, pa.int64()))


def project(x: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """(n, d) -> (n, 2) with PCA, t-SNE or UMAP (n >= 3 for t-SNE/UMAP)."""
    n = x.shape[0]
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, perplexity=float(max(2, min(30, (n - 1) // 3))), init="pca",
                    random_state=seed).fit_transform(x)
    if method == "umap":
        import warnings

        import umap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return umap.UMAP(n_components=2, n_neighbors=max(2, min(15, n - 1)), random_state=seed,
                             init="spectral" if n > 20 else "random").fit_transform(x)
    raise InputError(f"unknown map method {method!r}; use one or more of {', '.join(METHODS)}")


@dataclass
class MapResult:
    """Files written by :func:`make_map` and what was dropped."""

    table: Path
    plots: list[Path] = field(default_factory=list)
    points: int = 0
    dropped_elements: dict = field(default_factory=dict)
    empty_rows: int = 0


def make_map(table, out_dir, embedding: str = "magpie", methods=METHODS, per_category: int = 250,
             pooling=("mean",), seed: int = 0) -> MapResult:
    """Sample, embed, project and plot a labelled composition table (pyarrow Table or Parquet path)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from common.atomic import atomic_path, check_writable
    from chemspace.embeddings import embed

    if isinstance(methods, str):
        methods = tuple(m.strip() for m in methods.split(",") if m.strip())
    for m in methods:
        if m not in METHODS:
            raise InputError(f"unknown map method {m!r}; use one or more of {', '.join(METHODS)}")
    if not methods:
        raise InputError("no map method given; use --methods pca,tsne,umap")
    if isinstance(table, (str, Path)):
        path = Path(table)
        if not path.is_file():
            raise InputError(f"labelled table {path} not found; run 'matscreen chemspace label' first")
        table = pq.read_table(path)
    out_dir = Path(out_dir)
    check_writable(out_dir / f"map_{embedding}.parquet")
    sample = balanced_sample(table, per_category, seed)
    emb = embed(sample, embedding, pooling)
    keep = ~np.isnan(emb.vectors).any(axis=1)
    sample = sample.filter(pa.array(keep))
    x = emb.vectors[keep]
    if x.shape[0] < 3:
        raise InputError(f"only {x.shape[0]} embeddable compositions to map; enumerate a larger space")
    families = [anion_family(e) for e in sample.column("elements").to_pylist()]
    cols = {
        "key": sample.column("key"),
        "formula": sample.column("formula"),
        "category": sample.column("category"),
        "anion_family": pa.array(families, pa.string()),
    }
    coords = {}
    for m in methods:
        xy = project(x, m, seed)
        coords[m] = xy
        cols[f"{m}_x"] = pa.array(xy[:, 0])
        cols[f"{m}_y"] = pa.array(xy[:, 1])
    result = MapResult(table=out_dir / f"map_{embedding}.parquet", points=int(x.shape[0]),
                       dropped_elements=dict(emb.dropped_elements), empty_rows=emb.empty_rows)
    with atomic_path(result.table) as tmp:
        pq.write_table(pa.table(cols), tmp)
    cats = sample.column("category").to_pylist()
    for m in methods:
        png = out_dir / f"map_{embedding}_{m}.png"
        _plot(coords[m], cats, families, f"{embedding} / {m.upper()} ({x.shape[0]} compositions)", png)
        result.plots.append(png)
    return result


def _plot(xy, cats, families, title, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.atomic import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(11, 5), constrained_layout=True)
    for ax, labels, colours, name in ((axes[0], cats, CATEGORY_COLOURS, "category"),
                                      (axes[1], families, FAMILY_COLOURS, "anion family")):
        labels = np.asarray(labels, dtype=object)
        for lab, colour in colours.items():
            sel = labels == lab
            if sel.any():
                ax.scatter(xy[sel, 0], xy[sel, 1], s=6, c=colour, label=f"{lab} ({sel.sum()})", alpha=0.8, lw=0)
        ax.set_title(f"coloured by {name}")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(markerscale=3, fontsize=8, loc="best")
    fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
