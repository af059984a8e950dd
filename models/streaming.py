"""Training data that stays on disk: an indexed HDF5 cache of labelled frames, read frame by frame, with
neighbour lists built per batch (in DataLoader worker processes), so peak memory does not grow with the
number of frames.

Cache layout (one HDF5 file, built once by :meth:`FrameCache.build` from any iterable of labelled
``ase.Atoms``, written in chunks; format ``matscreen-frames`` version 1):

    offsets [F+1] int64        atoms of frame f are rows offsets[f]:offsets[f+1] of the per-atom arrays
    numbers [A] int16          positions [A,3] Å      forces [A,3] eV/Å
    cell [F,3,3] Å   pbc [F,3] bool   energy [F] eV   stress [F,3,3] eV/Å³ (NaN: none)
    group [F] str  (temperature_K|run_id or source: the stratified split)   oracle [F] str

:class:`StreamedGraphs` has the interface of ``models.training.GraphData`` (``batches``), so ``fit`` and
``evaluate`` take either.  In data-parallel training (``torch.distributed`` initialised) each rank takes
its contiguous share of every global batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from common.atomic import atomic_path
from common.errors import InputError

FORMAT = "matscreen-frames"
CHUNK_FRAMES = 256


def _group(info: dict) -> str:
    from models.data import frame_group

    return repr(frame_group(info))


class FrameCache:
    """Read-only, random-access view of a frame cache file (opened lazily: safe in forked loader workers)."""

    def __init__(self, path: str | os.PathLike):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"frame cache {self.path} not found; build it with models.streaming.FrameCache.build")
        with h5py.File(self.path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise InputError(f"{self.path} is not a matscreen frame cache; rebuild it")
            self.offsets = f["offsets"][:]
            self.groups = [g.decode() if isinstance(g, bytes) else str(g) for g in f["group"][:]]
            self.oracles = sorted({o.decode() if isinstance(o, bytes) else str(o) for o in f["oracle"][:]} - {""})
            self.energy = f["energy"][:]
        self._h5 = None
        self._pid = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_atoms(self) -> np.ndarray:
        return np.diff(self.offsets)

    def _file(self):
        import h5py

        if self._h5 is None or self._pid != os.getpid():   # one handle per process (loader workers fork)
            self._h5 = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._h5

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_h5"], state["_pid"] = None, None
        return state

    def frame(self, k: int) -> dict:
        """Frame ``k``: positions, numbers, cell, pbc, energy, forces, stress (None when absent)."""
        f = self._file()
        a, b = int(self.offsets[k]), int(self.offsets[k + 1])
        stress = f["stress"][k]
        return {"positions": f["positions"][a:b], "numbers": f["numbers"][a:b].astype(np.int64), "cell": f["cell"][k],
                "pbc": f["pbc"][k], "energy": float(self.energy[k]), "forces": f["forces"][a:b],
                "stress": None if np.isnan(stress).any() else stress}

    def element_counts(self, elements: list[int]) -> np.ndarray:
        """[F, len(elements)] atoms of each element per frame (read in chunks)."""
        f = self._file()
        col = {int(z): i for i, z in enumerate(elements)}
        out = np.zeros((len(self), len(elements)))
        for s in range(0, len(self), 4096):
            e = min(s + 4096, len(self))
            nums = f["numbers"][int(self.offsets[s]):int(self.offsets[e])]
            frame_of = np.repeat(np.arange(s, e), np.diff(self.offsets[s:e + 1]))
            for z, i in col.items():
                m = nums == z
                np.add.at(out[:, i], frame_of[m], 1)
        return out

    def elements(self) -> list[int]:
        f = self._file()
        found: set[int] = set()
        for s in range(0, int(self.offsets[-1]), 1 << 20):
            found |= set(np.unique(f["numbers"][s:s + (1 << 20)]).tolist())
        return sorted(int(z) for z in found)

    def force_rms(self, indices: np.ndarray | None = None) -> float:
        """RMS force component (eV/Å) over the frames ``indices`` (all by default), read in chunks."""
        f = self._file()
        idx = np.arange(len(self)) if indices is None else np.sort(np.asarray(indices))
        total, count = 0.0, 0
        for k in idx:
            block = f["forces"][int(self.offsets[k]):int(self.offsets[k + 1])]
            total += float(np.square(block).sum())
            count += block.size
        return float(np.sqrt(total / max(count, 1)))

    @classmethod
    def build(cls, path: str | os.PathLike, frames: Iterable) -> "FrameCache":
        """Write ``frames`` (labelled ase.Atoms, consumed one by one) as a cache file, atomically."""
        import h5py

        from models.data import frame_labels

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        n_frames = n_atoms = 0
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as f:
                f.attrs["format"] = FORMAT
                f.attrs["format_version"] = 1
                per_atom = {"numbers": ((), np.int16), "positions": ((3,), np.float64), "forces": ((3,), np.float64)}
                per_frame = {"cell": ((3, 3), np.float64), "pbc": ((3,), bool), "energy": ((), np.float64),
                             "stress": ((3, 3), np.float64)}
                for name, (shape, dt) in {**per_atom, **per_frame}.items():
                    f.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dt,
                                     chunks=(4096 if name in per_atom else 256, *shape))
                strings = h5py.string_dtype()
                for name in ("group", "oracle"):
                    f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=strings, chunks=(1024,))
                offsets = [0]
                buf: dict[str, list] = {k: [] for k in (*per_atom, *per_frame, "group", "oracle")}

                def flush():
                    nonlocal n_atoms
                    for name in buf:
                        if not buf[name]:
                            continue
                        arr = np.concatenate(buf[name]) if name in per_atom else np.asarray(buf[name], dtype=object
                                                                                              if name in ("group", "oracle")
                                                                                              else None)
                        ds = f[name]
                        start = ds.shape[0]
                        ds.resize(start + len(arr), axis=0)
                        ds[start:] = arr
                        buf[name] = []

                for atoms in frames:
                    lab = frame_labels(atoms)
                    buf["numbers"].append(atoms.numbers.astype(np.int16))
                    buf["positions"].append(atoms.get_positions())
                    buf["forces"].append(lab["forces"])
                    buf["cell"].append(np.asarray(atoms.cell[:], float))
                    buf["pbc"].append(np.asarray(atoms.pbc, bool))
                    buf["energy"].append(lab["energy"])
                    buf["stress"].append(np.full((3, 3), np.nan) if lab["stress"] is None else lab["stress"])
                    buf["group"].append(_group(atoms.info))
                    buf["oracle"].append(str(atoms.info.get("oracle") or ""))
                    n_frames += 1
                    n_atoms += len(atoms)
                    offsets.append(n_atoms)
                    if n_frames % CHUNK_FRAMES == 0:
                        flush()
                flush()
                if not n_frames:
                    raise InputError(f"no frames to cache in {path}; give labelled frames")
                f.create_dataset("offsets", data=np.asarray(offsets, dtype=np.int64))
        return cls(path)


class _FrameGraphs(torch.utils.data.Dataset):
    """Frame ``k`` of a cache as a training item with its neighbour list (built in the loader worker)."""

    def __init__(self, cache: FrameCache, cutoff: float):
        self.cache, self.cutoff = cache, cutoff

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, k: int) -> dict:
        from models.batching import graph_item

        fr = self.cache.frame(int(k))
        return graph_item(fr["positions"], fr["numbers"], fr["cell"], fr["pbc"], fr["energy"], fr["forces"],
                          fr["stress"], self.cutoff)


def _items(items):
    return items            # loader workers hand over plain items; the main process collates, casts and moves


@dataclass
class StreamedGraphs:
    """The frames ``indices`` of a cache, streamed: ``batches`` like ``GraphData`` but nothing held in memory.

    ``workers`` DataLoader processes read frames and build neighbour lists while the model trains
    (overlap); ``max_atoms`` bounds the atoms of a batch as well as its ``batch_size`` frames.
    """
    cache: FrameCache
    indices: np.ndarray
    cutoff: float
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    workers: int = 0
    max_atoms: int | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0, start: int = 0, shard: bool = True):
        from models.batching import collate_items, epoch_plan

        plan = [self.indices[b] for b in epoch_plan(len(self.indices), batch_size, shuffle, seed,
                                                    self.cache.n_atoms[self.indices], self.max_atoms, start, shard)]
        loader = torch.utils.data.DataLoader(_FrameGraphs(self.cache, self.cutoff), batch_sampler=plan,
                                             num_workers=self.workers, collate_fn=_items,
                                             prefetch_factor=4 if self.workers else None)
        for items in loader:
            yield collate_items(items, self.cutoff, self.dtype, self.device)
