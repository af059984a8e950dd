"""Training, datasets, checkpoints, fine-tuning, ensembles and the ASE calculator (real EMT labels)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from common.errors import InputError
from models import (Ensemble, MLFFCalculator, Predictor, TrainConfig, TrainingDiverged, build_model, evaluate, fit,
                    load_model, max_force_deviation, read_frames, save_model, split_frames)
from models.batch import AtomsBatch

TINY_SCHNET = dict(hidden_channels=24, num_filters=24, num_interactions=2, num_gaussians=16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def emt_frames(n, seed=0, gold_every=0, rattle=0.12, temperature=300.0, run="r0"):
    """Rattled 4-atom fcc Cu (optionally with Au) cells labelled by ASE's EMT."""
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        if gold_every and k % gold_every == 0:
            atoms[1].symbol = "Au"
        atoms.rattle(rattle, seed=seed * 1000 + k)
        atoms.calc = EMT()
        e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
        atoms.info.update(oracle="emt", source="test", temperature_K=temperature, run_id=run)
        frames.append(atoms)
    return frames


def config(**kw):
    base = dict(epochs=30, batch_size=4, lr=5e-3, ema_decay=0.9, early_stopping_patience=100, lr_patience=100)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small SchNet trained on EMT copper; held-out MAE before and after."""
    train, test = emt_frames(24, seed=0), emt_frames(8, seed=1)
    model = build_model("schnet", [29], seed=0, cutoff=4.0, **TINY_SCHNET)
    out = tmp_path_factory.mktemp("ckpt") / "cu.pt"
    lines = []
    # initial normalisation (reference energies, scale) as fit would set it, for a fair baseline
    from models.training import fit_normalisation
    fit_normalisation(model, train)
    before = evaluate(model, test)
    result = fit(model, train, config=config(epochs=25, lr=3e-3), out=out, progress=lines.append)
    after = evaluate(result.model, test)
    return {"result": result, "before": before, "after": after, "out": out, "lines": lines, "test": test}


def test_training_lowers_force_error_tenfold(trained):
    before, after = trained["before"]["force_mae_meV_A"], trained["after"]["force_mae_meV_A"]
    assert after * 10 <= before, (before, after)
    assert trained["after"]["force_r2"] > 0.95
    assert trained["after"]["energy_mae_meV_atom"] < 20
    assert set(trained["after"]) >= {"energy_mae_meV_atom", "force_mae_meV_A", "force_r2", "n_frames", "per_element"}
    assert trained["after"]["per_element"]["Cu"]["n_atoms"] == 32


def test_progress_lines_and_history(trained):
    lines = trained["lines"]
    assert lines[0].startswith("epoch 1/25") and "F MAE" in lines[0] and "meV/atom" in lines[0]
    hist = trained["result"].history
    assert len(hist) == trained["result"].epochs_run == 25
    assert trained["result"].best_val_loss == min(h["val_loss"] for h in hist)


def test_checkpoint_round_trip_is_identical(trained):
    loaded = load_model(trained["out"])
    model = trained["result"].model
    batch = AtomsBatch.from_atoms(trained["test"])
    a, b = model.predict(batch, compute_stress=True), loaded.predict(batch, compute_stress=True)
    assert torch.equal(a.energy, b.energy) and torch.equal(a.forces, b.forces) and torch.equal(a.stress, b.stress)
    ckpt = torch.load(trained["out"], weights_only=True)
    assert ckpt["arch"] == "schnet" and ckpt["elements"] == [29] and ckpt["format_version"] == 1
    assert ckpt["hparams"]["hidden_channels"] == 24 and "reference_energies_eV" in ckpt["normalisation"]
    assert loaded.training_info["oracle"] == "emt"


@pytest.mark.parametrize("arch", ["painn", "dimenetpp", "cgcnn"])
def test_save_load_every_architecture(tmp_path, arch):
    tiny = {"painn": dict(hidden_channels=8, num_interactions=1, num_rbf=6),
            "dimenetpp": dict(hidden_channels=8, num_blocks=1, int_emb_size=4, basis_emb_size=4, out_emb_channels=8,
                              num_spherical=3, num_radial=3),
            "cgcnn": dict(hidden_channels=8, num_layers=1, num_gaussians=8)}
    model = build_model(arch, [3, 16], dtype="float64", seed=2, cutoff=4.0, **tiny[arch])
    model.set_normalisation({3: -1.0, 16: -3.0}, scale=0.5)
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.param_dtype == torch.float64 and loaded.arch == arch
    atoms = bulk("Li", "bcc", a=3.5, cubic=True)
    atoms[1].symbol = "S"
    atoms.rattle(0.1, seed=1)
    assert torch.equal(model.predict_atoms(atoms).forces, loaded.predict_atoms(atoms).forces)


def test_fine_tune_adds_new_element(trained, tmp_path):
    cu_model = load_model(trained["out"])
    cu_row = cu_model.embedding.weight.detach().clone()
    data = emt_frames(12, seed=3, gold_every=2)
    result = fit(cu_model, data, config=config(epochs=3), out=tmp_path / "cuau.pt")
    assert result.added_elements == [79]
    model = load_model(tmp_path / "cuau.pt")
    assert model.elements == [29, 79] and model.embedding.num_embeddings == 2
    ref = model.normalisation()["reference_energies_eV"]
    assert ref[29] == pytest.approx(cu_model.normalisation()["reference_energies_eV"][29], abs=0.5)
    assert np.isfinite(evaluate(model, data)["force_mae_meV_A"])
    assert cu_row.shape == (1, 24)


def test_resume_continues_training(tmp_path):
    data = emt_frames(10, seed=4)
    model = build_model("schnet", [29], seed=1, cutoff=4.0, **TINY_SCHNET)
    fit(model, data, config=config(epochs=2), out=tmp_path / "r.pt")
    lines = []
    result = fit(None, data, config=config(epochs=4), out=tmp_path / "r.pt", resume=tmp_path / "r.pt",
                 progress=lines.append)
    assert lines[0].startswith("resuming at epoch 3")
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]


def test_stress_term_trains_painn():
    """With w_S > 0 the stress (eV/Å³) enters the loss through autograd of the strain (PaiNN)."""
    data = emt_frames(6, seed=11, rattle=0.05)
    for k, atoms in enumerate(data):   # strained cells give non-trivial stresses
        atoms.set_cell(atoms.cell[:] * (0.97 + 0.01 * k), scale_atoms=True)
        atoms.calc = EMT()
        e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
    model = build_model("painn", [29], seed=0, cutoff=4.0, hidden_channels=16, num_interactions=1, num_rbf=8)
    from models.training import GraphData, _loss

    gd = GraphData(data, 4.0)
    batch, nl, energy, forces, stress = gd.collate(range(6))
    assert torch.isfinite(stress).all()
    plain, _ = _loss(model, batch, nl, energy, forces, stress, config(stress_weight=0.0))
    with_s, _ = _loss(model, batch, nl, energy, forces, stress, config(stress_weight=1e4))
    pred = model.predict(batch, nl, compute_stress=True)
    assert float((with_s - plain).detach()) == pytest.approx(1e4 * float(((pred.stress - stress) ** 2).mean()), rel=1e-4)
    result = fit(model, data, val_frames=data, config=config(epochs=2, stress_weight=1e4, batch_size=3))
    assert np.isfinite(result.history[-1]["train_loss"])


def test_time_budget_stops_training():
    data = emt_frames(10, seed=5)
    model = build_model("schnet", [29], seed=1, cutoff=4.0, **TINY_SCHNET)
    result = fit(model, data, config=config(epochs=10_000, max_time_s=1.0))
    assert result.stop_reason == "time budget" and result.epochs_run < 10_000


def test_time_budget_spent_before_an_epoch_starts_says_so(tmp_path):
    """A budget that runs out between epochs (here: spent by the run being resumed) stops on 'time budget'."""
    data = emt_frames(10, seed=5)
    model = build_model("schnet", [29], seed=1, cutoff=4.0, **TINY_SCHNET)
    fit(model, data, config=config(epochs=2), out=tmp_path / "t.pt")
    result = fit(None, data, config=config(epochs=10, max_time_s=1e-6), out=tmp_path / "t.pt",
                 resume=tmp_path / "t.pt")
    assert result.stop_reason == "time budget" and result.epochs_run == 2


def test_nan_labels_raise_training_diverged():
    data = emt_frames(6, seed=6)
    for atoms in data:
        atoms.calc.results["energy"] = float("nan")
    model = build_model("schnet", [29], seed=1, cutoff=4.0, **TINY_SCHNET)
    with pytest.raises(TrainingDiverged, match="non-finite"):
        fit(model, data, config=config(epochs=5, max_nan=3, batch_size=2))


def test_bad_datasets_are_refused(tmp_path):
    model = build_model("schnet", [29], cutoff=4.0, **TINY_SCHNET)
    with pytest.raises(InputError, match="no frames"):
        fit(model, [], config=config())
    unlabelled = bulk("Cu", "fcc", a=3.61, cubic=True)
    with pytest.raises(InputError, match="no energy"):
        fit(model, [unlabelled], config=config())
    no_forces = bulk("Cu", "fcc", a=3.61, cubic=True)
    no_forces.calc = SinglePointCalculator(no_forces, energy=-1.0)
    with pytest.raises(InputError, match="no forces"):
        read_frames([no_forces])
    xdatcar = tmp_path / "XDATCAR"
    write(xdatcar, [bulk("Cu", "fcc", a=3.61, cubic=True)] * 2, format="vasp-xdatcar")
    with pytest.raises(InputError, match="XDATCAR"):
        read_frames(xdatcar)
    mixed = emt_frames(4, seed=7)
    mixed[0].info["oracle"] = "chgnet-0.3.0"
    with pytest.raises(InputError, match="mixes labels"):
        fit(model, mixed, config=config())
    with pytest.raises(InputError, match="not found"):
        read_frames(tmp_path / "missing.extxyz")


def test_read_extxyz_and_ase_db_keep_labels_and_metadata(tmp_path):
    frames = emt_frames(3, seed=8, temperature=600.0, run="run-a")
    write(tmp_path / "d.extxyz", frames)
    write(tmp_path / "d.db", frames)
    for path in (tmp_path / "d.extxyz", tmp_path / "d.db"):
        back = read_frames(path)
        assert len(back) == 3
        assert np.allclose(back[1].get_forces(), frames[1].get_forces())
        assert back[2].get_potential_energy() == pytest.approx(frames[2].get_potential_energy())
        assert np.allclose(back[0].get_stress(), frames[0].get_stress())
    back = read_frames(tmp_path / "d.extxyz")
    assert back[0].info["temperature_K"] == 600.0 and back[0].info["run_id"] == "run-a"
    assert back[0].info["oracle"] == "emt"


def test_vasp_files_are_read_through_ase():
    """vasprun.xml and OUTCAR from ASE's own test data (shipped inside the ase package)."""
    from pathlib import Path

    import ase

    vasp = Path(ase.__file__).parent / "test" / "testdata" / "vasp"
    if not vasp.is_dir():
        pytest.skip("this ase installation ships no VASP test files")
    run = read_frames(vasp / "vasprun_pstress.xml")
    assert run[0].get_potential_energy() == pytest.approx(-20.2472, abs=1e-3) and run[0].get_forces().shape == (2, 3)
    assert run[0].info["source"] == "file:vasprun_pstress.xml"
    out = read_frames(vasp / "OUTCAR_example_1")
    assert len(out[0]) == 18 and np.isfinite(out[0].get_forces()).all()


def test_stratified_split_is_reproducible():
    frames = emt_frames(10, seed=9, temperature=300.0, run="a") + emt_frames(10, seed=10, temperature=900.0, run="b")
    t1, v1 = split_frames(frames, 0.2, seed=3)
    t2, v2 = split_frames(frames, 0.2, seed=3)
    assert [id(a) for a in v1] == [id(a) for a in v2] and len(v1) == 4 and len(t1) == 16
    assert sorted(a.info["temperature_K"] for a in v1) == [300.0, 300.0, 900.0, 900.0]
    t4, v4 = split_frames(frames, seed=3, val_per_group=3)
    assert len(v4) == 6 and len(t4) == 14
    _, v3 = split_frames(frames, 0.2, seed=4)
    assert [id(a) for a in v3] != [id(a) for a in v1]


def test_ensemble_mean_and_force_deviation(trained, tmp_path):
    from models.training import fit_normalisation

    base = trained["result"].model
    other = build_model("schnet", [29], seed=5, cutoff=4.0, **TINY_SCHNET)
    fit_normalisation(other, trained["test"])
    same = Ensemble([base, base])
    batch = AtomsBatch.from_atoms(trained["test"][:3])
    p_same = same.predict(batch)
    assert torch.allclose(p_same.force_std, torch.zeros_like(p_same.force_std), atol=1e-7)
    ens = Ensemble([base, other])
    p = ens.predict(batch, compute_stress=True)
    p1, p2 = base.predict(batch), other.predict(batch)
    assert torch.allclose(p.forces, (p1.forces + p2.forces) / 2, atol=1e-6)
    expected = ((p1.forces - p2.forces).norm(dim=-1) / 2)      # rms over 2 members of |F_k - <F>|
    assert torch.allclose(p.force_std, expected, atol=1e-6)
    dev = max_force_deviation(p, batch.system_index, batch.n_systems)
    assert dev.shape == (3,) and torch.all(dev > 0)
    save_model(ens, tmp_path / "ens.pt")
    back = load_model(tmp_path / "ens.pt")
    assert isinstance(back, Ensemble) and len(back) == 2
    assert torch.equal(back.predict(batch).force_std, p.force_std)


def test_calculator_agrees_with_predict_and_runs_ase_md(trained):
    from ase import units
    from ase.md.verlet import VelocityVerlet

    model = trained["result"].model
    atoms = trained["test"][0].copy()
    atoms.calc = MLFFCalculator(model)
    pred = model.predict_atoms(atoms, compute_stress=True)
    assert atoms.get_potential_energy() == pytest.approx(float(pred.energy[0]), rel=1e-6)
    assert np.allclose(atoms.get_forces(), pred.forces.numpy(), atol=1e-6)
    s = pred.stress[0].numpy()
    assert np.allclose(atoms.get_stress(), [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]], atol=1e-7)
    big = atoms * (2, 2, 2)
    big.calc = MLFFCalculator(trained["out"])        # from a checkpoint path
    e0 = big.get_total_energy()
    dyn = VelocityVerlet(big, 1.0 * units.fs)
    dyn.run(10)
    assert abs(big.get_total_energy() - e0) < 0.05


def test_predictor_returns_on_callers_dtype(trained):
    pred = Predictor(trained["out"], dtype="float64")
    batch = AtomsBatch.from_atoms(trained["test"][:2], dtype=torch.float32)
    out = pred.predict(batch)
    assert out.forces.dtype == torch.float32 and pred.cutoff == 4.0 and pred.elements == [29]


def test_ensemble_members_trained_in_parallel_processes_equal_one_after_another(tmp_path):
    """``train_ensemble(processes=2)`` (the Trainer on 2 CPUs): same seeds, same data, the same members."""
    from models import EnsembleConfig, load_model, train_ensemble

    frames = emt_frames(8)
    cfg = EnsembleConfig(architectures=("schnet",), size=2, hidden=8, layers=1, cutoff_A=4.0)
    tc = TrainConfig(epochs=2, batch_size=4)
    one = train_ensemble(frames, cfg, tc, tmp_path / "a", seed=3)
    two = train_ensemble(frames, cfg, tc, tmp_path / "b", seed=3, processes=2)
    assert two.epochs == one.epochs == [2, 2] and two.stop_reasons == ["max epochs", "max epochs"]
    for a, b in zip(one.members, two.members):
        x = load_model(a).predict_atoms(frames[:2]).forces
        y = load_model(b).predict_atoms(frames[:2]).forces
        assert torch.allclose(x, y, atol=1e-6)


def test_core_repulsion_ends_where_the_training_data_begin(tmp_path):
    """Training ends each pair's core switch at its closest approach in the data (train + validation): the
    prior is exactly zero on every training frame and repulsive just inside; fine-tuning only moves it in;
    it survives a checkpoint, a grown element table, and a checkpoint from before it existed."""
    from ase.data import covalent_radii
    from ase.neighborlist import neighbor_list

    from models.base import CORE_OFF
    from models.graph import closest_pairs
    from models.training import fit_core_off

    data = emt_frames(12, seed=5, rattle=0.05)
    closest = min(float(neighbor_list("d", a, 4.0).min()) for a in data)      # ASE as the peer
    assert closest_pairs(((a.numbers, a.positions, a.cell.array, a.pbc) for a in data), 4.0) == {
        (29, 29): pytest.approx(closest, abs=1e-9)}
    r_cov = 2 * covalent_radii[29]
    assert CORE_OFF * r_cov < closest < 1.1 * r_cov
    model = build_model("schnet", [29], seed=0, cutoff=4.0, dtype="float64", **TINY_SCHNET)
    assert float(model.core_off[0, 0]) == pytest.approx(CORE_OFF * r_cov)
    fit(model, data, config=config(epochs=1), out=tmp_path / "cu.pt")
    model = load_model(tmp_path / "cu.pt").double()
    assert float(model.core_off[0, 0]) == pytest.approx(closest) and model.core_off_table() == {
        "Cu-Cu": pytest.approx(closest)}
    for atoms in data:
        graph = model.build_graph(AtomsBatch.from_atoms([atoms], dtype=torch.float64))
        assert float(model.core_energy(graph).abs().sum()) == 0.0
    pair = data[0].copy()
    i, j, d, vec = neighbor_list("ijdD", pair, 4.0)
    k = int(np.argmin(d))
    pair.positions[j[k]] -= vec[k] / d[k] * (d[k] - 0.9 * closest)          # that pair at 0.9 x its closest approach
    graph = model.build_graph(AtomsBatch.from_atoms([pair], dtype=torch.float64))
    assert float(model.core_energy(graph).sum()) > 0.05                      # eV

    fit_core_off(model, emt_frames(4, seed=6, rattle=0.02), fine_tune=True)    # new data no closer: unchanged
    assert float(model.core_off[0, 0]) == pytest.approx(closest)
    pair.calc = data[0].calc
    fit_core_off(model, [pair], fine_tune=True)                              # closer data: moved in to it
    assert float(model.core_off[0, 0]) == pytest.approx(0.9 * closest, rel=1e-6)

    model.grow_elements([79])
    assert model.elements == [29, 79]
    assert float(model.core_off[0, 0]) == pytest.approx(0.9 * closest, rel=1e-6)
    assert float(model.core_off[1, 1]) == pytest.approx(CORE_OFF * 2 * covalent_radii[79])

    old = torch.load(tmp_path / "cu.pt", weights_only=True)                   # as written before core_off existed
    del old["state_dict"]["core_off"]
    torch.save(old, tmp_path / "old.pt")
    assert float(load_model(tmp_path / "old.pt").core_off[0, 0]) == pytest.approx(CORE_OFF * r_cov)


def test_training_reports_its_epochs_to_the_progress_line(tmp_path):
    """``common.progress``: the epoch done of those planned, with the loss (what the campaign's line shows)."""
    from common import progress

    data = emt_frames(10, seed=5)
    model = build_model("schnet", [29], seed=1, cutoff=4.0, **TINY_SCHNET)
    with progress.reporting(tmp_path / "p" / "trainer.json"):
        fit(model, data, config=config(epochs=3))
    d = progress.latest(tmp_path / "p")
    assert (d["task"], d["done"], d["total"], d["unit"]) == ("training", 3.0, 3.0, "epoch") and d["extra"]["loss"] > 0
