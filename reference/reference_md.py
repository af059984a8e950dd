"""Reference MD with an oracle through ASE: reference trajectories (for the RDF check) and labels.

Protocol (scaled-down and configurable): Maxwell-Boltzmann velocities at ``temperature_K``,
Langevin NVT (``friction_per_fs``) or NVE (``ensemble='nve'``) with ``timestep_fs``; every
``stride`` steps a trajectory frame (md.trajectory file: wrapped + unwrapped positions, cell,
energies, T, forces); every ``label_every`` steps a labelled frame (oracle forces, energy, stress)
appended to the data store, except in the final ``holdout_fraction`` of the run after the equilibration:
that block is never trained on, so the ensemble's deviation there is out of sample (it calibrates the trust
levels: :func:`calibration_block`).
"""
from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field

import numpy as np

from common.errors import InputError
from reference.oracles import OracleError


@dataclass
class ReferenceMDProtocol:
    temperature_K: float = 600.0
    steps: int = 1000
    timestep_fs: float = 2.0
    ensemble: str = "nvt"            # nvt (Langevin) | nve (velocity Verlet)
    friction_per_fs: float = 0.01
    stride: int = 10                 # steps between trajectory frames
    label_every: int = 50            # steps between labelled frames (0: none)
    seed: int = 0
    discard_fs: float = 0.0          # equilibration every analysis of the trajectory drops (fs)
    holdout_fraction: float = 0.0    # final fraction after the equilibration never labelled (calibration block)

    def validate(self) -> "ReferenceMDProtocol":
        if self.steps < 1 or self.timestep_fs <= 0 or self.stride < 1 or self.label_every < 0:
            raise InputError("reference MD needs steps >= 1, timestep_fs > 0, stride >= 1, label_every >= 0; "
                             "fix the protocol")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise InputError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.temperature_K <= 0:
            raise InputError(f"temperature_K must be > 0 (got {self.temperature_K})")
        if self.ensemble not in ("nvt", "nve"):
            raise InputError(f"ensemble {self.ensemble!r} unknown; use nvt or nve")
        return self


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


def run_reference_md(atoms, oracle, protocol: ReferenceMDProtocol, trajectory_path, store=None,
                     run_id: str | None = None, metadata: dict | None = None, shard: str | None = None,
                     raise_on_failure: bool = True) -> ReferenceRun:
    """Run oracle MD on a copy of ``atoms``: a trajectory file, labels in ``store``, and a :class:`ReferenceRun`.

    ``shard``: store the labels as that deterministic shard (``LabelStore.write_shard``: a rerun rewrites
    it) instead of a new one.  An oracle failure mid-run keeps the labels made so far and raises
    :class:`OracleError`, or with ``raise_on_failure=False`` returns the run with ``error`` set.
    """
    from ase import units
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    from md.trajectory import TrajectoryWriter, unwrap_step

    p = protocol.validate()
    run_id = run_id or f"refmd-{uuid.uuid4().hex[:8]}"
    label_before = calibration_block(p.steps + 1, int(np.ceil(p.discard_fs / p.timestep_fs - 1e-9)),
                                     p.holdout_fraction)
    work = atoms.copy()
    work.calc = oracle.calculator
    rng = np.random.default_rng(p.seed)
    MaxwellBoltzmannDistribution(work, temperature_K=p.temperature_K, rng=rng)
    Stationary(work)
    if p.ensemble == "nvt":
        dyn = Langevin(work, timestep=p.timestep_fs * units.fs, temperature_K=p.temperature_K,
                       friction=p.friction_per_fs / units.fs, rng=rng)
    else:
        dyn = VelocityVerlet(work, timestep=p.timestep_fs * units.fs)
    meta = {"kind": "oracle-reference", "oracle": oracle.name, "run_id": run_id, "protocol": asdict(p),
            **(metadata or {})}
    labels: list = []
    temps: list[float] = []
    energies: list[float] = []
    state = {"unwrapped": None}

    with TrajectoryWriter(trajectory_path, work.numbers, timestep_fs=p.timestep_fs, stride=p.stride,
                          temperature_K=p.temperature_K, pbc=work.pbc, metadata=meta, forces=True) as writer:

        def observe():
            step = dyn.nsteps
            epot = float(work.get_potential_energy())
            forces = work.get_forces()
            if not np.isfinite(epot) or not np.isfinite(forces).all():
                raise RuntimeError(f"oracle {oracle.name} returned non-finite energy/forces at step {step}")
            if step % p.stride == 0:
                wrapped = work.get_positions(wrap=True)
                prev = state["unwrapped"]
                unwrapped = work.get_positions() if prev is None else unwrap_step(prev, wrapped, work.cell[:])
                state["unwrapped"] = unwrapped
                t = float(work.get_temperature())
                temps.append(t)
                energies.append(epot)
                writer.append(step=step, positions=wrapped, unwrapped_positions=unwrapped, cell=work.cell[:],
                              potential_energy=epot, kinetic_energy=float(work.get_kinetic_energy()),
                              temperature_K=t, forces=forces)
            if p.label_every and step % p.label_every == 0 and step < label_before:
                frame = work.copy()
                kw = {}
                if "stress" in (oracle.calculator.results or {}):
                    kw["stress"] = np.array(oracle.calculator.results["stress"])
                frame.calc = SinglePointCalculator(frame, energy=epot, forces=np.array(forces), **kw)
                frame.info = {"oracle": oracle.name, "source": "oracle-md", "temperature_K": p.temperature_K,
                              "run_id": run_id, "md_step": int(step)}
                labels.append(frame)

        def keep_labels() -> str | None:
            if store is None or not labels:
                return None
            return str(store.write_shard(shard, labels) if shard else store.append(labels))

        dyn.attach(observe, interval=1)
        try:
            dyn.run(p.steps)  # ASE calls the observer at step 0 too
        except Exception as exc:  # noqa: BLE001 - oracle failure mid-run: keep what was labelled
            kept = keep_labels()
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            error = OracleError(f"oracle {oracle.name} failed at MD step {dyn.nsteps} ({type(exc).__name__}: "
                                f"{msg[:200]}); {len(labels)} labelled frames were stored, the trajectory is "
                                f"left as {trajectory_path}.part")
            if raise_on_failure:
                raise error from exc
            writer.close(finalize=False)
            return _summary(run_id, oracle, trajectory_path, dyn.nsteps, p, temps, energies, labels, work, kept,
                            str(error), meta)
    return _summary(run_id, oracle, trajectory_path, p.steps, p, temps, energies, labels, work, keep_labels(), None,
                    meta)


def _summary(run_id, oracle, path, steps, p, temps, energies, labels, work, shard, error, meta) -> ReferenceRun:
    return ReferenceRun(run_id=run_id, oracle=oracle.name, trajectory=str(path), steps=int(steps), frames=len(temps),
                        labelled_frames=len(labels), mean_temperature_K=float(np.mean(temps)) if temps else None,
                        max_temperature_K=float(np.max(temps)) if temps else None,
                        potential_energy_eV=[energies[0], energies[-1]] if energies else None,
                        min_distance_A=_min_distance(work), simulated_ps=steps * p.timestep_fs / 1000.0,
                        shard=shard, error=error, metadata=meta)


def _min_distance(atoms) -> float | None:
    from common.geometry import min_distance

    return min_distance(atoms.numbers, atoms.positions, atoms.cell[:], atoms.pbc, 4.0)
