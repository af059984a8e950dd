"""Oracles (CHGNet default on the 50-atom LGPS cell), failures per frame, reference MD, relaxation cache."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes

from common import InputError
from orchestrator.cli import main
from reference.oracles import Oracle, OracleError, available_oracles, make_oracle
from reference.store import LabelStore


@pytest.fixture(scope="session")
def chgnet_oracle():
    return Oracle("chgnet")


@pytest.fixture(scope="session")
def lgps_md(chgnet_oracle, lgps_atoms, tmp_path_factory):
    """100 Langevin steps of CHGNet MD on the 50-atom LGPS cell at 600 K (run once)."""
    from reference.reference_md import ReferencePlan, run_reference_md

    root = tmp_path_factory.mktemp("refmd")
    store = LabelStore(root / "store")
    protocol = ReferencePlan.nvt(temperature_K=600, steps=100, timestep_fs=2.0, stride=10, label_every=25, seed=1)
    summary = run_reference_md(lgps_atoms, chgnet_oracle, protocol, root / "lgps_600K.h5", store=store,
                               run_id="t600").to_dict()
    return summary, store, root / "lgps_600K.h5"


def test_default_oracle_on_lgps(chgnet_oracle, lgps_atoms):
    assert chgnet_oracle.name == "chgnet-0.3.0"
    frame = chgnet_oracle.label(lgps_atoms, source="test", temperature_K=300)
    e, f, s = frame.get_potential_energy(), frame.get_forces(), frame.get_stress()
    assert np.isfinite(e) and -6.0 < e / len(frame) < -3.0          # eV/atom of a sulfide
    assert f.shape == (50, 3) and np.isfinite(f).all() and np.abs(f).max() < 2.0   # DFT-relaxed cell
    assert np.abs(f.sum(0)).max() < 1e-3                              # no net force
    assert s.shape == (6,) and np.isfinite(s).all()
    assert {k: frame.info[k] for k in ("oracle", "source", "temperature_K")} == {
        "oracle": "chgnet-0.3.0", "source": "test", "temperature_K": 300.0}


def test_reference_md_json_output_is_pure_json(tmp_path, capsys):
    """chgnet's banners ("CHGNet v0.3.0 initialized ...") go to stderr: stdout of --json parses as JSON."""
    import json

    rc = main(["reference", "md", "Li10GeP2S12", "--steps", "2", "--stride", "1", "--label-every", "0",
               "--out", str(tmp_path / "two_steps.h5"), "--no-store", "--json"])
    out = capsys.readouterr()
    assert rc == 0
    summary = json.loads(out.out)
    assert summary["frames"] == 3
    assert "CHGNet" in out.err


def test_reference_md_100_steps_stable(lgps_md):
    summary, store, path = lgps_md
    assert summary["frames"] == 11 and summary["labelled_frames"] == 5
    assert 300 < summary["mean_temperature_K"] < 900 and summary["max_temperature_K"] < 1200
    assert summary["min_distance_A"] > 1.7                              # no fused atoms
    e0, e1 = summary["potential_energy_eV"]
    assert abs(e1 - e0) / 50 < 0.2                                      # eV/atom drift bounded
    from md.trajectory import TrajectoryReader

    with TrajectoryReader(path) as tr:
        assert len(tr) == 11
        assert np.isfinite(tr.read("potential_energy")).all()
        assert tr.read("forces").shape == (11, 50, 3)
    frames = store.query(run_id="t600")
    assert len(frames) == 5
    assert {a.info["source"] for a in frames} == {"oracle-md"}
    assert {a.info["oracle"] for a in frames} == {"chgnet-0.3.0"}
    assert all(a.info["temperature_K"] == 600.0 for a in frames)


class FlakyCalculator(Calculator):
    """A real ASE calculator that fails like DFT codes do: SCF not converged, crashes, NaN."""
    implemented_properties = ["energy", "forces"]

    def __init__(self):
        super().__init__()
        self.calls: dict[str, int] = {}

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        tag = self.atoms.info.get("behaviour", "ok")
        self.calls[tag] = self.calls.get(tag, 0) + 1
        if tag == "scf" or (tag == "once" and self.calls[tag] == 1):
            from ase.calculators.calculator import SCFError

            raise SCFError("SCF did not converge in 60 steps")
        if tag == "crash":
            raise RuntimeError("code exited with status 137")
        e = float("nan") if tag == "nan" else -1.0
        self.results = {"energy": e, "forces": np.zeros((len(self.atoms), 3))}


def test_oracle_failures_recorded_per_frame_and_rest_kept():
    flaky = FlakyCalculator()
    oracle = Oracle(calculator=flaky, label="flaky-1.0", retries=1)
    frames = []
    for tag in ["ok", "scf", "once", "nan", "crash", "ok"]:
        a = Atoms("Ar2", positions=[[0, 0, 0], [3, 0, 0]], cell=np.eye(3) * 8, pbc=True)
        a.info["behaviour"] = tag
        frames.append(a)
    report = oracle.label_many(frames, source="active-learning")
    assert len(report.frames) == 3                                     # ok, once (after a retry), ok
    assert [f.index for f in report.failures] == [1, 3, 4]
    msgs = [f.error for f in report.failures]
    assert "SCF" in msgs[0] and "non-finite" in msgs[1] and "137" in msgs[2]
    assert flaky.calls["once"] == 2 and flaky.calls["scf"] == 2        # retried once each
    assert all(f.info["oracle"] == "flaky-1.0" for f in report.frames)
    with pytest.raises(OracleError):
        oracle.label(frames[1])


def test_any_ase_calculator_by_configuration(tmp_path):
    oracle = Oracle("ase.calculators.lj:LennardJones", sigma=2.0, epsilon=0.01, rc=5.0)
    assert oracle.name.startswith("ase.calculators.lj:LennardJones-")
    frame = oracle.label(bulk("Ar", "fcc", a=5.26, cubic=True))
    assert np.isfinite(frame.get_potential_energy())
    script = tmp_path / "my_dft.py"
    script.write_text("from ase.calculators.emt import EMT\n\ndef make(**kw):\n    return EMT()\n")
    calc, name = make_oracle(f"{script}:make", version="2024")
    assert type(calc).__name__ == "EMT" and name.endswith("make-2024")
    with pytest.raises(InputError, match="cannot import"):
        make_oracle("no_such_module_xyz:Calc")
    with pytest.raises(InputError, match="unknown oracle"):
        make_oracle("gaussian")


@pytest.mark.parametrize("name,package", [("sevennet", "sevenn"), ("tblite", "tblite")])
def test_optional_oracles_skip_cleanly(name, package, lgps_atoms):
    if importlib.util.find_spec(package) is None:
        assert available_oracles()[name] is False
        with pytest.raises(InputError, match="not installed"):
            make_oracle(name)
        pytest.skip(f"{package} not installed")
    frame = Oracle(name).label(lgps_atoms)
    assert np.isfinite(frame.get_forces()).all()


def test_relax_is_cached(tmp_path, monkeypatch):
    from pymatgen.io.ase import AseAtomsAdaptor

    from reference.structures import relax

    monkeypatch.setenv("MATSCREEN_CACHE", str(tmp_path / "cache"))
    cu = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.8, cubic=True))
    oracle = Oracle("emt")
    relaxed, info = relax(cu, oracle.calculator, oracle.name, fmax=0.01)
    assert info["converged"] and 3.55 < relaxed.lattice.a < 3.65   # EMT Cu: a ~ 3.59 Å
    assert len(list((tmp_path / "cache" / "relaxed").iterdir())) == 1
    again, info2 = relax(cu, None, oracle.name, fmax=0.01)           # from cache: no calculator needed
    assert again == relaxed and info2 == info


def test_cli_reference_md_with_configured_oracle(tmp_path, capsys):
    from ase.io import write

    write(tmp_path / "POSCAR", bulk("Cu", "fcc", a=3.6, cubic=True), format="vasp")
    out = tmp_path / "cu.h5"
    rc = main(["reference", "md", str(tmp_path / "POSCAR"), "--oracle", "emt", "--temperature-K", "300",
               "--steps", "20", "--stride", "5", "--label-every", "10", "--supercell", "2x2x2",
               "--out", str(out), "--store", str(tmp_path / "store"), "--json"])
    assert rc == 0 and out.is_file()
    assert LabelStore(tmp_path / "store").stats().n_frames == 3
    assert main(["reference", "md", "Li3PS4", "--steps", "0", "--out", str(tmp_path / "x.h5")]) == 2
    assert "steps >= 1" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


def test_oracle_failure_mid_md_keeps_labels(tmp_path):
    from reference.reference_md import ReferencePlan, run_reference_md

    class FailsLater(FlakyCalculator):
        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            Calculator.calculate(self, atoms, properties, system_changes)
            self.calls["n"] = self.calls.get("n", 0) + 1
            if self.calls["n"] > 12:
                raise RuntimeError("SCF did not converge")
            self.results = {"energy": -1.0, "forces": np.zeros((len(self.atoms), 3))}

    store = LabelStore(tmp_path / "store")
    oracle = Oracle(calculator=FailsLater(), label="late-fail", retries=0)
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True)
    with pytest.raises(OracleError, match="failed at MD step"):
        run_reference_md(atoms, oracle, ReferencePlan.nvt(steps=30, stride=5, label_every=5, temperature_K=50),
                         tmp_path / "ar.h5", store=store)
    assert len(store) == 3                      # steps 0, 5, 10 were labelled before the failure


def test_reference_md_never_labels_its_calibration_block(tmp_path):
    """Oracle MD labels every label_every steps, but never in the held-out final part after the equilibration."""
    from reference.reference_md import ReferencePlan, calibration_block, run_reference_md

    store = LabelStore(tmp_path / "store")
    protocol = ReferencePlan.nvt(steps=100, timestep_fs=2.0, stride=5, label_every=5, temperature_K=50,
                                 discard_fs=40.0, holdout_fraction=0.25)
    run = run_reference_md(bulk("Ar", "fcc", a=5.26, cubic=True), Oracle("lj"), protocol, tmp_path / "ar.h5",
                           store=store)
    first = calibration_block(101, 20, 0.25)            # steps 0..100, 20 of them equilibration
    assert first == 81
    steps = sorted(a.info["md_step"] for a in store.frames())
    assert steps == list(range(0, first, 5)) and run.labelled_frames == len(steps)
    assert run.metadata["reference_plan"]["holdout_fraction"] == 0.25
