"""Batched MD engine: integrators, thermostats, random streams, batching, resume, monitors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes

from md.integrators import maxwell_boltzmann, nose_hoover_energy
from md.monitors import MonitorConfig
from md.protocol import Protocol
from md.random import atom_normals
from md.runner import BatchedMD, SystemSpec, integrate
from md.state import MDState
from md.trajectory import TrajectoryReader
from models import AtomsBatch, LennardJones, Prediction

LJ = LennardJones(cutoff=5.0)   # argon-like, eV and Å (short cutoff keeps the tests cheap)


class BatchExactLJ(LennardJones):
    """LJ with (s/r)^6 by multiplication: ``x ** 6`` runs Sleef pow on full SIMD blocks and libm pow
    on the tail, so an edge's last bit would depend on its place in the batch's edge array."""

    def _pair(self, r):
        sr2 = (self.sigma / r) * (self.sigma / r)
        sr6 = sr2 * sr2 * sr2
        return 4 * self.epsilon * (sr6 * sr6 - sr6), 4 * self.epsilon * (-12 * sr6 * sr6 + 6 * sr6) / r


def argon(a=5.6, repeat=2):
    return bulk("Ar", "fcc", a=a, cubic=True).repeat(repeat)


class LJCalculator(Calculator):
    """ASE calculator around models.LennardJones (the reference path through ASE's own MD)."""
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        pred = LJ.predict(AtomsBatch.from_atoms(self.atoms, dtype=torch.float64))
        self.results = {"energy": float(pred.energy[0]), "forces": pred.forces.numpy()}


def test_maxwell_boltzmann_zero_momentum_exact_temperature():
    state = MDState.from_atoms([argon(), argon(repeat=1)], [300.0, 50.0], [1, 2])
    state = maxwell_boltzmann(state)
    np.testing.assert_allclose(state.temperature_K().numpy(), [300.0, 50.0], rtol=1e-12)
    np.testing.assert_allclose(state.com_velocity().numpy(), 0.0, atol=1e-15)


def test_counter_based_normals_are_standard_and_batch_independent():
    seed = torch.tensor([7, 11])
    step = torch.tensor([3, 3])
    n = 20000
    sys_idx = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)])
    atom_in = torch.cat([torch.arange(n), torch.arange(n)])
    z = atom_normals(seed, step, atom_in, sys_idx)
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
    assert abs(float(torch.corrcoef(torch.stack([z[:n, 0], z[n:, 0]]))[0, 1])) < 0.03
    alone = atom_normals(seed[1:], step[1:], atom_in[n:], torch.zeros(n, dtype=torch.long))
    assert torch.equal(alone, z[n:])


def test_nve_energy_conservation_and_agreement_with_ase_verlet():
    from ase.md.verlet import VelocityVerlet

    atoms = argon(a=5.26)
    state = maxwell_boltzmann(MDState.from_atoms([atoms], [60.0], [1]))
    start_v = state.velocities.clone()
    energies = []
    traj = []
    integrate(LJ, state, "nve", 1000, 5.0,
              callback=lambda s: (energies.append(float(s.potential_energy + s.kinetic_energy())),
                                  traj.append(s.positions.clone()) if len(traj) < 100 else None))
    energies = np.array(energies)
    drift_per_atom = np.abs(energies - energies[0]).max() / len(atoms)
    assert drift_per_atom < 5e-5, drift_per_atom        # eV/atom over 1000 steps of 5 fs

    ref = atoms.copy()
    ref.calc = LJCalculator()
    ref.set_velocities(start_v.numpy() / units.fs)      # Å/fs -> ASE units
    dyn = VelocityVerlet(ref, timestep=5.0 * units.fs)
    dyn.run(100)
    np.testing.assert_allclose(traj[99].numpy(), ref.positions, atol=1e-8)


@pytest.mark.parametrize("thermostat", ["nose-hoover", "langevin"])
def test_nvt_temperature_and_kinetic_energy_distribution(thermostat):
    """16 replicas of liquid LJ argon: <T> within 3 % of the target, Var(KE) = Nf (kT)^2 / 2."""
    target = 120.0
    state = maxwell_boltzmann(MDState.from_atoms([argon()] * 16, [target] * 16, list(range(16))))
    temps = []
    params = Protocol(langevin_friction_per_fs=0.02, nh_tau_fs=25.0)
    integrate(LJ, state, thermostat, 500, 5.0, params, callback=lambda s: temps.append(s.temperature_K()))
    t = torch.stack(temps)[100::5].flatten().numpy()
    nf = 3 * 32 - 3
    assert abs(t.mean() / target - 1) < 0.03
    assert 0.8 < t.var() / (2 * target ** 2 / nf) < 1.25


def test_nose_hoover_conserves_extended_energy():
    state = maxwell_boltzmann(MDState.from_atoms([argon(a=5.26)], [60.0], [3]))
    energies = []
    integrate(LJ, state, "nose-hoover", 300, 5.0, Protocol(nh_tau_fs=50.0),
              callback=lambda s: energies.append(float(s.potential_energy + s.kinetic_energy()
                                                       + nose_hoover_energy(s, 50.0))))
    assert np.ptp(energies) / 32 < 5e-5


def _specs():
    return [SystemSpec("a_120K", argon(), 120.0, 5), SystemSpec("b_60K", argon(a=5.3, repeat=1).repeat((2, 2, 1)), 60.0, 9),
            SystemSpec("c_90K", argon(), 90.0, 7)]


def _read_all(path):
    with TrajectoryReader(path) as r:
        return {k: r.read(k) for k in ("step", "positions", "unwrapped_positions", "potential_energy", "temperature_K")}


@pytest.mark.parametrize("thermostat", ["langevin", "nose-hoover"])
def test_batched_run_equals_systems_run_alone(tmp_path, thermostat):
    protocol = Protocol.study(timestep_fs=5.0, total_fs=300.0, ramp_fs=100.0, thermostat=thermostat, stride=5,
                              checkpoint_every=100)
    specs = _specs()
    ff = BatchExactLJ(cutoff=LJ.cutoff)
    batched = BatchedMD(ff, specs, protocol, tmp_path / "batch", device="cpu").run()
    assert [r.verdict for r in batched] == ["stable"] * 3
    for spec in specs:
        BatchedMD(ff, [spec], protocol, tmp_path / spec.name, device="cpu").run()
        together = _read_all(tmp_path / "batch" / f"{spec.name}.h5")
        alone = _read_all(tmp_path / spec.name / f"{spec.name}.h5")
        for key in together:
            np.testing.assert_array_equal(together[key], alone[key], err_msg=key)


class CrashingForceField:
    """LJ that raises on a given call, to simulate a killed job."""

    def __init__(self, crash_at: int):
        self.cutoff, self.calls, self.crash_at = LJ.cutoff, 0, crash_at

    def predict(self, batch, neighbors=None, compute_stress=False):
        self.calls += 1
        if self.calls == self.crash_at:
            raise KeyboardInterrupt("killed")
        return LJ.predict(batch, neighbors, compute_stress)


def test_resume_continues_without_duplicated_frames(tmp_path):
    protocol = Protocol.study(timestep_fs=5.0, total_fs=300.0, ramp_fs=100.0, stride=10, checkpoint_every=20)
    specs = _specs()[:2]
    BatchedMD(LJ, specs, protocol, tmp_path / "straight", device="cpu").run()
    with pytest.raises(KeyboardInterrupt):
        BatchedMD(CrashingForceField(crash_at=36), specs, protocol, tmp_path / "resumed", device="cpu").run()
    part = tmp_path / "resumed" / "a_120K.h5.part"
    with TrajectoryReader(part) as r:        # frame at step 30 was written after the checkpoint at 20
        assert r.read("step")[-1] == 30
    md = BatchedMD(LJ, specs, protocol, tmp_path / "resumed", device="cpu")
    results = md.run()
    assert [r.steps_done for r in results] == [60, 60]
    for spec in specs:
        straight = _read_all(tmp_path / "straight" / f"{spec.name}.h5")
        resumed = _read_all(tmp_path / "resumed" / f"{spec.name}.h5")
        np.testing.assert_array_equal(resumed["step"], np.arange(0, 61, 10))
        for key in straight:
            np.testing.assert_array_equal(straight[key], resumed[key], err_msg=key)
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert [s["verdict"] for s in summary["systems"]] == ["stable", "stable"]


class DriftingForceField:
    """LJ plus a constant push on the framework (non-Li) atoms of systems whose cell is 7.0 Å."""
    cutoff = LJ.cutoff

    def predict(self, batch, neighbors=None, compute_stress=False):
        pred = LJ.predict(batch, neighbors, compute_stress)
        forces = pred.forces.clone()
        push = (batch.cell[:, 0, 0] == 7.0)[batch.system_index] & (batch.numbers != 3)
        forces[push, 0] += 0.05
        nan = (batch.cell[:, 0, 0] == 7.5)[batch.system_index]
        forces[nan] = float("nan")
        energy = pred.energy.clone()
        return Prediction(energy=energy, forces=forces, stress=pred.stress)


def test_monitors_stop_failing_systems_and_spare_good_ones(tmp_path):
    from ase import Atoms

    good = argon()
    fused = argon()
    fused.positions[1] = fused.positions[0] + [0.4, 0.0, 0.0]           # Ar-Ar at 0.4 Å
    hot = argon()
    hot.rattle(0.7, seed=3)                                             # Ar-Ar pairs near 2.3 Å: heats up
    drifting = Atoms("Ar4Li4", cell=np.eye(3) * 7.0, pbc=True,
                     scaled_positions=np.random.default_rng(0).random((8, 3)) * 0.0
                     + np.array([[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5],
                                 [.5, .5, .5], [0, 0, .5], [0, .5, 0], [.5, 0, 0]]))
    nan = argon(a=7.5 / 2, repeat=1).repeat((2, 2, 2))
    specs = [SystemSpec("good", good, 60.0, 1), SystemSpec("fused", fused, 60.0, 2), SystemSpec("hot", hot, 60.0, 3),
             SystemSpec("drift", drifting, 60.0, 4), SystemSpec("nan", nan, 60.0, 5)]
    protocol = Protocol.nve(timestep_fs=5.0, total_fs=1000.0, stride=10, checkpoint_every=100)
    monitor = MonitorConfig(framework_drift_A=0.5, check_every=5)
    results = {r.name: r for r in BatchedMD(DriftingForceField(), specs, protocol, tmp_path, device="cpu",
                                            monitor=monitor).run()}
    assert results["good"].verdict == "stable" and results["good"].steps_done == 200
    assert results["fused"].verdict == "atom_fusion" and results["fused"].failure_step == 0
    assert results["fused"].evidence["pair"] == "Ar-Ar" and results["fused"].evidence["min_distance_A"] < 0.5
    assert results["hot"].verdict == "exploded" and results["hot"].evidence["temperature_K"] > 1000
    assert results["drift"].verdict == "framework_drift" and results["drift"].evidence["framework_drift_A"] > 0.5
    assert results["nan"].verdict == "exploded" and results["nan"].failure_step == 0
    assert results["nan"].evidence["nonfinite"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {s["name"]: s["failure_step"] for s in summary["systems"]}["good"] is None
    with TrajectoryReader(tmp_path / "good.h5") as r:
        assert len(r) == 21


def test_study_protocol_numbers():
    p = Protocol.study()
    assert (p.start_temperature_K, p.ramp_fs, p.thermostat, p.timestep_fs, p.total_fs, p.discard_fs) == \
        (100.0, 5000.0, "nose-hoover", 2.0, 50000.0, 15000.0)
    assert p.n_steps == 25000 and p.ramp_steps == 2500 and p.discard_frames == 750
    assert Protocol.study(total_fs=1000.0).n_steps == 500


def test_md_cli_with_a_model_checkpoint_and_ase_agreement(tmp_path, lgps_atoms):
    """A (tiny, untrained) SchNet checkpoint through `matscreen md`; the batched NVE step equals ASE's."""
    import ase.io
    from ase.md.verlet import VelocityVerlet

    from models import MLFFCalculator, build_model, load_model, save_model
    from orchestrator.cli import main

    model = build_model("schnet", elements=sorted(set(lgps_atoms.numbers)), dtype="float64", seed=0,
                        hidden_channels=8, num_filters=8, num_interactions=1, num_gaussians=8)
    ckpt = save_model(model, tmp_path / "ff.pt")
    structure = tmp_path / "lgps.cif"
    ase.io.write(structure, lgps_atoms)
    rc = main(["md", "--model", str(ckpt), "--structure", str(structure), "--temperatures", "800",
               "--replicas", "1", "--steps", "4", "--dt-fs", "1", "--protocol", "nve", "--stride", "2",
               "--out", str(tmp_path / "run")])
    assert rc == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["systems"][0]["name"] == "800K_r0" and summary["systems"][0]["n_frames"] == 3

    ff = load_model(ckpt, dtype="float64")
    state = maxwell_boltzmann(MDState.from_atoms([lgps_atoms], [800.0], [0]))
    ref = lgps_atoms.copy()
    ref.set_velocities(state.velocities.numpy() / units.fs)
    out = integrate(ff, state, "nve", 3, 1.0)
    ref.calc = MLFFCalculator(ff)
    VelocityVerlet(ref, timestep=1.0 * units.fs).run(3)
    np.testing.assert_allclose(out.positions.numpy(), ref.positions, atol=1e-9)


def test_same_seed_gives_bit_identical_md_on_two_threads(tmp_path):
    """Threaded scatter kernels would round differently from run to run and chaos would grow it (0.25 Å in
    1000 steps of the demo's student); the runner switches on torch's deterministic kernels on the CPU."""
    import models

    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat((2, 2, 2))
    model = models.build_model("painn", elements=[11, 17], seed=0, hidden_channels=16, num_interactions=2)
    ff = models.Ensemble([model]).eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        finals = []
        for k in range(2):
            md = BatchedMD(ff, [SystemSpec("a", atoms, 600.0, seed=1), SystemSpec("b", atoms, 900.0, seed=2)],
                           Protocol(ramp_fs=0.0, thermostat="langevin", timestep_fs=1.0, checkpoint_every=10 ** 9),
                           tmp_path / f"run{k}", device="cpu", monitor=MonitorConfig(check_every=10 ** 9))
            md.run(n_steps=150)
            finals.append(md.state.positions.clone())
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(finals[0], finals[1])
    assert not torch.are_deterministic_algorithms_enabled()        # restored after the run


def test_ensemble_members_run_at_once_with_the_same_numbers(tmp_path):
    """On 2 CPU threads the runner evaluates a 2-member ensemble's members concurrently, one per thread
    (models.ensemble.concurrent_members): the trajectory is bit-identical to members one after another,
    the members really ran in two threads, and torch's thread count is restored afterwards."""
    import threading

    import models
    from models.ensemble import concurrent_members

    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat((2, 2, 2))
    members = [models.build_model("painn", elements=[11, 17], seed=s, hidden_channels=16, num_interactions=2)
               for s in range(2)]
    seen = set()
    original = members[0].predict

    def spy(*args, **kwargs):
        seen.add(threading.current_thread().name)
        return original(*args, **kwargs)

    members[0].predict = spy
    ff = models.Ensemble(members).eval()
    threads = torch.get_num_threads()
    finals = []
    try:
        for k, n in enumerate((1, 2)):     # 1 thread: members one after another; 2: at once
            torch.set_num_threads(n)
            md = BatchedMD(ff, [SystemSpec("a", atoms, 600.0, seed=1), SystemSpec("b", atoms, 900.0, seed=2)],
                           Protocol(ramp_fs=0.0, thermostat="langevin", timestep_fs=1.0, checkpoint_every=10 ** 9),
                           tmp_path / f"run{k}", device="cpu", monitor=MonitorConfig(check_every=10 ** 9))
            md.run(n_steps=100)
            finals.append((md.state.positions.clone(), md.deviation.clone()))
            assert torch.get_num_threads() == n                   # restored after the run
        with concurrent_members(ff, threads=2):
            assert ff._pool is not None
        assert ff._pool is None
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(finals[0][0], finals[1][0]) and torch.equal(finals[0][1], finals[1][1])
    assert any(name.startswith("member") for name in seen)         # the 2-thread run used the pool
    assert threading.current_thread().name in seen                  # the 1-thread run did not


def test_an_ase_calculator_in_the_engine_gives_the_force_fields_own_trajectory(tmp_path):
    """Oracle MD runs in the students' engine: a force field wrapped as an ASE calculator and brought back by
    the adapter (models.ase_field) integrates to the same trajectory as the force field itself."""
    from models.ase_field import CalculatorForceField

    protocol = Protocol.nvt(timestep_fs=5.0, total_fs=200.0, thermostat="langevin", stride=5, checkpoint_every=100)
    spec = SystemSpec("a_120K", argon(), 120.0, 5)
    direct = BatchedMD(LJ, [spec], protocol, tmp_path / "direct", device="cpu").run()
    adapted = CalculatorForceField(LJCalculator(), cutoff_A=LJ.cutoff)
    wrapped = BatchedMD(adapted, [spec], protocol, tmp_path / "adapted", device="cpu", write_forces=True).run()
    assert direct[0].verdict == wrapped[0].verdict == "stable"
    a, b = _read_all(tmp_path / "direct" / "a_120K.h5"), _read_all(tmp_path / "adapted" / "a_120K.h5")
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-9, atol=1e-9, err_msg=key)
    with TrajectoryReader(tmp_path / "adapted" / "a_120K.h5") as r:
        assert r.read("forces").shape == (len(a["step"]), len(spec.atoms), 3)


def test_the_oracle_reference_and_the_students_exploration_share_one_protocol():
    from orchestrator.campaign.spec import validate

    spec = validate({"md": {"protocol": {"thermostat": "langevin", "timestep_fs": 2.0, "stride": 5},
                            "reference_steps": 400, "equilibration_steps": 100}})
    plan = spec.reference_plan()
    assert plan.protocol == spec.md.run_protocol(spec.exploration_steps(), spec.md.equilibration_steps)
    assert plan.temperature_K == spec.reference_temperature() and plan.steps == 400
