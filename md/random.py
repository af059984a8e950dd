"""Counter-based per-system random numbers (no generator state, no Python loop over systems).

Each normal deviate is a pure function of (system seed, step, atom-in-system index, component,
stream): a splitmix64 hash with int64 arithmetic gives uniforms, Box–Muller gives normals.  A
system therefore draws the same numbers whether it runs alone or inside any batch, on CPU or GPU.
"""
from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1


def _signed(c: int) -> int:
    c &= _MASK64
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finaliser on int64 tensors (wrap-around multiplication)."""
    x = x + _GOLDEN
    x = (x ^ _shr(x, 30)) * _M1
    x = (x ^ _shr(x, 27)) * _M2
    return x ^ _shr(x, 31)


def hashed_uniform(seed: torch.Tensor, step: torch.Tensor, counter: torch.Tensor, stream: int = 0) -> torch.Tensor:
    """Uniform (0, 1) float64 from int64 tensors (broadcast together)."""
    x = splitmix64(seed * 1_000_003 + stream)
    x = splitmix64(x ^ step)
    x = splitmix64(x ^ counter)
    mantissa = _shr(x, 11)                                   # 53 random bits
    return (mantissa.double() + 0.5) * (1.0 / (1 << 53))


_LANES = 64            # pad to a multiple of every SIMD width times ATen's unroll factor
_CHUNK = 32768         # below ATen's parallel grain size: one thread, no split tails


def lanewise(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` for an elementwise transcendental ``fn``, independent of where x sits in a batch.

    On CPU, ATen evaluates full SIMD chunks with vector code (Sleef) and the leftover tail with
    scalar libm; the two can differ by one ulp, which would make a system's numbers depend on
    its neighbours in the batch.  Padding to a multiple of the SIMD block (and staying below the
    parallel grain size) sends every element through the vector path.  CUDA needs no padding.
    """
    if x.device.type != "cpu":
        return fn(x)
    flat = x.reshape(-1)
    n = flat.numel()
    pad = (-n) % _LANES
    if pad:
        flat = torch.cat([flat, torch.ones(pad, dtype=flat.dtype)])
    out = torch.cat([fn(c) for c in torch.split(flat, _CHUNK)]) if flat.numel() > _CHUNK else fn(flat)
    return out[:n].reshape(x.shape)


def atom_normals(seed: torch.Tensor, step: torch.Tensor, atom_in_system: torch.Tensor, system_index: torch.Tensor,
                 stream: int = 0, dtype=torch.float64) -> torch.Tensor:
    """[N,3] standard normal deviates for every atom, from per-system ``seed`` [S] and ``step`` [S]."""
    s = seed[system_index][:, None]
    t = step[system_index][:, None]
    base = atom_in_system[:, None] * 8
    comp = torch.arange(3, device=seed.device)[None, :]
    u1 = hashed_uniform(s, t, base + 2 * comp, stream)
    u2 = hashed_uniform(s, t, base + 2 * comp + 1, stream)
    z = torch.sqrt(-2.0 * lanewise(torch.log, u1)) * lanewise(torch.cos, 2.0 * torch.pi * u2)
    return z.to(dtype)
