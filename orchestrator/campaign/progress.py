"""The live console view of a running campaign: one status line, redrawn as the work moves.

``candidates 1/4 done (1 inconclusive, 0 failed) | Li10SnP2S12 tier1 | training epoch 5/10, loss 0.21, ETA 40s | 6m32s``
The driver calls the view when the ledger changes and every 2 s with the newest task report of its workers
(training epoch, MD ps with ns/day and ETA, oracle labels: ``common.progress``).  On a terminal the line is
redrawn in place; otherwise a line is printed when a candidate finishes, and at most every 30 s between.
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
    if s.get("now"):
        line += " | " + ", ".join(s["now"])
    if s.get("activity"):
        line += f" | {s['activity']}"
    if elapsed_s is not None:
        m, sec = divmod(int(elapsed_s), 60)
        line += f" | {m}m{sec:02d}s"
    return line


class ProgressView:
    """Callable with ledger summaries (``Ledger.summary()``); thread-safe; ``close()`` ends the line."""

    def __init__(self, stream: TextIO | None = None, min_interval_s: float = 0.5, log_interval_s: float = 30.0):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.min_interval_s = min_interval_s if self.tty else log_interval_s
        self._done = -1
        self.start = time.monotonic()
        self._last = ""
        self._last_t = 0.0
        self._lock = threading.Lock()

    def __call__(self, summary: dict) -> None:
        with self._lock:
            now = time.monotonic()
            line = format_summary(summary)
            finished = summary["done"] != self._done or summary["done"] >= summary["total"]
            if line == self._last or (now - self._last_t < self.min_interval_s and not finished):
                return
            self._last, self._last_t, self._done = line, now, summary["done"]
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
