"""Mean squared displacement, diffusivity with an honest error, conductivity, Arrhenius fits.

MSD: FFT over all time origins, species average, framework (non-mobile) centre-of-mass drift
removed.  D from the Einstein relation MSD = 6 D t + c by generalised least squares with the
MSD covariance of a random walk (kinisi's approach: Var[MSD(t_i)] = (2/3) m_i^2 / N_i with
N_i = n_atoms * (T / t_i) independent displacements and correlation sqrt(t_lo / t_hi), m a smooth
model of the MSD; see gls_einstein);
ordinary least squares errors are far too small because MSD points are correlated.
The random-walk covariance assumes independent ions; correlated hops (concerted migration in
superionic conductors) and slow drifts make that error too small.  So the run is also cut into
``error_blocks`` time blocks, each fitted alone, and the error is multiplied by the blocks' Birge
ratio sqrt(chi^2 / (K - 1)) when it exceeds 1 (:func:`block_inflation`; docs/checks.md has the
coverage measured on correlated synthetic walkers and on replicas of real MD).
Units: Å, fs, cm^2/s (1 Å^2/fs = 0.1 cm^2/s), K, mS/cm, eV.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import units

from common.errors import InputError
from common.trajectory import unwrap  # noqa: F401  (the one unwrap; analysis.diffusion.unwrap stays importable)

A2_PER_FS_IN_CM2_PER_S = 0.1
MIN_FIT_FRAMES = 20
ERROR_BLOCKS = 6            # time blocks of the Birge-ratio check of D's error (3 at least, or none)
OXIDATION_STATE = {"Li": 1, "Na": 1, "K": 1, "Ag": 1, "Cu": 1, "Mg": 2, "Zn": 2, "Ca": 2, "F": -1, "Cl": -1,
                   "Br": -1, "I": -1, "O": -2, "S": -2, "H": 1}


def msd_fft(x: np.ndarray) -> np.ndarray:
    """[F] MSD (Å^2) averaged over atoms and all time origins, for displacements x [F,n,3]."""
    n_frames = x.shape[0]
    d = np.square(x).sum(axis=2)                                 # [F,n]
    # S1(m) = sum_{k=0}^{F-m-1} (d[k+m] + d[k]) / (F - m), via cumulative sums (no loop)
    zero = np.zeros((1, d.shape[1]))
    head = np.concatenate([zero, np.cumsum(d, axis=0)[:-1]])            # sum_{k<m} d[k]
    tail = np.concatenate([zero, np.cumsum(d[::-1], axis=0)[:-1]])      # sum_{k<m} d[F-1-k]
    q = 2 * d.sum(axis=0)[None, :] - head - tail
    s1 = q / (n_frames - np.arange(n_frames))[:, None]
    from scipy import fft

    size = fft.next_fast_len(2 * n_frames, real=True)
    series = np.ascontiguousarray(x.reshape(n_frames, -1).T)          # [n*3, F]: FFT along contiguous axis
    fx = fft.rfft(series, n=size, axis=1)
    acf = fft.irfft(fx.real ** 2 + fx.imag ** 2, n=size, axis=1)[:, :n_frames]
    acf = acf.reshape(x.shape[1], 3, n_frames).sum(axis=1).T          # [F, n]
    s2 = acf / (n_frames - np.arange(n_frames))[:, None]
    return (s1 - 2 * s2).mean(axis=1)


@dataclass
class DiffusionResult:
    species: str
    temperature_K: float | None
    dt_fs: float
    n_frames: int
    n_atoms: int
    lag_fs: np.ndarray                 # [F]
    msd_A2: np.ndarray                 # [F] mobile species, drift removed
    framework_msd_A2: np.ndarray       # [F] framework atoms (diffusion-path sanity)
    fit_start_fs: float
    fit_end_fs: float
    diffusivity_cm2_s: float
    diffusivity_err_cm2_s: float
    intercept_A2: float
    method: str = "gls-random-walk-covariance, block Birge ratio"
    path_ok: bool = True               # False: framework moves like the mobile ions (not diffusion)
    evidence: dict = field(default_factory=dict)


def gls_einstein(lag_fs: np.ndarray, msd_A2: np.ndarray, n_atoms: int, total_fs: float) -> tuple[float, float, float]:
    """(slope Å^2/fs, slope std err, intercept Å^2) of MSD = slope t + c by GLS with the random-walk covariance.

    Cov_ij = s_i s_j sqrt(t_lo / t_hi), s_i^2 = (2/3) m_i^2 / N_i, with m a smooth model of the
    MSD (the OLS line, floored above zero) rather than the noisy MSD itself.  For a linear MSD this
    is exactly kinisi's Cov_ij = Var_i N_i / N_j; written this way it stays positive definite for
    any MSD shape (sqrt(t_lo/t_hi) is an exponential kernel in log t), so a short or non-diffusive
    run gets an honest, finite error instead of a negative variance.
    """
    lag_fs = np.asarray(lag_fs, dtype=float)
    msd_A2 = np.asarray(msd_A2, dtype=float)
    n_ind = np.maximum(n_atoms * total_fs / lag_fs, 1.0)
    slope0, icpt0 = np.polyfit(lag_fs, msd_A2, 1)
    floor = max(float(np.max(np.abs(msd_A2))), 1e-12) * 1e-3
    model = np.maximum(slope0 * lag_fs + icpt0, floor)
    sd = np.sqrt((2.0 / 3.0) * model ** 2 / n_ind)
    corr = np.sqrt(np.minimum.outer(lag_fs, lag_fs) / np.maximum.outer(lag_fs, lag_fs))
    cov = np.outer(sd, sd) * corr
    X = np.stack([lag_fs, np.ones_like(lag_fs)], axis=1)
    cinv_x = np.linalg.solve(cov, X)
    cinv_y = np.linalg.solve(cov, msd_A2)
    fisher = X.T @ cinv_x
    beta = np.linalg.solve(fisher, X.T @ cinv_y)
    beta_cov = np.linalg.inv(fisher)
    return float(beta[0]), float(np.sqrt(beta_cov[0, 0])), float(beta[1])


def diffusion(unwrapped: np.ndarray, numbers: np.ndarray, dt_fs: float, species: str = "Li",
              temperature_K: float | None = None, masses: np.ndarray | None = None,
              fit_start_fraction: float = 0.1, fit_end_fraction: float = 0.5, max_fit_points: int = 40,
              framework_frames: int = 2000, error_blocks: int = ERROR_BLOCKS,
              fit_start_max_fs: float | None = None) -> DiffusionResult:
    """Diffusivity of ``species`` from unwrapped positions [F,N,3] (Å) stored every ``dt_fs`` fs.

    The framework (all other atoms) centre-of-mass displacement is removed from every frame; the
    GLS fit uses up to ``max_fit_points`` lags between the two fractions of the trajectory length;
    ``fit_start_max_fs`` (fs; default None, no cap) makes the window start no later than that lag.  On
    a random walk the cap narrows D as 1/sqrt(run length); on real LGPS MD it narrowed nothing (slow
    collective fluctuations set D's scatter) and its error came out too small without the Birge ratio,
    so it is not the default (docs/checks.md, "Where the fit window starts").
    The GLS error is inflated by the Birge ratio of ``error_blocks`` time blocks (:func:`block_inflation`;
    0 turns the check off); the evidence records both errors and the factor.
    """
    from ase.data import atomic_masses, atomic_numbers

    if species not in atomic_numbers:
        raise InputError(f"unknown element {species!r}; give a chemical symbol such as Li")
    numbers = np.asarray(numbers)
    mobile = numbers == atomic_numbers[species]
    if not mobile.any():
        present = sorted({str(s) for s in _symbols(numbers)})
        raise InputError(f"the trajectory contains no {species} atoms (elements: {', '.join(present)}); "
                         "choose --species from these")
    x = np.asarray(unwrapped, dtype=float)
    n_frames = x.shape[0]
    if n_frames < MIN_FIT_FRAMES:
        raise InputError(f"trajectory has {n_frames} frames; a diffusion fit needs at least {MIN_FIT_FRAMES} "
                         "stored frames (run longer or store frames more often)")
    if dt_fs <= 0:
        raise InputError(f"time between frames must be positive, got {dt_fs} fs; pass --dt-fs")
    masses = atomic_masses[numbers] if masses is None else np.asarray(masses)
    frame = ~mobile
    mobile_disp = x[:, mobile] - x[0, mobile]
    if frame.any():
        w = masses[frame] / masses[frame].sum()
        com = np.tensordot(x[:, frame], w, axes=([1], [0]))            # [F,3] framework centre of mass
        com -= com[0]
        mobile_disp -= com[:, None, :]
        # framework MSD only serves the path sanity check and plots: every k-th frame is plenty
        k = max(1, n_frames // framework_frames)
        fw = x[::k, frame] - x[0, frame] - com[::k, None, :]
        fw_coarse = msd_fft(fw)
        fw_msd = np.interp(np.arange(n_frames), np.arange(len(fw_coarse)) * k, fw_coarse)
    else:
        fw_msd = np.zeros(n_frames)
    msd = msd_fft(mobile_disp)
    lag = np.arange(n_frames) * dt_fs
    total = lag[-1]
    start = max(1, int(round(fit_start_fraction * (n_frames - 1))))
    if fit_start_max_fs is not None:
        start = max(1, min(start, int(round(fit_start_max_fs / dt_fs))))
    end = max(start + 2, int(round(fit_end_fraction * (n_frames - 1))))
    idx = np.unique(np.linspace(start, end, min(max_fit_points, end - start + 1)).round().astype(int))
    slope, slope_err, intercept = gls_einstein(lag[idx], msd[idx], int(mobile.sum()), total)
    d = slope / 6.0 * A2_PER_FS_IN_CM2_PER_S
    d_err = slope_err / 6.0 * A2_PER_FS_IN_CM2_PER_S
    li_end, fw_end = float(msd[end]), float(fw_msd[end])
    path_ok = not (fw_end > 0.5 * li_end and li_end > 1.0)
    fit = dict(species=species, masses=masses, fit_start_fraction=fit_start_fraction,
               fit_end_fraction=fit_end_fraction, max_fit_points=max_fit_points, fit_start_max_fs=fit_start_max_fs)
    factor, blocks = block_inflation(x, numbers, dt_fs, error_blocks, **fit)
    return DiffusionResult(species=species, temperature_K=temperature_K, dt_fs=float(dt_fs), n_frames=n_frames,
                           n_atoms=int(mobile.sum()), lag_fs=lag, msd_A2=msd, framework_msd_A2=fw_msd,
                           fit_start_fs=float(lag[idx[0]]), fit_end_fs=float(lag[idx[-1]]), diffusivity_cm2_s=d,
                           diffusivity_err_cm2_s=d_err * factor, intercept_A2=intercept, path_ok=path_ok,
                           evidence={"mobile_msd_at_fit_end_A2": li_end, "framework_msd_at_fit_end_A2": fw_end,
                                     "gls_err_cm2_s": d_err, "error_inflation": factor, **blocks})


def block_inflation(unwrapped: np.ndarray, numbers: np.ndarray, dt_fs: float, blocks: int = ERROR_BLOCKS,
                    **fit) -> tuple[float, dict]:
    """(factor >= 1, evidence): the Birge ratio of D fitted alone on ``blocks`` consecutive time blocks.

    Each block's D carries its own random-walk GLS error e_k; for independent ions the blocks scatter by
    those errors (chi^2 / (K - 1) ~ 1).  Correlated ions or slow drifts scatter them more, and the run's own
    error is too small by about the same factor, sqrt(chi^2 / (K - 1)) around the inverse-variance mean.
    Never below 1 (a block scatter smaller than expected is not taken as a licence to shrink the error).
    With fewer than 3 blocks of :data:`MIN_FIT_FRAMES` frames the check cannot run: factor 1, and the
    evidence says so.
    """
    n_blocks = min(int(blocks), len(unwrapped) // MIN_FIT_FRAMES)
    if n_blocks < 3:
        return 1.0, {"error_blocks": 0}
    size = len(unwrapped) // n_blocks
    parts = [diffusion(unwrapped[k * size:(k + 1) * size], numbers, dt_fs, error_blocks=0, framework_frames=50,
                       **fit) for k in range(n_blocks)]
    d = np.array([p.diffusivity_cm2_s for p in parts])
    e = np.array([p.diffusivity_err_cm2_s for p in parts])
    w = 1.0 / np.maximum(e, 1e-300) ** 2
    mean = float((w * d).sum() / w.sum())
    birge = float(np.sqrt((w * (d - mean) ** 2).sum() / (n_blocks - 1)))
    return max(1.0, birge), {"error_blocks": n_blocks, "block_D_cm2_s": d.tolist(), "block_birge_ratio": birge}


def _symbols(numbers):
    from ase.data import chemical_symbols

    return [chemical_symbols[int(z)] for z in np.unique(numbers)]


def charge_of(species: str) -> int:
    """Oxidation state used for the Nernst–Einstein charge (table, else pymatgen's most common)."""
    if species in OXIDATION_STATE:
        return OXIDATION_STATE[species]
    from pymatgen.core import Element

    states = Element(species).common_oxidation_states
    if not states:
        raise InputError(f"no common oxidation state for {species}; give the charge explicitly")
    return int(states[0])


def nernst_einstein_mS_cm(diffusivity_cm2_s: float, n_ions: int, volume_A3: float, temperature_K: float,
                          charge: int = 1, haven_ratio: float = 1.0) -> float:
    """σ = n q² D / (H_R k_B T) in mS/cm (n = n_ions / volume)."""
    if temperature_K is None or temperature_K <= 0:
        raise InputError(f"temperature must be positive for a conductivity, got {temperature_K}; pass --temperature")
    n_per_cm3 = n_ions / (volume_A3 * 1e-24)
    q = charge * units._e
    sigma_S_cm = n_per_cm3 * q ** 2 * diffusivity_cm2_s / (haven_ratio * units._k * temperature_K)
    return float(sigma_S_cm * 1e3)


@dataclass
class ArrheniusResult:
    activation_energy_eV: float
    activation_energy_err_eV: float
    log10_sigma300_mS_cm: float    # log10 of the fitted quantity at ``extrapolate_K`` (transport: σ in mS/cm)
    log10_sigma300_err: float
    slope_K: float                 # d ln y / d(1/T) of the fitted quantity y (transport: D)
    intercept: float               # ln y at 1/T = 0
    covariance: np.ndarray         # 2x2 of (slope, intercept)


def arrhenius(temperatures_K, sigma, sigma_err=None, extrapolate_K: float = 300.0,
              inflate: float = 1.0) -> ArrheniusResult:
    """Weighted fit ln σ = a + b / T; Ea = -k_B b; log10 σ(300 K) with the slope–intercept covariance.

    Works for conductivities (mS/cm) or diffusivities alike (σ > 0).  ``inflate`` multiplies the
    covariance (the reduced chi^2 of a lack of fit).
    """
    t = np.asarray(temperatures_K, dtype=float)
    s = np.asarray(sigma, dtype=float)
    if len(t) < 2 or np.any(s <= 0):
        raise InputError("an Arrhenius fit needs at least 2 temperatures with positive values")
    y = np.log(s)
    w = np.ones_like(y) if sigma_err is None else 1.0 / np.maximum(np.asarray(sigma_err, float) / s, 1e-12) ** 2
    X = np.stack([1.0 / t, np.ones_like(t)], axis=1)
    fisher = X.T @ (w[:, None] * X)
    cov = np.linalg.inv(fisher)
    beta = cov @ (X.T @ (w * y))
    if sigma_err is None and len(t) > 2:           # unknown errors: scale by the residual variance
        resid = y - X @ beta
        cov = cov * float(resid @ resid) / (len(t) - 2)
    cov = cov * float(inflate)
    b, a = beta
    ea = -b * units.kB
    ea_err = np.sqrt(cov[0, 0]) * units.kB
    g = np.array([1.0 / extrapolate_K, 1.0])
    ln300 = a + b / extrapolate_K
    ln300_err = float(np.sqrt(g @ cov @ g))
    return ArrheniusResult(activation_energy_eV=float(ea), activation_energy_err_eV=float(ea_err),
                           log10_sigma300_mS_cm=float(ln300 / np.log(10)), log10_sigma300_err=ln300_err / np.log(10),
                           slope_K=float(b), intercept=float(a), covariance=cov)
