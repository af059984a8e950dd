"""Run many systems (replicas x temperatures x materials) as ONE batch: one force-field call per step.

Each system has its own cell, atom count, target temperature, thermostat chain and random
stream; each writes its own trajectory (``<out_dir>/<name>.h5``).  With an ensemble force field
every stored frame also records its max atomic force deviation (``force_deviation_max``, eV/Å),
and each file records the engine's verdict (``metadata['verdict']``).  The run checkpoints
atomically (``checkpoint.pt``) and resumes from it: the step count continues and no frame is
duplicated.  Live monitors stop a failing system with a verdict and the step it failed at,
while the others go on.  On a CPU an ensemble's members run at once, one per torch thread
(``models.ensemble.concurrent_members``: the same numbers, ~0.6x the wall time on 2 cores).
Units: Å, fs, eV, K.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from common.atomic import atomic_path, atomic_write_text, check_writable
from common.errors import InputError
from md.integrators import (INTEGRATORS, LANGEVIN, NOSE_HOOVER, VELOCITY_SCALING, VELOCITY_VERLET,
                            maxwell_boltzmann, ramp_temperature_K)
from md.monitors import OK, VERDICT_NAMES, MonitorConfig, check, framework_com, nonfinite
from md.neighbors import VerletList
from md.protocol import Protocol
from md.state import MDState
from md.trajectory import TrajectoryWriter
from common.progress import report as report_progress
from models.ensemble import concurrent_members
from models.graph import NeighborList

CHECKPOINT_NAME = "checkpoint.pt"
SUMMARY_NAME = "summary.json"


@dataclass
class SystemSpec:
    """One system to simulate: a structure, its target temperature (K) and random seed."""
    name: str
    atoms: object                     # ase.Atoms
    temperature_K: float
    seed: int
    metadata: dict = field(default_factory=dict)


@dataclass
class SystemResult:
    name: str
    temperature_K: float
    seed: int
    verdict: str                      # stable | exploded | atom_fusion | framework_drift
    failure_step: int | None
    steps_done: int
    n_frames: int
    trajectory: str
    evidence: dict = field(default_factory=dict)
    simulated_ps: float = 0.0          # steps_done x timestep

    def to_dict(self) -> dict:
        from common.vocabulary import jsonable

        return jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "SystemResult":
        return cls(**d)


def wrap(positions: np.ndarray, cell: np.ndarray, pbc) -> np.ndarray:
    """Positions (Å) wrapped into ``cell`` along periodic axes (per system, so batch-independent)."""
    inv = np.linalg.inv(cell)
    # explicit sums (not BLAS): the result must not depend on the array's place in a bigger batch
    frac = positions[:, 0:1] * inv[0] + positions[:, 1:2] * inv[1] + positions[:, 2:3] * inv[2]
    frac = np.where(np.asarray(pbc, bool), frac - np.floor(frac), frac)
    return frac[:, 0:1] * cell[0] + frac[:, 1:2] * cell[1] + frac[:, 2:3] * cell[2]


def model_dtype(force_field) -> torch.dtype | None:
    """The float dtype a torch force field computes in (None for dtype-agnostic ones)."""
    if getattr(force_field, "dtype", None) is not None and isinstance(force_field.dtype, torch.dtype):
        return force_field.dtype
    params = getattr(force_field, "parameters", None)
    if callable(params):
        for p in params():
            return p.dtype
    return None


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@contextmanager
def deterministic_kernels(device: str):
    """torch's deterministic algorithms for the duration of a CPU run, restored afterwards.

    Contract: the same inputs give bit-identical CPU trajectories (threaded scatter kernels would add in a
    different order each run, and chaotic MD amplifies that).  Not on CUDA, where several kernels have no
    deterministic version (torch would raise).
    """
    if not str(device).startswith("cpu"):
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


class BatchedMD:
    """Integrate ``systems`` together under ``protocol`` with ``force_field`` (a models ForceField)."""

    def __init__(self, force_field, systems: Sequence[SystemSpec], protocol: Protocol, out_dir, *,
                 monitor: MonitorConfig = MonitorConfig(), device: str | None = None, dtype=torch.float64,
                 write_velocities: bool = False, write_stress: bool = False, write_forces: bool = False,
                 metadata: dict | None = None):
        if not systems:
            raise InputError("no systems to simulate; give at least one structure and temperature")
        names = [s.name for s in systems]
        if len(set(names)) != len(names):
            raise InputError(f"system names must be unique, got {names}")
        self.ff = force_field
        self.systems = list(systems)
        self.protocol = protocol
        self.out_dir = Path(out_dir)
        check_writable(self.out_dir / SUMMARY_NAME)
        self.monitor = monitor
        self.device = device or default_device()
        self.dtype = dtype
        self.ff_dtype = model_dtype(force_field)
        self.write_velocities = write_velocities
        self.write_stress = write_stress
        self.write_forces = write_forces
        self.metadata = dict(metadata or {})
        self.params = protocol          # the integrators read their thermostat settings from the protocol
        self.force_calls = 0
        self.deviation: torch.Tensor | None = None      # [S] eV/Å of the current state (ensembles only)
        self.verlet = VerletList(force_field.cutoff, protocol.skin_A)

    # ---------------------------------------------------------------------------------- helpers
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def trajectory_path(self, name: str) -> Path:
        return self.out_dir / f"{name}.h5"

    def compute_forces(self, state: MDState) -> MDState:
        """The single force-field call per step for the whole batch."""
        batch = state.as_batch(self.ff_dtype)
        nl = self.verlet.update(state.as_batch())
        if nl.shifts.dtype != batch.dtype:
            nl = NeighborList(edge_index=nl.edge_index, shifts=nl.shifts.to(batch.dtype), cutoff=nl.cutoff)
        pred = self.ff.predict(batch, neighbors=nl, compute_stress=self.write_stress)
        self.force_calls += 1
        if pred.force_std is not None:      # an ensemble: per-system max atomic deviation (eV/Å)
            std = pred.force_std.detach().to(self.dtype)
            self.deviation = torch.zeros(state.n_systems, dtype=self.dtype, device=std.device).scatter_reduce(
                0, state.system_index, std, "amax", include_self=True)
        stress = None if pred.stress is None else pred.stress.detach().to(self.dtype)
        return state.replace(forces=pred.forces.detach().to(self.dtype),
                             potential_energy=pred.energy.detach().to(self.dtype), stress=stress)

    def integrator_at(self, step: int):
        if step < self.protocol.ramp_steps:
            return VELOCITY_SCALING
        return {"nose-hoover": NOSE_HOOVER, "langevin": LANGEVIN, "nve": VELOCITY_VERLET}[self.protocol.thermostat]

    def targets_at(self, step: int) -> torch.Tensor:
        p = self.protocol
        if step >= p.ramp_steps:
            return self.final_T
        t = torch.full_like(self.final_T, step * p.timestep_fs)
        return ramp_temperature_K(torch.full_like(self.final_T, p.start_temperature_K), self.final_T, t, p.ramp_fs)

    # ----------------------------------------------------------------------------- setup/resume
    def _initialise(self) -> None:
        p = self.protocol
        atoms = [s.atoms for s in self.systems]
        temps = [s.temperature_K for s in self.systems]
        seeds = [s.seed for s in self.systems]
        state = MDState.from_atoms(atoms, temps, seeds, dtype=self.dtype, device=self.device,
                                   chain_length=p.nh_chain_length)
        self.final_T = state.target_temperature_K.clone()
        init_T = self.targets_at(0) if p.ramp_steps > 0 else self.final_T
        state = state.replace(target_temperature_K=init_T.clone())
        state = maxwell_boltzmann(state, init_T)
        self.verlet.reset()
        self.state = self.compute_forces(state)
        self.active = list(range(len(self.systems)))
        self.reference_com = framework_com(self.state, self.monitor.mobile_species)
        self.results: dict[int, SystemResult] = {}
        self.global_step = 0
        self.writers = {}
        for k, spec in enumerate(self.systems):
            meta = {**self.metadata, **spec.metadata, "system": spec.name, "seed": spec.seed,
                    "protocol": p.to_dict(), "n_atoms": len(spec.atoms)}
            self.writers[k] = TrajectoryWriter(self.trajectory_path(spec.name), spec.atoms.numbers,
                                               timestep_fs=p.timestep_fs, stride=p.stride,
                                               temperature_K=spec.temperature_K, pbc=spec.atoms.pbc, metadata=meta,
                                               velocities=self.write_velocities, stress=self.write_stress,
                                               forces=self.write_forces, force_deviation=self.deviation is not None)
        self._unwrapped_offsets = None
        self._check_initial()
        self._write_frames()

    def _check_initial(self) -> None:
        self._handle(check(self.state, self.verlet.update(self.state.as_batch()), self.reference_com, self.monitor))

    def _save_checkpoint(self) -> None:
        for w in self.writers.values():
            w.flush()
        payload = {
            "format": "matscreen-md-checkpoint", "version": 1, "global_step": self.global_step,
            "state": self.state.state_dict(), "final_T": self.final_T.cpu(), "active": list(self.active),
            "reference_com": self.reference_com.cpu(), "verlet": self.verlet.state_dict(),
            "results": {k: asdict(r) for k, r in self.results.items()},
            "systems": [s.name for s in self.systems], "protocol": self.protocol.to_dict(),
            "force_calls": self.force_calls,
            "deviation": None if self.deviation is None else self.deviation.cpu(),
        }
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(payload, tmp)

    def _load_checkpoint(self) -> None:
        try:
            data = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise InputError(f"cannot read MD checkpoint {self.checkpoint_path} ({type(exc).__name__}); "
                             "delete it to start over") from None
        if data.get("systems") != [s.name for s in self.systems]:
            raise InputError(f"checkpoint {self.checkpoint_path} belongs to systems {data.get('systems')}; "
                             "use a fresh --out directory or the same systems")
        saved = {k: v for k, v in data["protocol"].items() if k not in ("total_fs", "checkpoint_every")}
        mine = {k: v for k, v in self.protocol.to_dict().items() if k not in ("total_fs", "checkpoint_every")}
        if saved != mine:
            raise InputError(f"checkpoint {self.checkpoint_path} was written with a different protocol; "
                             "use a fresh --out directory or the same settings")
        self.global_step = int(data["global_step"])
        self.state = MDState.from_state_dict(data["state"], self.device)
        self.final_T = data["final_T"].to(self.device)
        self.active = list(data["active"])
        self.reference_com = data["reference_com"].to(self.device)
        self.verlet.load_state_dict(data["verlet"], self.device)
        self.results = {int(k): SystemResult(**r) for k, r in data["results"].items()}
        self.force_calls = int(data.get("force_calls", 0))
        self.deviation = None if data.get("deviation") is None else data["deviation"].to(self.device)
        self.writers = {}
        for k in self.active:
            self.writers[k] = TrajectoryWriter.resume(self.trajectory_path(self.systems[k].name),
                                                      after_step=self.global_step)

    # -------------------------------------------------------------------------------- per step
    def _write_frames(self) -> None:
        st = self.state
        unwrapped = st.positions.detach().cpu().numpy()
        pbc = st.pbc.cpu().numpy()
        cell = st.cell.cpu().numpy()
        pe = st.potential_energy.cpu().numpy()
        ke = st.kinetic_energy().cpu().numpy()
        temp = st.temperature_K().cpu().numpy()
        vel = st.velocities.cpu().numpy() if self.write_velocities else None
        forces = st.forces.detach().cpu().numpy() if self.write_forces else None
        stress = st.stress.cpu().numpy() if self.write_stress and st.stress is not None else None
        deviation = self.deviation.cpu().numpy() if self.deviation is not None else None
        counts = st.atoms_per_system.cpu().numpy()
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        for row, k in enumerate(self.active):
            a, b = starts[row], starts[row] + counts[row]
            extra = {}
            if vel is not None:
                extra["velocities"] = vel[a:b]
            if forces is not None:
                extra["forces"] = forces[a:b]
            if self.write_stress:
                extra["stress"] = stress[row] if stress is not None else np.full((3, 3), np.nan)
            if deviation is not None:
                extra["force_deviation_max"] = deviation[row]
            self.writers[k].append(step=self.global_step, positions=wrap(unwrapped[a:b], cell[row], pbc[row]),
                                   unwrapped_positions=unwrapped[a:b],
                                   cell=cell[row], potential_energy=pe[row], kinetic_energy=ke[row],
                                   temperature_K=temp[row], **extra)

    def _handle(self, result) -> None:
        """Stop the systems whose monitor code is not OK."""
        codes = result.code.cpu().tolist()
        failing = [row for row, c in enumerate(codes) if c != OK]
        if not failing:
            return
        for row in failing:
            k = self.active[row]
            spec = self.systems[k]
            writer = self.writers.pop(k)
            n_frames = writer.n_frames
            writer.set_metadata(verdict={"status": VERDICT_NAMES[codes[row]], "failure_step": self.global_step,
                                         "evidence": result.evidence[row]})
            writer.close()
            self.results[k] = SystemResult(name=spec.name, temperature_K=spec.temperature_K, seed=spec.seed,
                                           verdict=VERDICT_NAMES[codes[row]], failure_step=self.global_step,
                                           steps_done=self.global_step, n_frames=n_frames,
                                           trajectory=str(self.trajectory_path(spec.name)),
                                           evidence=result.evidence[row], simulated_ps=self._ps())
        keep = torch.as_tensor([c == OK for c in codes], device=self.state.device)
        self.state = self.state.select(keep)
        if self.deviation is not None:
            self.deviation = self.deviation[keep]
        self.final_T = self.final_T[keep]
        self.reference_com = self.reference_com[keep]
        self.verlet.select(keep.cpu())
        self.active = [k for k, ok in zip(self.active, keep.tolist()) if ok]

    def step(self) -> None:
        """Advance every active system by one timestep (one force-field call)."""
        p = self.protocol
        integ = self.integrator_at(self.global_step)
        self.state = self.state.replace(target_temperature_K=self.targets_at(self.global_step + 1)
                                        if integ is VELOCITY_SCALING else self.final_T)
        state = integ.first_half(self.state, p.timestep_fs, self.params)
        state = self.compute_forces(state)
        self.state = integ.second_half(state, p.timestep_fs, self.params)
        self.global_step += 1
        bad = nonfinite(self.state)
        if bool(bad.any()) or self.global_step % self.monitor.check_every == 0:
            self._handle(check(self.state, self.verlet.update(self.state.as_batch()), self.reference_com,
                               self.monitor))

    # ------------------------------------------------------------------------------------ run
    def run(self, n_steps: int | None = None, resume: bool = True, progress=None) -> list[SystemResult]:
        """Integrate until step ``n_steps`` (default: the protocol's length); returns one result per system.

        With ``resume`` an existing checkpoint in ``out_dir`` is continued; otherwise it is an error.
        ``progress(step, n_active)`` is called after every checkpoint when given.
        """
        with deterministic_kernels(self.device), concurrent_members(self.ff):
            return self._run(self.protocol.n_steps if n_steps is None else int(n_steps), resume, progress)

    def _run(self, n_steps: int, resume: bool, progress) -> list[SystemResult]:
        if self.checkpoint_path.exists():
            if not resume:
                raise InputError(f"{self.checkpoint_path} exists; resume, or choose an empty --out directory")
            self._load_checkpoint()
        else:
            self._initialise()
            self._save_checkpoint()
        p = self.protocol
        task = "oracle MD" if str(getattr(self.ff, "name", "")).startswith("oracle") else "student MD"
        ps_per_step = p.timestep_fs / 1000.0
        try:
            while self.global_step < n_steps and self.active:
                self.step()
                if self.global_step % p.stride == 0 and self.active:
                    self._write_frames()
                    report_progress(task, self.global_step * ps_per_step, n_steps * ps_per_step, "ps",
                                    systems=len(self.active))
                if self.global_step % p.checkpoint_every == 0:
                    self._save_checkpoint()
                    if progress is not None:
                        progress(self.global_step, len(self.active))
        except BaseException:
            for w in self.writers.values():   # keep .part files for resume
                w.close(finalize=False)
            self.writers = {}
            raise
        self._save_checkpoint()
        report_progress(task, self.global_step * ps_per_step, n_steps * ps_per_step, "ps", final=True,
                        systems=len(self.active))
        for k in list(self.active):
            spec = self.systems[k]
            writer = self.writers.pop(k)
            self.results[k] = SystemResult(name=spec.name, temperature_K=spec.temperature_K, seed=spec.seed,
                                           verdict="stable", failure_step=None, steps_done=self.global_step,
                                           n_frames=writer.n_frames, trajectory=str(self.trajectory_path(spec.name)),
                                           simulated_ps=self._ps())
            writer.set_metadata(verdict={"status": "stable", "failure_step": None, "evidence": {}})
            writer.close()
        results = [self.results[k] for k in range(len(self.systems))]
        self.write_summary(results)
        return results

    def _ps(self) -> float:
        return self.global_step * self.protocol.timestep_fs / 1000.0

    def write_summary(self, results: list[SystemResult]) -> Path:
        summary = {
            "protocol": self.protocol.to_dict(), "steps": self.global_step, "force_calls": self.force_calls,
            "metadata": self.metadata,
            "systems": [asdict(r) for r in results],
        }
        return atomic_write_text(self.out_dir / SUMMARY_NAME, json.dumps(summary, indent=2, default=float) + "\n")


def run_temperatures(force_field, atoms, temperatures_K: Sequence[float], replicas: int, protocol: Protocol,
                     out_dir, *, seed: int = 0, monitor: MonitorConfig = MonitorConfig(), device: str | None = None,
                     n_steps: int | None = None, metadata: dict | None = None, write_velocities: bool = False,
                     progress=None) -> list[SystemResult]:
    """Every temperature x replica of one structure (ase.Atoms) as ONE batch (resumes from ``out_dir``).

    Systems are named ``<T>K_r<k>`` (trajectories ``<out_dir>/<T>K_r<k>.h5``) and seeded ``seed + i``
    for the i-th system, temperatures outermost.  The one MLFF-MD entry point of the campaign, the
    benchmark and ``matscreen md``.
    """
    if replicas < 1:
        raise InputError(f"replicas must be >= 1, got {replicas}")
    systems = []
    for t in temperatures_K:
        for r in range(replicas):
            systems.append(SystemSpec(name=f"{float(t):g}K_r{r}", atoms=atoms, temperature_K=float(t),
                                      seed=int(seed) + len(systems), metadata={"replica": r}))
    runner = BatchedMD(force_field, systems, protocol, out_dir, monitor=monitor, device=device,
                       write_velocities=write_velocities, metadata=metadata)
    return runner.run(n_steps=n_steps, progress=progress)


def integrate(force_field, state: MDState, integrator, n_steps: int, dt_fs: float,
              params: Protocol = Protocol(), skin_A: float = 1.0, callback=None) -> MDState:
    """Plain in-memory integration (no files, no monitors): ``n_steps`` of ``integrator``.

    ``integrator`` is an :class:`md.integrators.Integrator` or its name; ``callback(state)`` runs
    after every step.  Forces are computed first if the state has none.
    """
    with deterministic_kernels(str(state.positions.device)), concurrent_members(force_field):
        return _integrate(force_field, state, integrator, n_steps, dt_fs, params, skin_A, callback)


def _integrate(force_field, state, integrator, n_steps, dt_fs, params, skin_A, callback) -> MDState:
    integ = INTEGRATORS[integrator] if isinstance(integrator, str) else integrator
    verlet = VerletList(force_field.cutoff, skin_A)
    dtype = model_dtype(force_field)

    def forces(st: MDState) -> MDState:
        batch = st.as_batch(dtype)
        nl = verlet.update(st.as_batch())
        if nl.shifts.dtype != batch.dtype:
            nl = NeighborList(edge_index=nl.edge_index, shifts=nl.shifts.to(batch.dtype), cutoff=nl.cutoff)
        pred = force_field.predict(batch, neighbors=nl)
        return st.replace(forces=pred.forces.detach().to(st.positions.dtype),
                          potential_energy=pred.energy.detach().to(st.positions.dtype))

    if state.forces is None:
        state = forces(state)
    for _ in range(int(n_steps)):
        state = integ.first_half(state, dt_fs, params)
        state = forces(state)
        state = integ.second_half(state, dt_fs, params)
        if callback is not None:
            callback(state)
    return state
