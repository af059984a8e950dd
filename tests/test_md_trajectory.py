"""HDF5 trajectory files: schema, append/resume, ASE plugin, bad files."""
from __future__ import annotations

import ase.io
import h5py
import numpy as np
import pytest
from ase.build import bulk

from common import InputError
from md.trajectory import TrajectoryReader, TrajectoryWriter, part_path, read_atoms, write_atoms


def _write(path, n_frames=10, stride=5, **kw):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    with TrajectoryWriter(path, atoms.numbers, timestep_fs=2.0, stride=stride, temperature_K=300.0,
                          metadata={"model": "lj", "system": "Cu"}, velocities=True, stress=True, **kw) as w:
        for k in range(n_frames):
            w.append(step=stride * k, positions=atoms.positions + 0.01 * k, cell=atoms.cell[:],
                     potential_energy=-float(k), kinetic_energy=1.0, temperature_K=300.0 + k,
                     velocities=np.full((4, 3), 0.01), stress=np.eye(3) * k)
        assert part_path(path).exists() and not path.exists()
    return atoms


def test_schema_and_reader(tmp_path):
    path = tmp_path / "t.h5"
    _write(path)
    assert path.exists() and not part_path(path).exists()
    with h5py.File(path) as f:
        assert f.attrs["format"] == "matscreen-trajectory"
        assert f["positions"].compression == "gzip" and f["positions"].chunks[0] > 1
        assert f["positions"].shape == (10, 4, 3) and f["cell"].shape == (10, 3, 3)
    with TrajectoryReader(path) as r:
        assert len(r) == 10 and r.dt_fs == 10.0 and r.timestep_fs == 2.0 and r.stride == 5
        assert r.metadata == {"model": "lj", "system": "Cu"}
        np.testing.assert_array_equal(r.read("step"), np.arange(0, 50, 5))
        np.testing.assert_allclose(r.read("time_fs"), np.arange(0, 50, 5) * 2.0)
        frame = r[3]
        assert frame.get_potential_energy() == -3.0 and frame.info["step"] == 15
        np.testing.assert_allclose(frame.get_velocities() * ase.units.fs, 0.01)  # Å/fs round trip


def test_ase_reads_it(tmp_path):
    path = tmp_path / "t.h5"
    atoms = _write(path)
    frames = ase.io.read(path, ":")
    assert len(frames) == 10
    np.testing.assert_allclose(frames[2].positions, atoms.positions + 0.02)
    assert ase.io.read(path).info["step"] == 45
    assert len(ase.io.read(str(path), "2:6")) == 4
    assert len(read_atoms(path, "::2")) == 5


def test_resume_truncates_and_continues(tmp_path):
    path = tmp_path / "t.h5"
    atoms = _write(path)
    w = TrajectoryWriter.resume(path, after_step=20)
    assert w.n_frames == 5 and w.last_step == 20
    with pytest.raises(InputError, match="not after"):
        w.append(step=20, positions=atoms.positions, cell=atoms.cell[:], potential_energy=0, kinetic_energy=0,
                 temperature_K=0, velocities=np.zeros((4, 3)), stress=np.zeros((3, 3)))
    w.append(step=25, positions=atoms.positions, cell=atoms.cell[:], potential_energy=0, kinetic_energy=0,
             temperature_K=0, velocities=np.zeros((4, 3)), stress=np.zeros((3, 3)))
    w.close()
    with TrajectoryReader(path) as r:
        np.testing.assert_array_equal(r.read("step"), [0, 5, 10, 15, 20, 25])


def test_write_atoms_from_ase_md(tmp_path):
    from ase.calculators.emt import EMT
    from ase.md.verlet import VelocityVerlet
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=3000, rng=np.random.default_rng(0))
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    dyn = VelocityVerlet(atoms, timestep=5 * ase.units.fs)

    def snap():
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
        frames.append(frame)

    dyn.attach(snap, interval=5)
    dyn.run(50)
    path = write_atoms(tmp_path / "ase.h5", frames, timestep_fs=5.0, stride=5, temperature_K=3000)
    with TrajectoryReader(path) as r:
        assert len(r) == len(frames) and r.has("forces") and not r.has("stress")
        unwrapped, wrapped = r.read("unwrapped_positions"), r.read("positions")
        np.testing.assert_allclose(unwrapped[-1], frames[-1].positions, atol=1e-8)
        frac = np.linalg.solve(r.read("cell")[0].T, wrapped[-1].T).T
        assert frac.min() >= -1e-9 and frac.max() < 1
        np.testing.assert_allclose(r[-1].get_potential_energy(), frames[-1].get_potential_energy())


def test_corrupt_and_foreign_files(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 100)
    with pytest.raises(InputError, match="not a readable HDF5"):
        TrajectoryReader(junk)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(InputError, match="not a matscreen trajectory"):
        TrajectoryReader(foreign)
