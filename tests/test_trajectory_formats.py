"""Any trajectory ASE reads, analysed like the service's own: one random walk written in every format
gives the same D and verdict; a VASP-layout XDATCAR, vasprun.xml, OUTCAR and a LAMMPS dump work; bad
input is a one-line error naming the file and the fix."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from common import InputError
from md.trajectory import load_trajectory, write_atoms
from orchestrator.cli import main
from vasp_layout import lammps_dump_text, outcar_text, vasprun_text, xdatcar_text

BOX = 12.0
DT_FS = 100.0
D_TRUE = 1e-5            # cm^2/s


def walk(seed=0, n_frames=120, n_li=16, n_s=24):
    """Li random walkers with a known D in a static S framework: (cell, symbols, unwrapped positions [F,N,3])."""
    rng = np.random.default_rng(seed)
    step_sd = np.sqrt(2 * D_TRUE / 0.1 * DT_FS)                 # Å per Cartesian component per frame
    li = rng.random((n_li, 3)) * BOX + np.cumsum(rng.normal(0, step_sd, (n_frames, n_li, 3)), axis=0)
    s = np.broadcast_to(rng.random((n_s, 3)) * BOX, (n_frames, n_s, 3))
    return np.eye(3) * BOX, ["Li"] * n_li + ["S"] * n_s, np.concatenate([li, s], axis=1)


def images(cell, symbols, positions, times=True):
    out = []
    for k, pos in enumerate(positions):
        atoms = Atoms(symbols, positions=pos, cell=cell, pbc=True)
        atoms.wrap()
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0 - 0.001 * k, forces=np.zeros((len(atoms), 3)))
        if times:
            atoms.info["time_fs"] = k * DT_FS
        out.append(atoms)
    return out


def analyze(capsys, *args) -> dict:
    assert main(["analyze", *map(str, args), "--species", "Li", "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One walk in every format: (path, extra CLI arguments)."""
    d = tmp_path_factory.mktemp("formats")
    cell, symbols, pos = walk()
    frames = images(cell, symbols, pos)
    energies, forces = [-1.0 - 0.001 * k for k in range(len(pos))], np.zeros(pos.shape)
    t = ["--temperature", 800]
    out = {}
    write_atoms(d / "walk.h5", frames, timestep_fs=DT_FS, temperature_K=800.0)
    out["h5"] = (d / "walk.h5", [])
    write(d / "walk.extxyz", frames)
    out["extxyz"] = (d / "walk.extxyz", t)
    with open(d / "walk.extxyz", "rb") as src, gzip.open(d / "walk.extxyz.gz", "wb") as dst:
        dst.write(src.read())
    out["extxyz.gz"] = (d / "walk.extxyz.gz", t)
    write(d / "walk.traj", images(cell, symbols, pos, times=False))
    out["traj"] = (d / "walk.traj", ["--dt-fs", DT_FS, *t])
    write(d / "XDATCAR_ase", frames, format="vasp-xdatcar")
    out["xdatcar (ASE)"] = (d / "XDATCAR_ase", ["--format", "vasp-xdatcar", "--dt-fs", DT_FS, *t])
    (d / "XDATCAR").write_text(xdatcar_text(cell, symbols, pos))
    out["xdatcar (VASP)"] = (d / "XDATCAR", ["--dt-fs", DT_FS, *t])
    (d / "vasprun.xml").write_text(vasprun_text(cell, symbols, pos, energies, forces, potim=DT_FS, tebeg=800.0))
    out["vasprun"] = (d / "vasprun.xml", [])
    (d / "OUTCAR").write_text(outcar_text(cell, symbols, pos, energies, forces, potim=DT_FS, tebeg=800.0))
    out["outcar"] = (d / "OUTCAR", [])
    (d / "dump.lammpstrj").write_text(lammps_dump_text(cell, [1 if s == "Li" else 2 for s in symbols], pos))
    write(d / "data.lmp", frames[0], format="lammps-data", specorder=["Li", "S"], masses=True)
    out["lammps"] = (d / "dump.lammpstrj", ["--format", "lammps-dump-text", "--topology", d / "data.lmp",
                                            "--dt-fs", DT_FS, *t])
    return out


def test_every_format_gives_the_same_d_and_verdict(files, capsys):
    results = {name: analyze(capsys, path, *extra) for name, (path, extra) in files.items()}
    ref = results["h5"]
    for name, r in results.items():
        assert r["n_frames"] == 120 and r["dt_fs"] == DT_FS and r["temperature_K"] == 800.0, name
        assert r["diffusivity_cm2_s"] == pytest.approx(ref["diffusivity_cm2_s"], rel=1e-4), name
        assert r["diffusivity_err_cm2_s"] == pytest.approx(ref["diffusivity_err_cm2_s"], rel=1e-3), name
        assert r["conductivity_mS_cm"] == pytest.approx(ref["conductivity_mS_cm"], rel=1e-4), name
        assert r["verdict"] == ref["verdict"], name


def test_wrapped_positions_are_unwrapped(files):
    """Walkers cross the cell's faces; the unwrapped path is the continuous one we generated."""
    cell, symbols, pos = walk()
    for name in ("extxyz", "xdatcar (VASP)", "vasprun"):
        path, extra = files[name]
        traj = load_trajectory(path, dt_fs=None if "--dt-fs" not in extra else DT_FS)
        assert traj.positions.max() < BOX + 1e-6 and traj.positions.min() > -1e-6           # wrapped
        np.testing.assert_allclose(traj.unwrapped - traj.unwrapped[0], pos - pos[0], atol=1e-5)
        assert np.abs(np.diff(traj.positions, axis=0)).max() > BOX / 2                     # a face was crossed


def test_random_walk_in_extxyz_recovers_known_d(tmp_path, capsys):
    cell, symbols, pos = walk(seed=3, n_frames=400)
    write(tmp_path / "walk.extxyz", images(cell, symbols, pos))
    r = analyze(capsys, tmp_path / "walk.extxyz", "--temperature", 800)
    assert abs(r["diffusivity_cm2_s"] - D_TRUE) < 2.5 * r["diffusivity_err_cm2_s"]
    assert r["diffusivity_err_cm2_s"] < 0.3 * D_TRUE


def test_reference_in_another_format(files, capsys):
    """A student HDF5 judged against a user's AIMD (vasprun.xml): the same trajectory, so RDF MAE 0."""
    r = analyze(capsys, files["h5"][0], "--reference", files["vasprun"][0])
    assert r["rdf_mae"] == pytest.approx(0.0, abs=1e-6)
    r = analyze(capsys, files["extxyz"][0], "--temperature", 800, "--reference", files["xdatcar (VASP)"][0],
                "--reference-dt-fs", DT_FS)
    assert r["rdf_mae"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("case, message", [
    ("missing dt", "does not say the time between its frames; pass --dt-fs"),
    ("truncated extxyz", "not a readable extxyz file, or truncated"),
    ("truncated vasprun", "is truncated (the run stopped mid-write)"),
    ("garbage", "or pass --format"),   # unknown to ASE, or taken for another format and unreadable as it
    ("no species", "has no Li atoms (it has S); pass --species"),
    ("too few frames", "a diffusion fit needs at least 20"),
    ("atom count changes", "frame 5 has 39 atoms, frame 0 has 40"),
    ("order changes", "frame 5 orders the atoms differently"),
    ("cell changes", "the cell changes at frame 5"),
    ("dump without topology", "pass --topology"),
    ("dt disagrees", "--dt-fs 50 disagrees"),
])
def test_bad_input_is_one_line_naming_file_and_fix(tmp_path, capsys, files, case, message):
    cell, symbols, pos = walk(n_frames=30)
    frames = images(cell, symbols, pos)
    args = ["--temperature", "800"]
    path = tmp_path / "bad.extxyz"
    if case == "missing dt":
        path = tmp_path / "XDATCAR"
        path.write_text(xdatcar_text(cell, symbols, pos))
    elif case == "truncated extxyz":
        write(path, frames)
        path.write_text(path.read_text()[: int(path.stat().st_size * 0.6)])
    elif case == "truncated vasprun":
        path = tmp_path / "vasprun.xml"
        path.write_text(vasprun_text(cell, symbols, pos, [0.0] * 30, potim=2.0, complete=False))
    elif case == "garbage":
        path = tmp_path / "run.dat"
        path.write_bytes(b"\x00\x01 nothing to see")
    elif case == "no species":
        write(path, [a[[s == "S" for s in a.get_chemical_symbols()]] for a in frames])
    elif case == "too few frames":
        write(path, frames[:10])
    elif case == "atom count changes":
        frames[5] = frames[5][:-1]
        write(path, frames)
    elif case == "order changes":
        frames[5] = frames[5][::-1]
        write(path, frames)
    elif case == "cell changes":
        frames[5].set_cell(cell * 1.02, scale_atoms=True)
        write(path, frames)
    elif case == "dump without topology":
        path = tmp_path / "dump.lammpstrj"
        path.write_text(lammps_dump_text(cell, [1] * 16 + [2] * 24, pos))
        args += ["--format", "lammps-dump-text", "--dt-fs", "100"]
    elif case == "dt disagrees":
        path = files["vasprun"][0]
        args = ["--dt-fs", "50"]
    assert main(["analyze", str(path), "--species", "Li", "--json", *args]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and (path.name in err or case == "dt disagrees")
    if case not in ("no species", "too few frames", "dt disagrees"):
        with pytest.raises(InputError):
            load_trajectory(path, dt_fs=None, fmt="lammps-dump-text" if "dump" in case else None)


def test_lammps_dump_with_an_element_column_needs_no_topology(tmp_path, capsys):
    cell, symbols, pos = walk(n_frames=60)
    text = lammps_dump_text(cell, [1 if s == "Li" else 2 for s in symbols], pos)
    text = text.replace("ITEM: ATOMS id type x y z", "ITEM: ATOMS id type element x y z")
    lines = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 5 and not line.startswith("ITEM") and parts[1] in ("1", "2"):
            parts.insert(2, "Li" if parts[1] == "1" else "S")
        lines.append(" ".join(parts))
    (tmp_path / "dump.lammpstrj").write_text("\n".join(lines) + "\n")
    traj = load_trajectory(tmp_path / "dump.lammpstrj", dt_fs=DT_FS, fmt="lammps-dump-text")
    assert list(traj.numbers) == [3] * 16 + [16] * 24


def _thermostatted(cell, symbols, positions, temperature_K, rng):
    """Frames as a plain ASE MD script writes them: each with its instantaneous temperature and its time."""
    out = images(cell, symbols, positions)
    for atoms in out:
        atoms.info["temperature_K"] = float(temperature_K * (1 + 0.05 * rng.normal()))
    return out


def test_a_per_frame_temperature_that_varies_is_instantaneous_and_one_that_does_not_is_the_target(tmp_path):
    cell, symbols, pos = walk(n_frames=40)
    write(tmp_path / "varies.extxyz", _thermostatted(cell, symbols, pos, 1000.0, np.random.default_rng(0)))
    traj = load_trajectory(tmp_path / "varies.extxyz")
    assert traj.temperature_K is None and traj.temperatures_K is not None and traj.temperatures_K.std() > 10
    frames = images(cell, symbols, pos)
    for atoms in frames:
        atoms.info["temperature_K"] = 1000.0
    write(tmp_path / "setting.extxyz", frames)
    assert load_trajectory(tmp_path / "setting.extxyz").temperature_K == 1000.0


def test_a_requested_reference_is_compared_or_refused_never_skipped(tmp_path, capsys):
    """The issue's case: two windows of one thermostatted run, written with instantaneous temperatures, the
    second strained by 3 %.  The reference's temperature is the target (--temperature, or
    --reference-temperature), the structure check runs and finds the strain; another temperature, or a reference
    too short after the equilibration, is a one-line error (exit 2), never a silent skip."""
    from ase.build import bulk

    crystal = bulk("Li2S", "fluorite", a=5.7).repeat(2)       # antifluorite-like: 64 Li, 32 S, vibrating
    cell, symbols = crystal.cell[:], crystal.get_chemical_symbols()
    rng = np.random.default_rng(1)
    pos = crystal.positions[None] + 0.12 * rng.normal(size=(200, len(crystal), 3))
    write(tmp_path / "window1.extxyz", _thermostatted(cell, symbols, pos[:100], 1000.0, rng))
    write(tmp_path / "window2.extxyz", _thermostatted(cell, symbols, pos[100:], 1000.0, rng))
    write(tmp_path / "strained.extxyz", _thermostatted(1.03 * cell, symbols, 1.03 * pos[100:], 1000.0, rng))
    args = ["--reference", tmp_path / "window1.extxyz", "--temperature", 1000, "--discard-fs", 0]
    same = analyze(capsys, tmp_path / "window2.extxyz", *args)
    strained = analyze(capsys, tmp_path / "strained.extxyz", *args)
    for r in (same, strained):
        assert r["reference_temperature_K"] == 1000.0 and r["rdf_mae"] is not None
        assert {"structure", "dynamics"} <= set(r["checks"]["ran"]) and "structure" not in r["checks"]["not_run"]
    assert same["verdict"] in ("stable", "inconclusive") and same["rdf_mae"] <= same["evidence"]["rdf_critical"]
    assert strained["verdict"] in ("lattice_mismatch", "rdf_mismatch") and strained["rdf_mae"] > 3 * same["rdf_mae"]
    # the reference's own setting can be given; one that differs from the run's is refused, in one line
    r = analyze(capsys, tmp_path / "window2.extxyz", *args, "--reference-temperature", 1000)
    assert r["rdf_mae"] == same["rdf_mae"]
    assert main(["analyze", str(tmp_path / "window2.extxyz"), "--species", "Li", *map(str, args),
                 "--reference-temperature", "900"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "at 900 K" in err and "at 1000 K" in err
    write(tmp_path / "short.extxyz", _thermostatted(cell, symbols, pos[:30], 1000.0, rng))
    assert main(["analyze", str(tmp_path / "window2.extxyz"), "--species", "Li", "--reference",
                 str(tmp_path / "short.extxyz"), "--temperature", "1000", "--discard-fs", "1500"]) == 2
    assert "frames after the equilibration" in capsys.readouterr().err
    # without any temperature the checks cannot be placed: said, not skipped
    assert main(["analyze", str(tmp_path / "window2.extxyz"), "--species", "Li", "--reference",
                 str(tmp_path / "window1.extxyz")]) == 2
    assert "records a target temperature" in capsys.readouterr().err


def test_analyze_without_a_temperature_gives_d_and_agrees_with_kinisi(tmp_path, capsys):
    """A VASP XDATCAR (no TEBEG, frames 100 fs apart): D and its error, no conductivity (a note says why), and
    the same D as kinisi's Bayesian fit on the same file and fit window."""
    import warnings

    import scipp as sc
    from ase.io import read
    from kinisi.analyze import DiffusionAnalyzer as KinisiAnalyzer

    from analysis.diffusion import diffusion

    cell, symbols, pos = walk(seed=7, n_frames=300)
    (tmp_path / "XDATCAR").write_text(xdatcar_text(cell, symbols, pos))
    r = analyze(capsys, tmp_path / "XDATCAR", "--dt-fs", DT_FS, "--discard-fs", 0)
    assert r["temperature_K"] is None and r["conductivity_mS_cm"] is None and r["conductivity_err_mS_cm"] is None
    assert any("temperature" in n for n in r["notes"]) and "breakage" in r["checks"]["ran"]
    assert abs(r["diffusivity_cm2_s"] - D_TRUE) < 3 * r["diffusivity_err_cm2_s"]
    traj = load_trajectory(tmp_path / "XDATCAR", dt_fs=DT_FS)
    ours = diffusion(traj.unwrapped, traj.numbers, DT_FS, "Li")
    assert ours.diffusivity_cm2_s == pytest.approx(r["diffusivity_cm2_s"], rel=1e-9)
    frames = read(tmp_path / "XDATCAR", ":", format="vasp-xdatcar")
    lags_ps = np.arange(1, len(frames) // 2) * DT_FS / 1000.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = KinisiAnalyzer.from_ase(frames, specie="Li", time_step=DT_FS * sc.Unit("fs"),
                                         step_skip=1 * sc.Unit("dimensionless"), progress=False,
                                         dt=sc.array(dims=["time interval"], values=lags_ps, unit="ps"))
        theirs.diffusion(ours.fit_start_fs / 1000.0 * sc.Unit("ps"), progress=False,
                         random_state=np.random.RandomState(0))
    assert abs(r["diffusivity_cm2_s"] - np.mean(theirs.D.values)) < r["diffusivity_err_cm2_s"]
