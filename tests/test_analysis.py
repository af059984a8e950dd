"""Analysis: RDF, diffusion with honest errors, conductivity, Arrhenius, verdicts, CLI bad inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from ase import units
from ase.data import covalent_radii
from ase.build import bulk

from analysis.diffusion import arrhenius, diffusion, msd_fft, nernst_einstein_mS_cm, unwrap
from analysis.rdf import rdf
from common.trajectory import Trajectory
from analysis.verdicts import VerdictThresholds, judge, reference_profile
from md.trajectory import TrajectoryWriter
from orchestrator.cli import main


def random_walk(seed, d_cm2_s=1e-5, n_frames=400, n_li=16, dt_fs=100.0, box=12.0):
    """Li random walkers (known D) in a static S framework; returns wrapped positions, cell, numbers."""
    rng = np.random.default_rng(seed)
    step_sd = np.sqrt(2 * d_cm2_s / 0.1 * dt_fs)               # per Cartesian component, Å
    li = rng.random((n_li, 3)) * box + np.cumsum(rng.normal(0, step_sd, (n_frames, n_li, 3)), axis=0)
    frame = np.broadcast_to(rng.random((24, 3)) * box, (n_frames, 24, 3))
    pos = np.concatenate([li, frame], axis=1)
    cell = np.eye(3) * box
    return pos % box, cell, np.array([3] * n_li + [16] * 24)


def test_rdf_perfect_crystal_peaks_at_shells_even_beyond_half_cell():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)             # cell 3.6 Å; r_max 6 Å > half width
    res = rdf(atoms.positions, atoms.cell[:], atoms.numbers, r_max_A=6.0, n_bins=600)
    shells = 3.6 * np.sqrt([0.5, 1.0, 1.5, 2.0, 2.5])
    peaks = res.r_A[res.g_total > 1.0]
    for s in shells:
        assert np.min(np.abs(peaks - s)) < 0.011
    coordination = np.sum(res.g_total * 4 * np.pi * res.r_A ** 2 * np.diff(np.linspace(0, 6, 601))
                          * (len(atoms) - 1) / atoms.get_volume() * (res.r_A < 2.8))
    assert coordination == pytest.approx(12.0, rel=1e-4)


def test_ideal_gas_rdf_tends_to_one():
    rng = np.random.default_rng(0)
    pos = rng.random((20, 200, 3)) * 10.0
    res = rdf(pos, np.eye(3) * 10.0, np.array([3] * 100 + [16] * 100), r_max_A=8.0, n_bins=40)
    assert np.abs(res.g_total[5:] - 1).max() < 0.05
    assert set(res.partial) == {"Li-Li", "Li-S", "S-S"}
    assert np.abs(res.partial["Li-S"][5:] - 1).max() < 0.08


def test_msd_fft_matches_direct_average():
    x = np.cumsum(np.random.default_rng(1).normal(size=(50, 4, 3)), axis=0)
    direct = [np.mean([np.sum((x[t0 + lag] - x[t0]) ** 2, axis=1).mean() for t0 in range(50 - lag)])
              for lag in range(50)]
    np.testing.assert_allclose(msd_fft(x), direct, atol=1e-9)


def test_random_walk_recovers_d_within_reported_error_calibrated():
    z = []
    for seed in range(12):
        wrapped, cell, numbers = random_walk(seed)
        res = diffusion(unwrap(wrapped, cell), numbers, 100.0, "Li")
        z.append((res.diffusivity_cm2_s - 1e-5) / res.diffusivity_err_cm2_s)
        assert res.path_ok
    z = np.array(z)
    assert np.mean(np.abs(z) < 2) >= 0.8            # ~95 % expected within 2 sigma
    assert 0.4 < np.std(z) < 1.6                     # error bars neither far too small nor too large


def test_a_fit_start_capped_in_time_narrows_d_on_long_random_walks_and_still_covers_the_truth():
    """Default window (lags 10-50 % of the run): D's error does not shrink with length.  With the start
    capped at 2 ps (``fit_start_max_fs``) a 16x longer random walk gives a narrower D, still honest."""
    rel, z = {}, []
    for n_frames, cap in ((150, None), (2400, None), (2400, 2000.0)):     # 7.5 ps and 120 ps at 50 fs
        errors = []
        for seed in range(30):
            wrapped, cell, numbers = random_walk(100 + seed, n_frames=n_frames, n_li=24, dt_fs=50.0, box=12.0)
            res = diffusion(unwrap(wrapped, cell), numbers, 50.0, "Li", fit_start_max_fs=cap)
            errors.append(res.diffusivity_err_cm2_s / 1e-5)
            assert res.fit_start_fs == pytest.approx(cap or 0.1 * (n_frames - 1) * 50.0, abs=50.0)
            if cap:
                z.append((res.diffusivity_cm2_s - 1e-5) / res.diffusivity_err_cm2_s)
        rel[n_frames, cap] = float(np.median(errors))
    assert rel[2400, None] > rel[150, None] / 1.3           # the default: about as wide at any length
    assert rel[2400, 2000.0] < rel[150, None] / 1.8         # capped: measured 2.4x narrower
    assert np.mean(np.abs(z) < 2) >= 0.85                   # ~95 % expected; still covers the truth


def test_short_non_diffusive_run_gives_a_finite_error():
    """Vibrating atoms over a short run: the GLS covariance stays positive definite (no NaN error)."""
    rng = np.random.default_rng(7)
    n_frames, n_li = 25, 6
    base = rng.uniform(0, 10.0, size=(n_li, 3))
    frames = base[None] + 0.1 * rng.normal(size=(n_frames, n_li, 3))
    for seed in range(20):
        rng = np.random.default_rng(seed)
        frames = base[None] + 0.1 * rng.normal(size=(n_frames, n_li, 3))
        res = diffusion(frames, np.full(n_li, 3), 10.0, "Li", fit_start_fraction=0.05)
        assert np.isfinite(res.diffusivity_err_cm2_s) and res.diffusivity_err_cm2_s > 0
        assert abs(res.diffusivity_cm2_s) < 3 * res.diffusivity_err_cm2_s + 1e-6


def test_diffusivity_agrees_with_pymatgen_diffusion_analyzer():
    from pymatgen.analysis.diffusion.analyzer import DiffusionAnalyzer
    from pymatgen.core import Lattice, Structure

    wrapped, cell, numbers = random_walk(3, n_frames=100, n_li=400, box=30.0)
    structure = Structure(Lattice(cell), numbers, wrapped[0], coords_are_cartesian=True)
    unwrapped = unwrap(wrapped, cell)
    displacements = np.transpose(unwrapped - unwrapped[0], (1, 0, 2))       # [site, frame, 3] Å
    analyzer = DiffusionAnalyzer(structure, displacements, "Li", temperature=1000, time_step=100,
                                 step_skip=1, smoothed=False)
    ours = diffusion(unwrap(wrapped, cell), numbers, 100.0, "Li", fit_start_fraction=0.0, fit_end_fraction=1.0)
    # both fit the whole MSD (pymatgen by OLS, ours by GLS): same data, estimates within our error bar
    # (pymatgen's non-smoothed MSD uses one time origin, hence many walkers for a fair comparison)
    assert ours.diffusivity_cm2_s == pytest.approx(analyzer.diffusivity, rel=0.1)


def test_diffusivity_and_its_error_agree_with_kinisi():
    """kinisi (Bayesian fit with the random-walk MSD covariance) on the same walk and the same fit window."""
    import warnings

    import scipp as sc
    from ase import Atoms
    from kinisi.analyze import DiffusionAnalyzer as KinisiAnalyzer

    for seed in (0, 2):
        wrapped, cell, numbers = random_walk(seed)                   # 40 ps, a frame every 100 fs
        ours = diffusion(unwrap(wrapped, cell), numbers, 100.0, "Li")
        frames = [Atoms(numbers=numbers, positions=p, cell=cell, pbc=True) for p in wrapped]
        lags_ps = np.arange(1, len(wrapped) // 2) * 0.1                    # our window ends at 50 % of the run
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = KinisiAnalyzer.from_ase(frames, specie="Li", time_step=100.0 * sc.Unit("fs"),
                                             step_skip=1 * sc.Unit("dimensionless"), progress=False,
                                             dt=sc.array(dims=["time interval"], values=lags_ps, unit="ps"))
            theirs.diffusion(ours.fit_start_fs / 1000.0 * sc.Unit("ps"), progress=False,
                             random_state=np.random.RandomState(seed))
        d = theirs.D.values                                                  # posterior samples, cm^2/s
        assert abs(ours.diffusivity_cm2_s - np.mean(d)) < ours.diffusivity_err_cm2_s
        assert 0.6 < np.std(d) / ours.diffusivity_err_cm2_s < 1.7          # measured 1.25-1.37


def test_conductivity_matches_nernst_einstein_by_hand():
    d, n, vol, t = 1e-5, 20, 1000.0, 800.0
    by_hand = (n / (vol * 1e-24)) * (1.602176634e-19) ** 2 * d / (1.380649e-23 * t) * 1e3
    assert nernst_einstein_mS_cm(d, n, vol, t) == pytest.approx(by_hand, rel=1e-5)
    assert nernst_einstein_mS_cm(d, n, vol, t, charge=2) == pytest.approx(4 * nernst_einstein_mS_cm(d, n, vol, t))


def test_arrhenius_recovers_known_activation_energy():
    ea, sigma0 = 0.25, 5e4
    temps = np.array([800.0, 900.0, 1000.0, 1100.0, 1200.0])
    rng = np.random.default_rng(0)
    sigma = sigma0 * np.exp(-ea / (units.kB * temps)) * (1 + 0.03 * rng.normal(size=5))
    fit = arrhenius(temps, sigma, 0.03 * sigma)
    assert abs(fit.activation_energy_eV - ea) < 3 * fit.activation_energy_err_eV
    assert fit.activation_energy_err_eV < 0.05
    true300 = np.log10(sigma0 * np.exp(-ea / (units.kB * 300)))
    assert abs(fit.log10_sigma300_mS_cm - true300) < 3 * fit.log10_sigma300_err
    exact = arrhenius(temps, sigma0 * np.exp(-ea / (units.kB * temps)), 0.01 * sigma)
    assert exact.activation_energy_eV == pytest.approx(ea, rel=1e-9)


def _frames(n=30, fuse_at=None, explode_at=None, drift=0.0):
    atoms = bulk("Li", "sc", a=3.5).repeat(2) + bulk("Na", "sc", a=3.5).repeat(2)   # CsCl-like, 8 + 8 atoms
    atoms.positions[8:] += 1.75
    atoms.wrap()
    rng = np.random.default_rng(0)
    pos = atoms.positions[None] + 0.05 * rng.normal(size=(n, len(atoms), 3))
    pos[:, 8:, 0] += drift * np.arange(n)[:, None] / n
    if fuse_at is not None:
        pos[fuse_at:, 1] = pos[fuse_at:, 0] + [0.3, 0, 0]
    temps = np.full(n, 300.0)
    if explode_at is not None:
        temps[explode_at:] = 5000.0
    cells = np.broadcast_to(atoms.cell[:], (n, 3, 3))
    return Trajectory(positions=pos % 7.0, unwrapped=pos, cells=cells, numbers=atoms.numbers, steps=np.arange(n) * 10,
                      dt_fs=10.0, temperatures_K=temps, temperature_K=300.0)


def test_verdict_detectors_fire_on_bad_and_stay_silent_on_good():
    calm = judge(_frames())
    assert calm.status == "stable"
    close = _frames()
    close.positions = close.positions.copy()
    close.positions[7, 1] = close.positions[7, 0] + [0, 0, 2.0]     # Li-Li at 2.0 Å in frame 7: no fusion
    ev = judge(close).evidence                                       # the closest pair is one pair in one frame
    assert (ev["pair"], round(ev["min_distance_A"], 6)) == ("Li-Li", 2.0)
    assert ev["min_distance_ratio"] == pytest.approx(2.0 / (2 * covalent_radii[3]))
    fused = judge(_frames(fuse_at=12))
    assert fused.status == "atom_fusion" and fused.failure_step == 120 and fused.evidence["pair"] == "Li-Li"
    hot = judge(_frames(explode_at=7))
    assert hot.status == "exploded" and hot.failure_step == 70
    drift = judge(_frames(drift=5.0))
    assert drift.status == "framework_drift" and drift.evidence["framework_drift_A"] > 3.0
    good = _frames(n=60)
    th = VerdictThresholds(rdf_block_fs=10.0)                 # frames 10 fs apart, independent noise: 1-frame blocks
    reference = reference_profile(good.frames(30), th)
    same = judge(good.frames(0), reference, th)
    assert same.evidence["rdf_mae"] < same.evidence["rdf_critical"]       # within the reference's own noise
    squeezed = _frames(n=60).frames(0)
    squeezed.positions = squeezed.positions * 0.9                          # atoms moved, cell kept
    v = judge(squeezed, reference, th)
    assert v.status == "rdf_mismatch" and v.evidence["rdf_p_value"] < 0.05
    strained = _frames(n=60).frames(0)
    strained.positions, strained.cells = strained.positions * 1.03, strained.cells * 1.03
    v = judge(strained, reference, th)
    assert v.status == "lattice_mismatch" and v.evidence["lattice_strain"] == pytest.approx(0.03)


def test_ensemble_deviation_decides_between_stable_and_uncertain_and_picks_frames():
    from analysis.selection import select_for_labelling

    th = VerdictThresholds(trust_lo_eV_A=0.05, trust_hi_eV_A=0.15, accurate_fraction=0.9, rdf_block_fs=10.0)
    confident = _frames()
    confident.force_deviation = np.full(30, 0.01)
    assert judge(confident, thresholds=th).status == "stable"
    unsure = _frames()
    unsure.force_deviation = np.where(np.arange(30) % 3 == 0, 0.1, 0.01)      # a third inside the band
    v = judge(unsure, thresholds=th)
    assert v.status == "uncertain" and v.evidence["selected_fraction"] == pytest.approx(1 / 3)
    levels = th.trust_levels()
    picked = select_for_labelling(unsure, v, levels, n_max=4, min_rmsd_A=0.0)
    assert picked == [0, 3, 6, 9]                                               # in-band frames, in time order
    assert select_for_labelling(unsure, v, levels, n_max=4, min_rmsd_A=1.0) == [0]  # all within 1 Å RMSD of frame 0
    derived = VerdictThresholds(rdf_block_fs=10.0)                              # trust levels from the reference
    assert derived.trust_levels() is None
    assert derived.trust_levels(np.linspace(0.0, 1.0, 101)) == pytest.approx((0.9, 2.7))


def test_replicas_share_the_labels_in_turn_and_the_audit_frames_spread_over_every_replica():
    from analysis.selection import audit_frames, interleave, select_for_labelling

    assert interleave([[1, 5, 9], [2], [3, 7]], 4) == [[1, 5], [2], [3]]         # in turn, a short list gives way
    assert interleave([[1, 5, 9], [], [3, 7]], 4) == [[1, 5], [], [3, 7]]
    assert interleave([[4, 1]], 9) == [[1, 4]]
    reps = [_frames() for _ in range(3)]                                            # 30 frames each
    assert audit_frames(reps[0], 4) == [[7, 14, 21, 29]]                            # one run: a list for it
    per = audit_frames(reps, 8)
    assert [len(f) for f in per] == [3, 3, 2] and all(f[-1] == 29 for f in per)     # each ends at its last frame
    th = VerdictThresholds(trust_lo_eV_A=0.05, trust_hi_eV_A=0.15, accurate_fraction=0.9, rdf_block_fs=10.0)
    for r in reps:
        r.force_deviation = np.where(np.arange(30) % 3 == 0, 0.1, 0.01)
    v = judge(reps, thresholds=th)
    assert v.status == "uncertain" and v.evidence["replicas"] == 3 and v.evidence["n_frames"] == 90
    one = select_for_labelling(reps[0], v, th.trust_levels(), n_max=4, min_rmsd_A=0.0)
    picked = interleave([select_for_labelling(r, v, th.trust_levels(), n_max=4, min_rmsd_A=0.0) for r in reps], 4)
    assert picked == [one[:2], one[:1], one[:1]]


def test_live_verdict_of_the_md_engine_is_honoured():
    t = _frames()
    t.live_verdict = {"status": "atom_fusion", "failure_step": 40, "evidence": {"pair": "Li-Na"}}
    v = judge(t)
    assert (v.status, v.failure_step, v.evidence["pair"]) == ("atom_fusion", 40, "Li-Na")


def _write_traj(path, wrapped, cell, numbers, dt_fs=100.0, times=None):
    with TrajectoryWriter(path, numbers, timestep_fs=dt_fs, stride=1, temperature_K=800.0) as w:
        unwrapped = unwrap(wrapped, cell)
        for k in range(len(wrapped)):
            w.append(step=k, positions=wrapped[k], unwrapped_positions=unwrapped[k], cell=cell, potential_energy=0.0,
                     kinetic_energy=0.0, temperature_K=800.0, time_fs=None if times is None else times[k])


def test_analyze_cli_json_and_bad_inputs(tmp_path, capsys):
    wrapped, cell, numbers = random_walk(0, n_frames=100)
    good = tmp_path / "good.h5"
    _write_traj(good, wrapped, cell, numbers)
    assert main(["analyze", str(good), "--species", "Li", "--json", "--reference", str(good)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("diffusivity_cm2_s", "diffusivity_err_cm2_s", "conductivity_mS_cm", "conductivity_err_mS_cm",
                "n_frames", "verdict", "rdf_mae"):
        assert key in out
    assert out["n_frames"] == 100 and out["dt_fs"] == 100.0 and out["rdf_mae"] == 0.0

    assert main(["analyze", str(good), "--species", "Na", "--json"]) == 2
    assert "no Na atoms" in capsys.readouterr().err
    short = tmp_path / "short.h5"
    _write_traj(short, wrapped[:8], cell, numbers)
    assert main(["analyze", str(short), "--species", "Li", "--json"]) == 2
    assert "at least 20" in capsys.readouterr().err
    uneven = tmp_path / "uneven.h5"
    times = np.arange(100) * 100.0
    times[50:] += 30.0
    _write_traj(uneven, wrapped, cell, numbers, times=times)
    assert main(["analyze", str(uneven), "--json"]) == 2
    assert "inconsistent time steps" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(good.read_bytes()[:3000])
    assert main(["analyze", str(corrupt), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("matscreen: error:") and len(err.strip().splitlines()) == 1


def test_md_cli_writes_trajectories_and_summary(tmp_path, lgps_cif, capsys):
    out = tmp_path / "run"
    rc = main(["md", "--model", "lj", "--structure", str(lgps_cif), "--temperatures", "800,1000", "--replicas", "2",
               "--steps", "20", "--dt-fs", "2", "--protocol", "study", "--stride", "5", "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    names = [s["name"] for s in summary["systems"]]
    assert names == ["800K_r0", "800K_r1", "1000K_r0", "1000K_r1"]
    assert all("verdict" in s and "failure_step" in s for s in summary["systems"])
    import ase.io

    assert len(ase.io.read(out / "800K_r1.h5", ":")) == 5
    assert main(["md", "--model", "lj", "--structure", str(lgps_cif), "--temperatures", "hot", "--out", str(out)]) == 2
    assert "--temperatures" in capsys.readouterr().err


def test_transport_combines_replicas_and_fits_arrhenius():
    from analysis.transport import TransportResult, combine

    ea, d0 = 0.3, 1e-2
    results = []
    for t in (800.0, 1000.0, 1200.0):
        d_true = d0 * np.exp(-ea / (units.kB * t))
        for seed in range(2):
            wrapped, cell, numbers = random_walk(seed + int(t), d_cm2_s=d_true, n_frames=200, n_li=32)
            results.append(diffusion(unwrap(wrapped, cell), numbers, 100.0, "Li", temperature_K=t))
    out = combine(results, n_ions=32, volume_A3=12.0 ** 3)
    assert [p.n_replicas for p in out.points] == [2, 2, 2]
    assert abs(out.arrhenius.activation_energy_eV - ea) < 3 * out.arrhenius.activation_energy_err_eV + 0.02
    d = out.to_dict()
    assert {"activation_energy_eV", "activation_energy_eV_err", "log10_sigma_300K", "log10_sigma_300K_err",
            "temperatures_K", "diffusivity_cm2_s", "diffusivity_cm2_s_err"} <= set(d)
    back = TransportResult.from_dict(json.loads(json.dumps(d)))
    assert back.to_dict() == d


def test_plots_are_png(tmp_path):
    from analysis.plots import plot_arrhenius, plot_msd, plot_rdf

    wrapped, cell, numbers = random_walk(0, n_frames=60)
    res = diffusion(unwrap(wrapped, cell), numbers, 100.0, "Li")
    g = rdf(wrapped[:5], cell, numbers)
    temps = np.array([800.0, 1000.0, 1200.0])
    sigma = 1e4 * np.exp(-0.3 / (units.kB * temps))
    plot_msd(res, tmp_path / "msd.png")
    plot_rdf(g, tmp_path / "rdf.png", reference=g)
    plot_arrhenius(temps, sigma, 0.1 * sigma, arrhenius(temps, sigma, 0.1 * sigma), tmp_path / "arr.png")
    for name in ("msd.png", "rdf.png", "arr.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
