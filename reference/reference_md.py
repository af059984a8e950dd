"""Oracle MD: reference trajectories (for the structure and dynamics checks) and the first labels.

The oracle runs in the students' engine (``md.runner.BatchedMD``) under the students' protocol type
(``md.protocol.Protocol``): its ASE calculator enters as a force field (``models.ase_field``), so the
dynamics check compares D from one integrator with D from the same integrator.  Every ``stride`` steps
a trajectory frame (md.trajectory file: wrapped + unwrapped positions, cell, energies, T, oracle forces;
no stress, which would double an oracle step's cost); the stored frames nearest every ``label_every``-th step are labels appended to
the data store, except in the final ``holdout_fraction`` of the run after the equilibration: that block is
never trained on, so the ensemble's deviation there is out of sample (it calibrates the trust levels:
:func:`calibration_block`).  The engine's live monitors (``md.monitors``) stop a run that breaks.
"""
from __future__ import annotations

import shutil
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from common.errors import InputError
from md.protocol import Protocol
from reference.oracles import OracleError


@dataclass(frozen=True)
class ReferencePlan:
    """One oracle MD run: the MD ``protocol`` (its length, time step, thermostat, stride, equilibration), the
    target ``temperature_K`` (K), the velocities' and thermostat's ``seed``, and its labelling: the stored frame
    nearest every ``label_every``-th step (0: none) before the held-out final
    ``holdout_fraction`` of the run after the equilibration."""
    protocol: Protocol
    temperature_K: float = 600.0
    seed: int = 0
    label_every: int = 50
    holdout_fraction: float = 0.0

    @classmethod
    def nvt(cls, temperature_K: float = 600.0, steps: int = 1000, timestep_fs: float = 2.0, stride: int = 10,
            friction_per_fs: float = 0.01, thermostat: str = "langevin", discard_fs: float = 0.0,
            **plan) -> "ReferencePlan":
        """Straight MD at the target (no ramp): Langevin NVT by default, ``thermostat='nve'`` for NVE."""
        protocol = Protocol.nvt(timestep_fs=timestep_fs, total_fs=steps * timestep_fs, stride=stride,
                                thermostat=thermostat, langevin_friction_per_fs=friction_per_fs,
                                discard_fs=discard_fs, checkpoint_every=max(stride, 50))
        return cls(protocol, temperature_K=temperature_K, **plan)

    @property
    def steps(self) -> int:
        return self.protocol.n_steps

    def validate(self) -> "ReferencePlan":
        if self.label_every < 0:
            raise InputError(f"label_every must be >= 0 (0: no labels), got {self.label_every}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise InputError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.temperature_K <= 0:
            raise InputError(f"temperature_K must be > 0 (got {self.temperature_K})")
        return self

    def to_dict(self) -> dict:
        return {**asdict(self), "steps": self.steps}


@dataclass
class ReferenceRun:
    """What one oracle MD run produced (``to_dict`` is the ``matscreen reference md --json`` line)."""
    run_id: str
    oracle: str
    trajectory: str
    steps: int
    frames: int
    labelled_frames: int
    mean_temperature_K: float | None
    max_temperature_K: float | None
    potential_energy_eV: list | None          # [first, last] stored frame
    min_distance_A: float | None              # closest pair in the last structure (Å)
    simulated_ps: float = 0.0
    shard: str | None = None                  # the store shard holding the labels
    error: str | None = None                  # set when the oracle failed mid-run (raise_on_failure=False)
    metadata: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ReferenceRun":
        return cls(**d)


def calibration_block(n: int, discard: int, holdout_fraction: float) -> int:
    """First index of the held-out calibration block of a run of ``n`` frames (or steps) whose first ``discard``
    are equilibration: the final ``holdout_fraction`` of the rest (``n`` when the fraction is 0).  Labels come
    only from before it; the ensemble's deviation and true error on it calibrate the trust levels."""
    post = max(0, n - min(discard, n))
    return n - int(round(holdout_fraction * post))


def run_reference_md(atoms, oracle, plan: ReferencePlan, trajectory_path, store=None,
                     run_id: str | None = None, metadata: dict | None = None, shard: str | None = None,
                     raise_on_failure: bool = True, monitor=None, device: str = "cpu") -> ReferenceRun:
    """Run oracle MD of a copy of ``atoms``: a trajectory file, labels in ``store``, and a :class:`ReferenceRun`.

    ``shard``: store the labels as that deterministic shard (``LabelStore.write_shard``: a rerun rewrites
    it) instead of a new one.  ``monitor``: the engine's breakage rules (``md.monitors.MonitorConfig``).
    A run the oracle fails in, or that breaks, keeps the labels of its stored frames and raises
    :class:`OracleError`, or with ``raise_on_failure=False`` returns the run with ``error`` set.  The engine
    works in ``<trajectory>.run/`` (a checkpoint there resumes an interrupted run) and moves the
    trajectory to ``trajectory_path`` when it ends.
    """
    from md.monitors import MonitorConfig
    from md.runner import BatchedMD, SystemSpec
    from md.trajectory import TrajectoryReader
    from models.ase_field import CalculatorForceField

    p = plan.validate()
    run_id = run_id or f"refmd-{uuid.uuid4().hex[:8]}"
    path = Path(trajectory_path)
    work = path.with_name(path.name + ".run")
    if work.exists() and not (work / "checkpoint.pt").exists():
        shutil.rmtree(work)                      # a run that never got going: start over
    meta = {"kind": "oracle-reference", "oracle": oracle.name, "run_id": run_id, "reference_plan": p.to_dict(),
            **(metadata or {})}
    engine = BatchedMD(CalculatorForceField(oracle.calculator, name=f"oracle {oracle.name}"),
                       [SystemSpec("reference", atoms.copy(), p.temperature_K, p.seed)], p.protocol, work,
                       monitor=monitor or MonitorConfig(), device=device, write_forces=True,
                       metadata=meta)
    error = None
    try:
        (result,) = engine.run()
        if result.verdict != "stable":
            error = (f"oracle {oracle.name} MD broke at step {result.failure_step} ({result.verdict}: "
                     f"{_evidence(result.evidence)})")
        steps = result.steps_done
    except Exception as exc:  # noqa: BLE001 - the oracle failed mid-run: keep what it labelled
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        error = f"oracle {oracle.name} failed at MD step {getattr(engine, 'global_step', 0)} ({type(exc).__name__}: {msg[:200]})"
        steps = getattr(engine, "global_step", 0)
    written = engine.trajectory_path("reference")
    if not written.exists():                     # interrupted mid-run: the engine left its .part file
        written = written.with_name(written.name + ".part")
    final = path if written.suffix == ".h5" else path.with_name(path.name + ".part")
    final.parent.mkdir(parents=True, exist_ok=True)
    if written.exists():
        written.replace(final)
    labels = _labels(final, oracle.name, p, run_id) if final.exists() else []
    kept = None
    if store is not None and labels:
        kept = str(store.write_shard(shard, labels) if shard else store.append(labels))
    if error is not None:
        error = f"{error}; {len(labels)} labelled frames were stored, the trajectory is left as {final}"
    else:
        shutil.rmtree(work, ignore_errors=True)
    frames = []
    if final.exists():
        with TrajectoryReader(final) as reader:
            frames = reader.atoms(slice(None))
    out = _summary(run_id, oracle, final, steps, p, frames, labels, kept, error, meta)
    if error is not None and raise_on_failure:
        raise OracleError(error)
    return out


def _evidence(evidence: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in evidence.items()) or "-"


def _labels(path: Path, oracle: str, plan: ReferencePlan, run_id: str) -> list:
    """The stored frames that are labels: the frame nearest every ``plan.label_every``-th step, before the
    held-out block."""
    from md.trajectory import TrajectoryReader

    if not plan.label_every:
        return []
    stride = plan.protocol.stride
    with TrajectoryReader(path) as reader:
        n = len(reader)
        discard = int(np.ceil(plan.protocol.discard_fs / (plan.protocol.timestep_fs * stride) - 1e-9))
        before = calibration_block(n, discard, plan.holdout_fraction)
        picked = sorted({int(step / stride + 0.5) for step in range(0, (before - 1) * stride + 1, plan.label_every)}
                        & set(range(before))) if before else []
        frames = reader.atoms(picked) if picked else []
    for frame in frames:
        step = frame.info.get("step")
        frame.info = {"oracle": oracle, "source": "oracle-md", "temperature_K": plan.temperature_K,
                      "run_id": run_id, **({"md_step": int(step)} if step is not None else {})}
    return frames


def _summary(run_id, oracle, path, steps, p: ReferencePlan, frames, labels, shard, error, meta) -> ReferenceRun:
    temps = [float(f.info.get("temperature_K")) for f in frames if f.info.get("temperature_K") is not None]
    energies = [float(f.calc.results["energy"]) for f in frames if f.calc is not None and "energy" in f.calc.results]
    last = frames[-1] if frames else None
    return ReferenceRun(run_id=run_id, oracle=oracle.name, trajectory=str(path), steps=int(steps), frames=len(frames),
                        labelled_frames=len(labels), mean_temperature_K=float(np.mean(temps)) if temps else None,
                        max_temperature_K=float(np.max(temps)) if temps else None,
                        potential_energy_eV=[energies[0], energies[-1]] if energies else None,
                        min_distance_A=_min_distance(last) if last is not None else None,
                        simulated_ps=steps * p.protocol.timestep_fs / 1000.0, shard=shard, error=error,
                        metadata=meta)


def _min_distance(atoms) -> float | None:
    from common.geometry import min_distance

    return min_distance(atoms.numbers, atoms.positions, atoms.cell[:], atoms.pbc, 4.0)
