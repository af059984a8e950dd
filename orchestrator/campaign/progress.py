"""The live console view of a running campaign: one status line, redrawn as the ledger changes.

``candidates 2/5 done (1 failed) | 2 running | round 1 | 0.012 ns simulated | 1m32s``
On a terminal the line is redrawn in place; otherwise a new line is printed whenever it changes.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def format_summary(s: dict, elapsed_s: float | None = None) -> str:
    undecided = f", {s['inconclusive']} inconclusive" if s.get("inconclusive") else ""
    line = (f"candidates {s['done']}/{s['total']} done ({s['converged']} converged{undecided}, {s['failed']} failed) | "
            f"{s['running']} running | round {s['round']} | {s['simulated_ns']:.4f} ns simulated")
    if s.get("skipped_known"):
        line += f" | {s['skipped_known']} known skipped"
    if elapsed_s is not None:
        m, sec = divmod(int(elapsed_s), 60)
        line += f" | {m}m{sec:02d}s"
    return line


class ProgressView:
    """Callable with ledger summaries (``Ledger.summary()``); thread-safe; ``close()`` ends the line."""

    def __init__(self, stream: TextIO | None = None, min_interval_s: float = 0.5):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.min_interval_s = min_interval_s
        self.start = time.monotonic()
        self._last = ""
        self._last_t = 0.0
        self._lock = threading.Lock()

    def __call__(self, summary: dict) -> None:
        with self._lock:
            now = time.monotonic()
            line = format_summary(summary)
            if line == self._last or (self.tty and now - self._last_t < self.min_interval_s
                                      and summary["done"] < summary["total"]):
                return
            self._last, self._last_t = line, now
            full = format_summary(summary, now - self.start)
            if self.tty:
                self.stream.write("\r\033[K" + full)
            else:
                self.stream.write(full + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty and self._last:
            self.stream.write("\n")
            self.stream.flush()
