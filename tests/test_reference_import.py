"""AIMD import: small VASP-format files written here (vasprun.xml, OUTCAR), extxyz, XDATCAR; bad inputs."""
from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from common import InputError
from orchestrator.cli import main
from reference.aimd_import import read_labelled_frames
from reference.store import LabelStore
import vasp_layout as layout

CELL = np.diag([5.0, 5.0, 5.0])
FRAC = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]])   # Li, S, S
FORCES = [np.array([[0.1, 0.0, -0.1], [0.0, 0.2, 0.0], [-0.1, -0.2, 0.1]]) * (k + 1) for k in range(2)]
ENERGIES = [-10.5, -10.25]
SYMBOLS = ["Li", "S", "S"]


def vasprun_text(n_frames=2, with_forces=True) -> str:
    """A 3-atom vasprun.xml (Li, S, S) of ``n_frames`` ionic steps, in VASP's layout (``tests/vasp_layout``)."""
    pos = [(FRAC + 0.01 * k) @ CELL for k in range(n_frames)]
    return layout.vasprun_text(CELL, SYMBOLS, pos, ENERGIES[:n_frames], FORCES[:n_frames] if with_forces else None)


def outcar_text(n_frames=2, complete=True) -> str:
    """The same run as an OUTCAR; ``complete=False``: cut before VASP's closing lines."""
    pos = [(FRAC + 0.01 * k) @ CELL for k in range(n_frames)]
    return layout.outcar_text(CELL, SYMBOLS, pos, ENERGIES[:n_frames], FORCES[:n_frames], complete=complete)


@pytest.fixture()
def vasp_files(tmp_path):
    (tmp_path / "vasprun.xml").write_text(vasprun_text())
    (tmp_path / "OUTCAR").write_text(outcar_text())
    return tmp_path


def test_vasprun_reader(vasp_files):
    frames = read_labelled_frames(vasp_files / "vasprun.xml", temperature_K=600, run_id="lgps-600")
    assert len(frames) == 2
    for k, a in enumerate(frames):
        assert a.get_chemical_symbols() == ["Li", "S", "S"]
        assert a.get_potential_energy() == pytest.approx(ENERGIES[k])
        np.testing.assert_allclose(a.get_forces(), FORCES[k])
        np.testing.assert_allclose(a.get_scaled_positions(), FRAC + 0.01 * k, atol=1e-8)
        assert a.info["oracle"] == "vasp" and a.info["source"] == "aimd:vasprun.xml"
        assert a.info["temperature_K"] == 600.0 and a.info["run_id"] == "lgps-600"
        assert a.get_stress().shape == (6,)


def test_outcar_reader_agrees_with_vasprun(vasp_files):
    xml = read_labelled_frames(vasp_files / "vasprun.xml", oracle="vasp-pbe")
    out = read_labelled_frames(vasp_files / "OUTCAR", oracle="vasp-pbe")
    assert len(out) == len(xml) == 2
    for a, b in zip(out, xml):
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy())
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-6)
        np.testing.assert_allclose(a.get_positions(), b.get_positions(), atol=1e-5)
        np.testing.assert_allclose(a.get_stress(), b.get_stress(), atol=1e-6)


def test_extxyz_reader_and_store_import(tmp_path, vasp_files, capsys):
    frames = []
    for k in range(3):
        a = Atoms("LiSS", scaled_positions=FRAC, cell=CELL, pbc=True)
        a.calc = SinglePointCalculator(a, energy=-1.0 - k, forces=np.full((3, 3), 0.1 * k))
        a.info["oracle"] = "r2scan-aimd"
        frames.append(a)
    write(tmp_path / "run.extxyz", frames, format="extxyz")
    got = read_labelled_frames(tmp_path / "run.extxyz", stride=2)
    assert [a.get_potential_energy() for a in got] == [-1.0, -3.0]
    assert got[0].info["oracle"] == "r2scan-aimd"
    store = tmp_path / "store"
    rc = main(["data", "import", str(vasp_files / "vasprun.xml"), str(vasp_files / "OUTCAR"), str(tmp_path / "run.extxyz"),
               "--store", str(store), "--temperature-K", "600", "--json"])
    assert rc == 0
    st = LabelStore(store).stats()
    assert st.n_frames == 7 and st.by_oracle == {"vasp": 4, "r2scan-aimd": 3}


def test_xdatcar_refused_with_reason(tmp_path):
    write(tmp_path / "XDATCAR", [Atoms("LiSS", scaled_positions=FRAC, cell=CELL, pbc=True)] * 2, format="vasp-xdatcar")
    with pytest.raises(InputError, match="XDATCAR has positions only"):
        read_labelled_frames(tmp_path / "XDATCAR")


def test_frames_without_forces_refused(tmp_path):
    (tmp_path / "vasprun.xml").write_text(vasprun_text(with_forces=False))
    with pytest.raises(InputError, match="vasprun.xml: frame 0 has no forces"):
        read_labelled_frames(tmp_path / "vasprun.xml")
    a = Atoms("LiSS", scaled_positions=FRAC, cell=CELL, pbc=True)
    write(tmp_path / "bare.extxyz", a, format="extxyz")
    with pytest.raises(InputError, match="bare.extxyz: frame 0 has no energy"):
        read_labelled_frames(tmp_path / "bare.extxyz")


def test_truncated_and_corrupt_files(tmp_path, capsys):
    text = vasprun_text()
    (tmp_path / "vasprun.xml").write_text(text[: int(len(text) * 0.8)])
    with pytest.raises(InputError, match="truncated"):
        read_labelled_frames(tmp_path / "vasprun.xml")
    kept = read_labelled_frames(tmp_path / "vasprun.xml", allow_truncated=True)
    assert len(kept) == 1                       # the complete frame only
    (tmp_path / "OUTCAR").write_text(outcar_text(complete=False))
    with pytest.raises(InputError, match="truncated"):
        read_labelled_frames(tmp_path / "OUTCAR")
    (tmp_path / "garbage.xml").write_text("<modeling><atominfo>\x00\x01 not xml </modeling>")
    with pytest.raises(InputError, match="not a readable vasp-xml"):
        read_labelled_frames(tmp_path / "garbage.xml")
    (tmp_path / "bad.extxyz").write_text("3\nenergy=oops Properties=species:S:1:pos:R:3\nLi 0 0 0\nS 1 1\n")
    with pytest.raises(InputError, match="not a readable extxyz"):
        read_labelled_frames(tmp_path / "bad.extxyz")
    (tmp_path / "empty.extxyz").write_text("")
    with pytest.raises(InputError, match="empty"):
        read_labelled_frames(tmp_path / "empty.extxyz")
    # the CLI: one line, exit 2, and nothing stored when any file is bad
    (tmp_path / "good.xml").write_text(vasprun_text())
    store = tmp_path / "store"
    rc = main(["data", "import", str(tmp_path / "good.xml"), str(tmp_path / "bad.extxyz"), "--store", str(store)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("matscreen: error: ") and "bad.extxyz" in err and err.count("\n") == 1
    assert len(LabelStore(store)) == 0


def test_user_reference_without_forces_is_labelled_by_the_campaign_oracle(tmp_path):
    """An XDATCAR (positions only) as a candidate's reference: the service's HDF5 copy (unwrapped, the user's
    time step and temperature, the equilibration to drop) and the campaign oracle's labels of its frames."""
    from ase.build import bulk

    from md.trajectory import load_trajectory
    from reference.oracles import Oracle
    from reference.user_reference import UserReference, import_reference, sha256_of
    from vasp_layout import xdatcar_text

    cell_atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(2)
    cell_atoms.symbols[::2] = "Li"
    rng = np.random.default_rng(0)
    pos = cell_atoms.positions + np.cumsum(rng.normal(0, 0.05, (40, len(cell_atoms), 3)), axis=0)
    (tmp_path / "XDATCAR").write_text(xdatcar_text(cell_atoms.cell[:], cell_atoms.get_chemical_symbols(), pos))
    store = LabelStore(tmp_path / "store")
    run = import_reference(UserReference(str(tmp_path / "XDATCAR"), temperature_K=600.0, dt_fs=4.0), cell_atoms,
                           tmp_path / "ref.h5", discard_fs=40.0, store=store, shard="ref-r0.extxyz", n_labels=5,
                           oracle=Oracle("lj"), run_id="t")
    assert run.oracle == "lj-argon" and run.labelled_frames == 5 and run.metadata["can_label"]
    assert run.metadata["sha256"] == sha256_of(tmp_path / "XDATCAR") and not run.metadata["has_forces"]
    assert not run.metadata["calibration_forces"]
    traj = load_trajectory(run.trajectory)
    assert traj.dt_fs == 4.0 and traj.temperature_K == 600.0 and traj.discard_fs == 40.0 and len(traj) == 40
    np.testing.assert_allclose(traj.unwrapped - traj.unwrapped[0], pos - pos[0], atol=1e-5)
    labels = store.frames()
    assert len(labels) == 5 and {a.info["oracle"] for a in labels} == {"lj-argon"}

    with pytest.raises(InputError, match="no forces, so it cannot supply labels of vasp-pbe"):
        import_reference(UserReference(str(tmp_path / "XDATCAR"), temperature_K=600.0, dt_fs=4.0), cell_atoms,
                         tmp_path / "ref2.h5", discard_fs=0.0, store=store, shard="x.extxyz", n_labels=5,
                         oracle=Oracle("lj"), labels_oracle="vasp-pbe")
    other = cell_atoms.copy()
    other.symbols[1] = "Li"
    with pytest.raises(InputError, match="the candidate's cell is"):
        import_reference(UserReference(str(tmp_path / "XDATCAR"), temperature_K=600.0, dt_fs=4.0), other,
                         tmp_path / "ref3.h5", discard_fs=0.0, store=store, shard="y.extxyz", n_labels=5,
                         oracle=Oracle("lj"))
    assert not (tmp_path / "ref2.h5").exists() and not (tmp_path / "ref3.h5").exists()   # nothing half-written


def test_labels_never_come_from_the_calibration_block(tmp_path):
    """The final part of a reference after its equilibration is held out: labels come only from before it, so the
    ensemble's deviation there is out of sample (it sets the trust levels)."""
    from reference.reference_md import calibration_block
    from reference.user_reference import label_indices

    assert calibration_block(40, 10, 0.0) == 40 and calibration_block(40, 10, 0.2) == 34
    held = label_indices(40, 10, 5, holdout_fraction=0.2)
    assert len(held) == 5 and held[0] == 10 and held[-1] == 33
    assert label_indices(40, 10, 5)[-1] == 39                         # no hold-out: up to the last frame


def test_a_package_path_names_the_bundled_demo_reference(tmp_path, capsys):
    """`package:<path>` resolves inside matscreen's installed packages (the demo's bundled oracle run); a missing
    one is a one-line error naming the key."""
    import yaml

    from orchestrator.campaign.spec import load_spec, package_root

    bundled = "reference/data/Li10GeP2S12_chgnet_1000K.extxyz.gz"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"reference_data": {"trajectories": {
        "Li10GeP2S12": {"path": f"package:{bundled}", "temperature_K": 1000.0}}}}))
    entry = load_spec(spec).reference_data.trajectories["Li10GeP2S12"]
    assert entry["path"] == str(package_root() / bundled) and (package_root() / bundled).is_file()
    spec.write_text(yaml.safe_dump({"reference_data": {"trajectories": {
        "Li10GeP2S12": {"path": "package:reference/data/none.extxyz", "temperature_K": 1000.0}}}}))
    assert main(["campaign", "validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "reference_data.trajectories.Li10GeP2S12.path:" in err and "none.extxyz not found" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("entry, message", [
    ({"path": "missing.extxyz", "temperature_K": 800}, "reference_data.trajectories.Li.path: missing.extxyz not found"),
    ({"path": "__FILE__"}, "reference_data.trajectories.Li.temperature_K: missing"),
    ({"path": "__FILE__", "temperature_K": 800, "dt": 2}, "reference_data.trajectories.Li.dt: unknown key; did you mean 'reference_data.trajectories.Li.dt_fs'?"),
    ({"path": "__FILE__", "temperature_K": -5}, "reference_data.trajectories.Li.temperature_K: must be > 0"),
])
def test_user_reference_spec_errors_name_the_key(tmp_path, capsys, entry, message):
    import yaml

    (tmp_path / "aimd.extxyz").write_text("x")
    entry = {k: (str(tmp_path / "aimd.extxyz") if v == "__FILE__" else v) for k, v in entry.items()}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"reference_data": {"trajectories": {"Li": entry}}}))
    assert main(["campaign", "validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_the_studys_layout_imports_per_material_temperature_and_run(tmp_path, capsys):
    """One AIMD per material, temperature and run (aimd/<material>/<T>K/<run>/vasprun.xml), imported as
    `matscreen data import --help` shows: every frame keeps its temperature and run id."""
    for mat, temp, run in [("Li3PS4", 800, "run1"), ("Li3PS4", 800, "run2"), ("Li3PS4", 1000, "run1")]:
        d = tmp_path / "aimd" / mat / f"{temp}K" / run
        d.mkdir(parents=True)
        (d / "vasprun.xml").write_text(vasprun_text())
    for f in sorted((tmp_path / "aimd").glob("*/*K/*/vasprun.xml")):
        _, mat, temp, run, _ = f.relative_to(tmp_path).parts
        assert main(["data", "import", str(f), "--oracle", "vasp-pbe", "--temperature-K", temp.removesuffix("K"),
                     "--run-id", f"{mat}-{temp}-{run}", "--store", str(tmp_path / "store")]) == 0
    frames = LabelStore(tmp_path / "store").frames()
    assert sorted({(a.info["run_id"], a.info["temperature_K"]) for a in frames}) == [
        ("Li3PS4-1000K-run1", 1000.0), ("Li3PS4-800K-run1", 800.0), ("Li3PS4-800K-run2", 800.0)]
    assert {a.info["oracle"] for a in frames} == {"vasp-pbe"}
