"""Benchmark: whole-space counts (arity 2, 3, 4) and enumeration throughput (all ternaries).

Prints exact counts and wall times.  Run: .venv/bin/python benchmarks/chemspace.py
(numba compiles on the first call of a fresh checkout; that one-off cost is printed separately.)
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

# this file is named like the package: keep its folder off sys.path so `import chemspace` finds the package
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


def main() -> None:
    from chemspace import count_space, enumerate_compositions

    print(f"chemspace benchmark (smact14, stoichiometric factors 1..8, {os.cpu_count()} cores)")
    t0 = time.perf_counter()
    count_space(2, elements=["Li", "O", "S"])
    count_space(3, elements=["Li", "O", "S"])
    count_space(4, elements=["Li", "O", "S", "P"])
    enumerate_compositions("Li,O,S", arity=3)
    print(f"warm-up (numba compile or cache load): {time.perf_counter() - t0:.1f} s")
    total = 0.0
    for k in (2, 3, 4):
        r = count_space(k)
        total += r.seconds
        print(f"count arity {k}: unique {r.unique:,} allowed {r.allowed:,} in {r.seconds:.2f} s")
    print(f"count arity 2+3+4 total: {total:.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ternaries.parquet")
        res = enumerate_compositions(arity=3, out=path)
        size = os.path.getsize(path) / 2**20
        print(f"enumerate all ternaries: {res.rows:,} rows in {res.seconds:.1f} s = {res.rows / res.seconds:,.0f} rows/s "
              f"({size:.0f} MiB Parquet)")


if __name__ == "__main__":
    main()
