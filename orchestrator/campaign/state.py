"""The campaign ledger: the crash-safe source of truth for resume.

One SQLite file per campaign, ``<store>/<name>/ledger.sqlite``.  Every write is one transaction
(SQLite's journal makes it atomic), so a driver killed at any instant leaves the ledger either
before or after a step, never half-way.  Tables:

* ``meta``        key -> JSON (spec, spec hash, executions)
* ``candidates``  one row per candidate: stage, round, model version, verdict, reason, results JSON
* ``steps``       finished work, by a stable key (``ref:<cand>``, ``train:<cand>:2``, ...) -> JSON result;
                  a step found here is never redone on resume.  A re-screened candidate (``--incremental``)
                  uses ``<cand>@g2``, ``<cand>@g3``... in its step keys; ``generation:<cand>`` holds its
                  generation and ``history:<cand>:g<n>`` the result of an earlier one
* ``rounds``      per-round diagnostics (selected/accurate/failed fractions, RDF MAE, force MAE)

Candidate stages: ``pending`` -> ``reference`` -> ``active_learning`` -> ``production`` -> ``done``.
Final reasons: ``converged``, ``budget_spent``, ``oracle_failing``, ``no_structure`` (and ``error``
for an unexpected exception, with its message).
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from common import vocabulary as V

STAGES = ("pending", "reference", "active_learning", "production", "done")
REASONS = V.REASONS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    key TEXT PRIMARY KEY, position INTEGER NOT NULL, formula TEXT NOT NULL, prototype TEXT,
    stage TEXT NOT NULL DEFAULT 'pending', round INTEGER NOT NULL DEFAULT 0, model_version TEXT,
    verdict TEXT, reason TEXT, detail TEXT, results TEXT NOT NULL DEFAULT '{}',
    simulated_ps REAL NOT NULL DEFAULT 0, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS steps (key TEXT PRIMARY KEY, value TEXT NOT NULL, finished REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    candidate TEXT NOT NULL, round INTEGER NOT NULL, value TEXT NOT NULL, PRIMARY KEY (candidate, round));
"""


class Ledger:
    """Thread-safe access to one campaign's ledger file (driver threads share one instance)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)

    @classmethod
    def open_existing(cls, path: str | Path) -> "Ledger":
        from common.errors import InputError

        if not Path(path).exists():
            raise InputError(f"no campaign ledger at {path}; run `matscreen campaign run SPEC` first (or pass --store)")
        return cls(path)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # --- meta -----------------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    # --- candidates -----------------------------------------------------------------------------
    def add_candidates(self, rows: list[dict]) -> None:
        """Insert candidates not yet present (``key``, ``formula``, ``prototype``); keeps existing rows."""
        with self._tx() as c:
            start = c.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
            for i, row in enumerate(rows):
                c.execute(
                    "INSERT OR IGNORE INTO candidates (key, position, formula, prototype, updated) VALUES (?,?,?,?,?)",
                    (row["key"], start + i, row["formula"], row.get("prototype"), time.time()))

    def update_candidate(self, key: str, **fields: Any) -> None:
        allowed = {"stage", "round", "model_version", "verdict", "reason", "detail", "results", "simulated_ps"}
        bad = set(fields) - allowed
        if bad:
            raise KeyError(f"unknown candidate fields {bad}")
        if "results" in fields:
            fields["results"] = json.dumps(fields["results"])
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as c:
            c.execute(f"UPDATE candidates SET {cols}, updated=? WHERE key=?", (*fields.values(), time.time(), key))

    def new_generation(self, key: str, generation: int, previous: dict) -> None:
        """Start screening generation ``generation`` of candidate ``key`` (one transaction): the old result is
        kept as step ``history:<key>:g<n-1>``, ``generation:<key>`` is set and the candidate is pending again."""
        now = time.time()
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO steps VALUES (?, ?, ?)",
                      (f"history:{key}:g{generation - 1}", json.dumps(previous), now))
            c.execute("INSERT OR REPLACE INTO steps VALUES (?, ?, ?)",
                      (f"generation:{key}", json.dumps({"generation": generation}), now))
            c.execute("UPDATE candidates SET stage='pending', round=0, model_version=NULL, verdict=NULL, reason=NULL, "
                      "detail=NULL, results='{}', updated=? WHERE key=?", (now, key))

    def add_simulated_ps(self, key: str, ps: float) -> None:
        with self._tx() as c:
            c.execute("UPDATE candidates SET simulated_ps = simulated_ps + ? WHERE key=?", (float(ps), key))

    def candidates(self) -> list[dict]:
        with self._lock:
            cur = self._conn.execute("SELECT * FROM candidates ORDER BY position")
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, r)) for r in cur.fetchall()]
        for r in rows:
            r["results"] = json.loads(r["results"])
        return rows

    def candidate(self, key: str) -> dict:
        return next(r for r in self.candidates() if r["key"] == key)

    # --- steps ----------------------------------------------------------------------------------
    def step(self, key: str) -> Any:
        """The recorded result of a finished step, or None."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM steps WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def record_step(self, key: str, value: Any) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO steps VALUES (?, ?, ?)", (key, json.dumps(value), time.time()))

    def once(self, key: str, work: Callable[[], Any]) -> Any:
        """Run ``work`` unless step ``key`` is already recorded; record and return its JSON result."""
        done = self.step(key)
        if done is not None:
            return done
        value = work()
        self.record_step(key, value)
        return value

    def steps(self, prefix: str = "") -> dict[str, Any]:
        with self._lock:
            rows = self._conn.execute("SELECT key, value FROM steps WHERE key LIKE ? ORDER BY finished",
                                      (prefix + "%",)).fetchall()
        return {k: json.loads(v) for k, v in rows}

    # --- rounds ---------------------------------------------------------------------------------
    def record_round(self, candidate: str, round_: int, diagnostics: dict) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO rounds VALUES (?, ?, ?)", (candidate, round_, json.dumps(diagnostics)))

    def rounds(self, candidate: str | None = None) -> list[dict]:
        with self._lock:
            if candidate is None:
                rows = self._conn.execute("SELECT candidate, round, value FROM rounds ORDER BY candidate, round").fetchall()
            else:
                rows = self._conn.execute("SELECT candidate, round, value FROM rounds WHERE candidate=? ORDER BY round",
                                          (candidate,)).fetchall()
        return [{"candidate": c, "round": r, **json.loads(v)} for c, r, v in rows]

    # --- summaries ------------------------------------------------------------------------------
    def summary(self) -> dict:
        """Counts for the progress view: total, done, running, failed, pending, max round, simulated ns."""
        rows = self.candidates()
        done = [r for r in rows if r["stage"] == "done"]
        inconclusive = [r for r in done if r["reason"] == V.INCONCLUSIVE]
        failed = [r for r in done if r["reason"] not in V.FINISHED_WELL]
        running = [r for r in rows if r["stage"] not in ("pending", "done")]
        generated = self.step("candidates")
        skipped = len(generated.get("skipped_known", [])) if isinstance(generated, dict) else 0
        return {
            "total": len(rows),
            "done": len(done),
            "converged": len(done) - len(failed) - len(inconclusive),
            "inconclusive": len(inconclusive),
            "failed": len(failed),
            "running": len(running),
            "pending": len(rows) - len(done) - len(running),
            "round": max((r["round"] for r in running), default=0),
            "simulated_ns": sum(r["simulated_ps"] for r in rows) / 1000.0,
            "skipped_known": skipped,
            "now": [f"{r['formula']} {r['stage']}" for r in running],
        }


def ledger_path(store: str | Path, name: str) -> Path:
    return Path(store) / name / "ledger.sqlite"
