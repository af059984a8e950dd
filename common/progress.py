"""Progress of a long task, reported from inside the loops that do it (training epochs, MD steps, oracle labels).

A loop calls :func:`report`; nothing happens unless this process reports to a file (:func:`reporting`, or the
``MATSCREEN_PROGRESS_FILE`` environment variable, which subprocesses inherit).  Then the task's latest state is
written there as one JSON object, atomically, at most every ``every_s`` seconds::

    {"task": "MD", "done": 3.2, "total": 12.0, "unit": "ps", "rate_per_s": 0.04, "time": <unix s>,
     "extra": {"systems": 3}}

The campaign's actors report to ``<campaign>/progress/<role>-<pid>.json``; :func:`latest` reads the newest
file of a directory and :func:`describe` says it in words (``MD 3.2/12.0 ps, 3 systems, 35 ns/day, ETA 4m``).
Units: ``done``/``total`` in ``unit``; ``rate_per_s`` in ``unit`` per second since the task started.
"""
from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ENV = "MATSCREEN_PROGRESS_FILE"
DIR_ENV = "MATSCREEN_PROGRESS_DIR"

_lock = threading.Lock()
_state: dict[tuple[str, str], dict] = {}     # (file, task) -> {"t0", "done0", "last"}


@contextmanager
def reporting(path: str | os.PathLike | None):
    """Report to ``path`` inside the block (and in subprocesses started there); None: leave as it is."""
    if path is None:
        yield
        return
    before = os.environ.get(ENV)
    os.environ[ENV] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


def report(task: str, done: float, total: float, unit: str, *, every_s: float = 2.0, final: bool = False,
           **extra) -> None:
    """The state of ``task``: ``done`` of ``total`` ``unit``.  Written at most every ``every_s`` s (and when
    ``final``); a ``done`` below the last one starts the task again (its rate from there)."""
    path = os.environ.get(ENV)
    if not path:
        return
    now = time.monotonic()
    with _lock:
        s = _state.get((path, task))
        if s is None or done < s["done"]:
            s = _state[(path, task)] = {"t0": now, "done0": float(done), "done": float(done), "last": -1e9}
        s["done"] = float(done)
        if not final and now - s["last"] < every_s:
            return
        s["last"] = now
        elapsed = now - s["t0"]
        rate = (float(done) - s["done0"]) / elapsed if elapsed > 0 else None
    payload = {"task": task, "done": float(done), "total": float(total), "unit": unit, "rate_per_s": rate,
               "time": time.time(), "extra": {k: v for k, v in extra.items() if v is not None}}
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, target)
    except OSError:
        pass      # progress is a view: a full disk or a removed directory must not stop the work


def latest(directory: str | os.PathLike, max_age_s: float = 120.0) -> dict | None:
    """The newest report in ``directory`` written within ``max_age_s`` seconds, else None."""
    best, now = None, time.time()
    for f in Path(directory).glob("*.json"):
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if now - float(d.get("time", 0)) <= max_age_s and (best is None or d["time"] > best["time"]):
            best = d
    return best


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def describe(d: dict) -> str:
    """One report in words: the task, done/total, what ``extra`` holds, the rate and the time left."""
    unit, done, total, extra = d["unit"], d["done"], d["total"], d.get("extra") or {}
    if unit == "ps":
        text = f"{d['task']} {done:.1f}/{total:.1f} ps"
    else:
        text = f"{d['task']} {unit} {int(done)}/{int(total)}" if unit != "label" else \
            f"{d['task']} {int(done)}/{int(total)}"
    text += "".join(f", {v} {k}" if k in ("systems", "frames") else f", {k} {v:.3g}" if isinstance(v, float)
                    else f", {k} {v}" for k, v in extra.items())
    rate = d.get("rate_per_s")
    if rate and rate > 0:
        if unit == "ps":
            text += f", {rate * 86400 / 1000:.1f} ns/day"
        text += f", ETA {_duration(max(total - done, 0) / rate)}"
    return text
