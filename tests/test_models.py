"""Physics of the GNN force fields: conservative forces, stress, invariances, smooth cutoff, batching."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from common.errors import InputError
from models import AtomsBatch, build_model, neighbor_list
from models.dimenetpp import SphericalBasis, periodic_triplets

ARCHS = ["schnet", "painn", "dimenetpp", "cgcnn"]
TINY = {
    "schnet": dict(hidden_channels=16, num_filters=16, num_interactions=2, num_gaussians=12),
    "painn": dict(hidden_channels=16, num_interactions=2, num_rbf=8),
    "dimenetpp": dict(hidden_channels=16, num_blocks=2, int_emb_size=8, basis_emb_size=4, out_emb_channels=16,
                      num_spherical=3, num_radial=4),
    "cgcnn": dict(hidden_channels=16, num_layers=2, num_gaussians=12),
}
CUTOFF = 4.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(arch, elements=(3, 16), dtype="float64", seed=0):
    return build_model(arch, list(elements), dtype=dtype, seed=seed, cutoff=CUTOFF, **TINY[arch])


@pytest.fixture(scope="module")
def models64():
    out = {}
    for arch in ARCHS:
        m = tiny(arch)
        # non-trivial normalisation so reference energies and scale are exercised
        m.set_normalisation({3: -1.9, 16: -4.1}, scale=0.7, shift=0.05)
        out[arch] = m
    return out


def triclinic():
    cell = np.array([[3.3, 0.0, 0.0], [0.7, 3.1, 0.0], [0.5, -0.6, 3.4]])
    a = Atoms("Li2S2", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], cell=cell, pbc=True)
    a.rattle(0.15, seed=3)
    return a


def thin():
    """1.7 Å along x: far thinner than the 4 Å cutoff, each atom sees many of its own images."""
    return Atoms("LiS", positions=[[0.0, 0.0, 0.0], [0.85, 1.3, 0.9]], cell=[[1.7, 0, 0], [0.3, 5.0, 0], [0, 0.4, 5.2]],
                 pbc=True)


def energy(model, atoms):
    return float(model.predict_atoms(atoms).energy[0])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("make", [triclinic, thin], ids=["triclinic", "thin"])
def test_forces_are_minus_energy_gradient(models64, arch, make):
    model, atoms = models64[arch], make()
    forces = model.predict_atoms(atoms).forces.numpy()
    assert np.abs(forces).max() > 1e-4  # not trivially zero
    rng = np.random.default_rng(7)
    h = 1e-5
    for _ in range(2):   # directional finite differences along random displacement patterns
        d = rng.normal(size=forces.shape)
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions += h * d
        minus.positions -= h * d
        fd = -(energy(model, plus) - energy(model, minus)) / (2 * h)
        assert fd == pytest.approx(float((forces * d).sum()), rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("arch", ARCHS)
def test_stress_is_strain_derivative(models64, arch):
    model, atoms = models64[arch], triclinic()
    stress = model.predict_atoms(atoms, compute_stress=True).stress[0].numpy()
    assert np.allclose(stress, stress.T)
    h = 1e-5
    eps = np.array([[0.3, 0.1, -0.2], [0.1, -0.5, 0.4], [-0.2, 0.4, 0.2]])
    def strained(sign):
        a = atoms.copy()
        a.set_cell(atoms.cell[:] @ (np.eye(3) + sign * h * eps), scale_atoms=True)
        return a
    fd = (energy(model, strained(1)) - energy(model, strained(-1))) / (2 * h) / atoms.get_volume()
    assert fd == pytest.approx(float((stress * eps).sum()), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("arch", ARCHS)
def test_rotation_translation_permutation_invariance(models64, arch):
    model, atoms = models64[arch], triclinic()
    e0 = energy(model, atoms)
    f0 = model.predict_atoms(atoms).forces.numpy()
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    rot = atoms.copy()
    rot.set_cell(atoms.cell[:] @ q.T)
    rot.positions = atoms.positions @ q.T
    assert energy(model, rot) == pytest.approx(e0, rel=1e-10, abs=1e-10)
    assert np.allclose(model.predict_atoms(rot).forces.numpy(), f0 @ q.T, atol=1e-9)   # forces rotate along
    moved = atoms.copy()
    moved.positions += [0.37, -1.2, 2.1]
    assert energy(model, moved) == pytest.approx(e0, rel=1e-10, abs=1e-10)
    perm = [2, 0, 3, 1]
    assert energy(model, atoms[perm]) == pytest.approx(e0, rel=1e-10, abs=1e-10)
    assert np.allclose(model.predict_atoms(atoms[perm]).forces.numpy(), f0[perm], atol=1e-10)


@pytest.mark.parametrize("arch", ARCHS)
def test_supercell_energy_is_extensive(models64, arch):
    model, atoms = models64[arch], triclinic()
    assert energy(model, atoms * (2, 1, 1)) == pytest.approx(2 * energy(model, atoms), rel=1e-10)
    small = thin()
    assert energy(model, small * (1, 1, 2)) == pytest.approx(2 * energy(model, small), rel=1e-10)


@pytest.mark.parametrize("arch", ARCHS)
def test_energy_continuous_across_cutoff_and_skin_ignored(models64, arch):
    model = models64[arch]
    def dimer(r):
        return Atoms("LiS", positions=[[5, 5, 5], [5 + r, 5, 5]], cell=[12, 12, 12], pbc=True)
    inside, outside = energy(model, dimer(CUTOFF - 1e-7)), energy(model, dimer(CUTOFF + 1e-7))
    assert inside == pytest.approx(outside, abs=1e-9)
    atoms = triclinic()
    batch = AtomsBatch.from_atoms(atoms, dtype=torch.float64)
    skin = model.predict(batch, neighbor_list(batch, CUTOFF + 1.0))
    exact = model.predict(batch)
    assert torch.allclose(skin.energy, exact.energy, atol=1e-12)
    assert torch.allclose(skin.forces, exact.forces, atol=1e-12)


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_prediction_equals_single(models64, arch):
    model = models64[arch]
    frames = [triclinic(), thin(), triclinic() * (1, 2, 1)]
    frames[2].rattle(0.05, seed=5)
    batched = model.predict_atoms(frames, compute_stress=True)
    start = 0
    for k, atoms in enumerate(frames):
        single = model.predict_atoms(atoms, compute_stress=True)
        assert torch.allclose(batched.energy[k], single.energy[0], atol=1e-10)
        assert torch.allclose(batched.forces[start:start + len(atoms)], single.forces, atol=1e-10)
        assert torch.allclose(batched.stress[k], single.stress[0], atol=1e-10)
        start += len(atoms)


def test_float32_and_float64_agree():
    m64 = tiny("schnet")
    m32 = tiny("schnet", dtype="float32")
    m32.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
    atoms = triclinic()
    p32, p64 = m32.predict_atoms(atoms), m64.predict_atoms(atoms)
    assert p32.energy.dtype == torch.float32
    assert torch.allclose(p32.forces.double(), p64.forces, atol=1e-5)


def test_periodic_triplets_exclude_only_the_reverse_edge():
    # one atom in a small cubic cell: every neighbour is an image of itself
    atoms = Atoms("Li", positions=[[0, 0, 0]], cell=[2.5, 2.5, 2.5], pbc=True)
    batch = AtomsBatch.from_atoms(atoms, dtype=torch.float64)
    nl = neighbor_list(batch, 3.0)
    e = nl.n_edges
    assert e == 6  # the six face images at 2.5 Å (the next shell is at 3.54 Å)
    idx_kj, idx_ji = periodic_triplets(nl.edge_index, nl.shifts, 1)
    assert len(idx_kj) == e * (e - 1)
    assert not torch.any((nl.shifts[idx_kj] + nl.shifts[idx_ji]).abs().sum(-1) == 0)


def test_numeric_spherical_basis_matches_torch_geometric():
    from torch_geometric.nn.models.dimenet import SphericalBasisLayer

    ref = SphericalBasisLayer(3, 3, 5.0, 5)
    ours = SphericalBasis(3, 3, 5.0, 5)
    gen = torch.Generator().manual_seed(0)
    dist = torch.rand(20, generator=gen, dtype=torch.float64) * 4.0 + 0.8
    angle = torch.rand(40, generator=gen, dtype=torch.float64) * np.pi
    idx = torch.randint(0, 20, (40,), generator=gen)
    a, b = ref(dist, angle, idx), ours(dist, angle, idx)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(a.abs().max()))


def test_unknown_element_is_named(models64):
    atoms = Atoms("LiCl", positions=[[0, 0, 0], [1.5, 1.5, 1.5]], cell=[4, 4, 4], pbc=True)
    with pytest.raises(InputError, match="Cl"):
        models64["schnet"].predict_atoms(atoms)


@pytest.mark.parametrize("arch", ARCHS)
def test_grow_elements_keeps_existing_rows(arch):
    model = tiny(arch)
    atoms = triclinic()
    before = energy(model, atoms)
    added = model.grow_elements([3, 16, 32])
    assert added == [32] and model.elements == [3, 16, 32]
    assert energy(model, atoms) == pytest.approx(before, rel=1e-12)
    ge = atoms.copy()
    ge.numbers[0] = 32
    assert np.isfinite(energy(model, ge))


def test_builds_reject_bad_names():
    with pytest.raises(InputError, match="unknown model architecture"):
        build_model("mace", [3])
    with pytest.raises(InputError, match="float16"):
        build_model("schnet", [3], dtype="float16")


def test_lgps_cell_all_models(lgps_atoms):
    """The 50-atom LGPS cell runs through every architecture in float32 with finite outputs."""
    elements = sorted(set(lgps_atoms.numbers))
    for arch in ARCHS:
        model = build_model(arch, elements, dtype="float32", seed=0, cutoff=CUTOFF, **TINY[arch])
        p = model.predict_atoms(lgps_atoms, compute_stress=True)
        assert p.forces.shape == (50, 3) and torch.isfinite(p.forces).all() and torch.isfinite(p.stress).all()
        # forces sum to zero (translation invariance)
        assert p.forces.sum(0).abs().max() < 1e-3


@pytest.mark.parametrize("arch", ["schnet", "painn", "dimenetpp", "cgcnn"])
def test_core_repulsion_is_zero_at_bonds_and_stops_fusion(arch, tmp_path):
    """The ZBL core term: exactly nothing where training data live (bonds longer than 0.75 of the covalent-radius
    sum), tens of eV when two atoms are pushed to fusion, forces still -dE/dx; it survives a checkpoint."""
    from ase.build import bulk

    from models import load_model, save_model

    crystal = bulk("LiF", "rocksalt", a=4.0).repeat(2)                 # Li-F 2.0 Å > 0.75 x 1.85 Å
    on = build_model(arch, [3, 9], dtype="float64", seed=0)
    off = build_model(arch, [3, 9], dtype="float64", seed=0, core_repulsion=False)
    assert float(on.predict_atoms([crystal]).energy) == pytest.approx(float(off.predict_atoms([crystal]).energy))
    fused = crystal.copy()
    fused.positions[1] = fused.positions[0] + [0.5, 0.2, 0.1]          # 0.55 Å apart
    assert float(on.predict_atoms([fused]).energy) - float(off.predict_atoms([fused]).energy) > 20.0
    pred, h = on.predict_atoms([fused]), 1e-5
    for k in range(3):
        plus, minus = fused.copy(), fused.copy()
        plus.positions[1, k] += h
        minus.positions[1, k] -= h
        numeric = -(float(on.predict_atoms([plus]).energy) - float(on.predict_atoms([minus]).energy)) / (2 * h)
        assert float(pred.forces[1, k]) == pytest.approx(numeric, rel=1e-5, abs=1e-5)
    save_model(off, tmp_path / "m.pt")
    assert load_model(tmp_path / "m.pt").core_repulsion is False


def test_painn_matches_the_papers_message_written_plainly(models64):
    """The CPU-tuned PaiNN message (filter folded with the cutoff, channels split at atom level, the first
    layer's zero-vector term skipped) is the paper's equations: compare with them written out directly,
    with a non-zero vector state already in the first layer's input so a skipped term would show."""
    from models.base import cosine_cutoff

    model = models64["painn"]
    atoms = triclinic()
    batch = AtomsBatch.from_atoms([atoms], dtype=torch.float64)
    graph = model.build_graph(batch)
    i, j = graph.edge_index
    r = graph.distances
    unit = graph.vectors / r.unsqueeze(-1)
    rbf = torch.sin(r.unsqueeze(-1) * model.freq) / r.unsqueeze(-1)
    fcut = cosine_cutoff(r, model.cutoff)

    def plain_message(msg, s, v):
        x = msg.phi(s)[j] * msg.filter(rbf) * fcut.unsqueeze(-1)          # Schütt et al. 2021, eq. 7-8
        ds, dvv, dvs = torch.split(x, msg.f, dim=-1)
        dv = v[j] * dvv.unsqueeze(1) + dvs.unsqueeze(1) * unit.unsqueeze(-1)
        return s.index_add(0, i, ds), v.index_add(0, i, dv)

    with torch.no_grad():
        s = model.embedding(graph.species)
        v = torch.zeros(s.shape[0], 3, s.shape[1], dtype=s.dtype)
        for msg, upd in zip(model.messages, model.updates):
            s, v = upd(*plain_message(msg, s, v))
        plain = model.head(s).squeeze(-1)
        assert torch.allclose(model.atomic_energy(graph), plain, rtol=1e-12, atol=1e-12)
        # the skip is exact only because v starts at zero: with v != 0 the first layer's term matters
        edge = torch.cat([rbf * fcut.unsqueeze(-1), fcut.unsqueeze(-1)], dim=-1)
        s0 = model.embedding(graph.species)
        v0 = torch.randn(s0.shape[0], 3, s0.shape[1], dtype=s0.dtype, generator=torch.Generator().manual_seed(0))
        full = model.messages[0](s0, v0, i, j, edge, unit)
        assert torch.allclose(full[1], plain_message(model.messages[0], s0, v0)[1], rtol=1e-12, atol=1e-12)
        skipped = model.messages[0](s0, v0, i, j, edge, unit, first=True)
        assert not torch.allclose(skipped[1], full[1])
