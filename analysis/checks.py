"""Statistical checks of a student trajectory against its reference (oracle MD or a user's AIMD).

Each check measures a metric, measures that metric's own noise on the reference, and answers one of
three words (never a bare threshold on a noisy number):

* ``pass``          the difference is shown to lie within the tolerance (the confidence interval of
                    the difference is inside it: an equivalence test);
* ``mismatch``      the difference is significant at the stated false-alarm rate *and* beyond the
                    tolerance;
* ``inconclusive``  neither: the noise is too large for the run lengths given (run longer).

Checks (all pure functions of :class:`common.trajectory.Trajectory` objects):

* :func:`check_structure` - pair-weighted partial-RDF MAE, its noise from a block bootstrap of the
  reference (blocks of ``block_fs`` are the independent units; a 2-atom partial carries a weight
  proportional to its pair count, so it cannot decide alone), plus the lattice comparison;
* :func:`check_dynamics`  - D of the mobile species against the reference's D at the same temperature
  (log10 ratio with both errors, each run's convergence: halves and minimum MSD), and the framework
  motion (the diffusion path's sanity: the framework must move no more than the reference's);
* :func:`check_accuracy`  - the student's true force error (oracle labels) on frames of its own MD
  against its error on the reference's held-out frames: the ensemble's deviation is only a proxy for
  that error, and a student can drift where it is worse without its members noticing.

Units: Å, fs, cm^2/s; ``alpha`` is the false-alarm rate of one check.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from analysis.rdf import rdf
from common.trajectory import Trajectory

PASS, MISMATCH, INCONCLUSIVE = "pass", "mismatch", "inconclusive"
MIN_REFERENCE_BLOCKS = 4          # fewer blocks cannot estimate the reference's own noise


def z_two_sided(alpha: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1.0 - alpha / 2.0))


def z_one_sided(alpha: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1.0 - alpha))


def inverse_variance_mean(values, errors, overdispersion: bool = False) -> tuple[float, float]:
    """Inverse-variance mean and its error; ``overdispersion``: widen the error by the reduced chi^2 when > 1
    (independent estimates that scatter more than their errors say: replicas)."""
    d = np.asarray(values, float)
    w = 1.0 / np.maximum(np.asarray(errors, float), 1e-30) ** 2
    mean = float((w * d).sum() / w.sum())
    err = float(np.sqrt(1.0 / w.sum()))
    if overdispersion and len(d) > 1:
        chi2 = float((w * (d - mean) ** 2).sum() / (len(d) - 1))
        err *= np.sqrt(max(chi2, 1.0))
    return mean, err


SCATTER_ALPHA = 0.01    # replicas consistent with their errors are widened this often (1 %)


def replica_mean(values, errors, overdispersion: bool = True) -> tuple[float, float]:
    """Mean of replica estimates of one positive quantity (a D) and its error, weighted by relative precision
    (|v| / err)^2: an estimate's error grows with its value, so inverse-variance weights would favour the low
    ones (docs/checks.md).  The error is the
    weighted errors in quadrature; ``overdispersion``: when the replicas scatter significantly more than
    their errors say (chi^2 above its 99 % quantile: :data:`SCATTER_ALPHA`), widened by sqrt(reduced chi^2).
    Widening on any chi^2 > 1 would inflate errors already validated per run (docs/checks.md)."""
    from scipy.stats import chi2 as chi2_dist

    d, e = np.asarray(values, float), np.maximum(np.asarray(errors, float), 1e-300)
    w = (np.maximum(np.abs(d), 1e-300) / e) ** 2
    w = w / w.sum()
    mean = float((w * d).sum())
    err = float(np.sqrt((w ** 2 * e ** 2).sum()))
    if overdispersion and len(d) > 1:
        chi2 = float((((d - mean) / e) ** 2).sum())
        if chi2 > chi2_dist.ppf(1.0 - SCATTER_ALPHA, len(d) - 1):
            err *= math.sqrt(chi2 / (len(d) - 1))
    return mean, err


def replicas_of(runs) -> list:
    """A trajectory, or a sequence of replicas of one system at one temperature, as a non-empty list."""
    runs = [runs] if isinstance(runs, Trajectory) else list(runs)
    if not runs:
        from common.errors import InputError

        raise InputError("no trajectories given; pass at least one run")
    return runs


def decide(diff: float, err: float, tolerance: float, alpha: float) -> str:
    """Three-way answer on a signed difference ``diff`` ± ``err`` (one standard error) and a tolerance.

    mismatch: |diff| > z(α/2)·err (significant) and |diff| > tolerance; pass: |diff| + z(α)·err <= tolerance
    (the 1-2α interval lies inside ±tolerance, two one-sided tests); inconclusive otherwise.
    """
    if not (math.isfinite(diff) and math.isfinite(err)):
        return INCONCLUSIVE
    if abs(diff) > z_two_sided(alpha) * err and abs(diff) > tolerance:
        return MISMATCH
    if abs(diff) + z_one_sided(alpha) * err <= tolerance:
        return PASS
    return INCONCLUSIVE


# --- structure ------------------------------------------------------------------------------------------
@dataclass
class BlockRDF:
    """Partial g(r) of consecutive time blocks of one trajectory window (the units of the bootstrap)."""
    r_A: np.ndarray                  # [n_bins]
    names: list[str]                 # partial names, sorted ("Ge-Li", ...)
    weights: np.ndarray              # [n_partials], pair counts normalised to 1
    blocks: np.ndarray               # [n_blocks, n_partials, n_bins]
    block_frames: int
    window_frames: int               # frames in the window (whole blocks only)
    mean: np.ndarray                 # [n_partials, n_bins] g(r) of the whole window
    cell_lengths_A: np.ndarray       # [3] mean cell lengths of the window
    cell_angles_deg: np.ndarray      # [3]


def pair_weights(numbers: np.ndarray, names: list[str]) -> np.ndarray:
    """Weight of each partial ∝ its number of distinct pairs (N_a N_b, or N_a (N_a - 1) / 2)."""
    counts = {chemical_symbols[int(z)]: int(n) for z, n in zip(*np.unique(numbers, return_counts=True))}
    w = []
    for name in names:
        a, b = name.split("-")
        w.append(counts[a] * (counts[a] - 1) / 2 if a == b else counts[a] * counts[b])
    w = np.asarray(w, float)
    return w / w.sum()


def block_rdf(traj: Trajectory, block_frames: int, skip_frames: int = 0, r_max_A: float = 6.0,
              n_bins: int = 120) -> BlockRDF:
    """Partial RDFs of the window after ``skip_frames``, one per block of ``block_frames`` stored frames.

    A window shorter than one block is a single (short) block.
    """
    start = min(skip_frames, len(traj) - 1)
    pos, cells = traj.positions[start:], traj.cells[start:]
    block_frames = max(1, int(block_frames))
    n_blocks = max(1, len(pos) // block_frames)
    size = block_frames if len(pos) >= block_frames else len(pos)
    results = [rdf(pos[k * size:(k + 1) * size], cells[k * size:(k + 1) * size], traj.numbers, r_max_A, n_bins)
               for k in range(n_blocks)]
    names = sorted(results[0].partial)
    blocks = np.stack([np.stack([res.partial[n] for n in names]) for res in results])
    from ase.geometry import cell_to_cellpar

    par = np.array([cell_to_cellpar(c) for c in cells[:n_blocks * size]]).mean(0)
    return BlockRDF(r_A=results[0].r_A, names=names, weights=pair_weights(traj.numbers, names), blocks=blocks,
                    block_frames=size, window_frames=n_blocks * size, mean=blocks.mean(0),
                    cell_lengths_A=par[:3], cell_angles_deg=par[3:])


def pool_blocks(windows: list[BlockRDF]) -> BlockRDF:
    """The RDF blocks of several replicas as one window: their blocks side by side (independent runs, so
    each block stays an independent unit), their mean weighted by frames (a replica shorter than one block
    is one short block) and the cells' mean."""
    if len(windows) == 1:
        return windows[0]
    first = windows[0]
    for w in windows[1:]:
        if w.names != first.names or not np.array_equal(w.r_A, first.r_A):
            raise ValueError("replicas of one system must give the same partials and bins")
    blocks = np.concatenate([w.blocks for w in windows])
    frames = [w.window_frames for w in windows]
    per_block = np.concatenate([np.full(len(w.blocks), w.block_frames, float) for w in windows])
    return BlockRDF(r_A=first.r_A, names=first.names, weights=first.weights, blocks=blocks,
                    block_frames=min(w.block_frames for w in windows), window_frames=int(sum(frames)),
                    mean=np.average(blocks, axis=0, weights=per_block),
                    cell_lengths_A=np.average([w.cell_lengths_A for w in windows], axis=0, weights=frames),
                    cell_angles_deg=np.average([w.cell_angles_deg for w in windows], axis=0, weights=frames))


def weighted_mae(diff: np.ndarray, weights: np.ndarray) -> float | np.ndarray:
    """Σ_p w_p mean_r |Δg_p(r)| for ``diff`` [..., n_partials, n_bins]."""
    return (np.abs(diff).mean(-1) * weights).sum(-1)


@dataclass
class StructureCheck:
    status: str                      # pass | mismatch | inconclusive
    rdf_mae: float                   # pair-weighted partial MAE, student window vs reference window
    noise_floor: float               # its mean under "same distribution" (reference block bootstrap)
    critical: float                  # its (1 - alpha) quantile under the same
    tolerance: float
    alpha: float
    p_value: float
    student_frames: int
    reference_frames: int
    block_frames: int
    reference_blocks: int
    lattice_strain: float            # largest relative difference of the mean cell lengths
    lattice_tolerance: float
    lattice_mismatch: bool
    reason: str = ""
    noise_method: str = ""           # block bootstrap | reference halves (whichever measured more noise)

    def evidence(self) -> dict:
        return {f"rdf_{k}" if not k.startswith(("rdf", "lattice")) else k: v for k, v in asdict(self).items()
                if k != "status"} | {"rdf_status": self.status}


def check_structure(student: BlockRDF, reference: BlockRDF, tolerance: float, alpha: float = 0.05,
                    lattice_tolerance: float = 0.01, n_boot: int = 400, seed: int = 0) -> StructureCheck:
    """RDF and lattice of a student window against the reference window.

    Null distribution: the reference's block deviations (scaled by sqrt(K/(K-1)) for the bootstrap's
    small-sample shrinkage) resampled into a student-sized and a reference-sized window; the metric of
    their difference is what sampling alone gives.  When the reference's own two halves differ by more
    than that predicts (correlations longer than a block), the null is scaled up to the halves' level.
    mismatch: MAE > max(critical, tolerance); pass: MAE + (critical - floor) <= tolerance; inconclusive
    otherwise, or when the reference has fewer than :data:`MIN_REFERENCE_BLOCKS` blocks.
    """
    strain = float(np.max(np.abs(student.cell_lengths_A / reference.cell_lengths_A - 1.0)))
    lattice_bad = strain > lattice_tolerance
    names = [n for n in reference.names if n in student.names]
    ri = [reference.names.index(n) for n in names]
    si = [student.names.index(n) for n in names]
    w = reference.weights[ri] / reference.weights[ri].sum()
    obs = float(weighted_mae(student.mean[si] - reference.mean[ri], w))
    k = len(reference.blocks)
    n_s = max(1, round(student.window_frames / reference.block_frames))
    base = dict(rdf_mae=obs, tolerance=tolerance, alpha=alpha, student_frames=student.window_frames,
                reference_frames=reference.window_frames, block_frames=reference.block_frames, reference_blocks=k,
                lattice_strain=strain, lattice_tolerance=lattice_tolerance, lattice_mismatch=lattice_bad)
    if k < MIN_REFERENCE_BLOCKS:
        return StructureCheck(INCONCLUSIVE, noise_floor=float("nan"), critical=float("nan"), p_value=float("nan"),
                              reason=f"the reference window has {k} blocks of {reference.block_frames} frames; its "
                                     f"noise needs at least {MIN_REFERENCE_BLOCKS}: run the reference longer", **base)
    if student.window_frames < reference.block_frames:       # noisier than any block the null is built from
        return StructureCheck(INCONCLUSIVE, noise_floor=float("nan"), critical=float("nan"), p_value=float("nan"),
                              reason=f"the student window has {student.window_frames} frames, less than one block "
                                     f"of {reference.block_frames}: run longer", **base)
    dev = (reference.blocks[:, ri] - reference.mean[ri]) * math.sqrt(k / (k - 1))
    rng = np.random.default_rng(seed)
    e_s = dev[rng.integers(0, k, size=(n_boot, n_s))].mean(1)
    e_r = dev[rng.integers(0, k, size=(n_boot, k))].mean(1)
    null = weighted_mae(e_s - e_r, w)
    # correlations longer than a block make the bootstrap too optimistic: the reference's two halves measure
    # the noise directly (MAE ∝ sqrt(1/n_s + 1/n_r)); the larger of the two estimates scales the null
    half = k // 2
    halves = float(weighted_mae(reference.blocks[:half, ri].mean(0) - reference.blocks[half:2 * half, ri].mean(0), w))
    halves_floor = halves * math.sqrt((1.0 / n_s + 1.0 / k) / (2.0 / half))
    boot_floor = float(null.mean())
    method = "block bootstrap"
    if halves_floor > boot_floor:
        null = null * (halves_floor / boot_floor)
        method = "reference halves"
    floor, crit = float(null.mean()), float(np.quantile(null, 1.0 - alpha))
    p = float((1 + (null >= obs).sum()) / (n_boot + 1))
    if obs > max(crit, tolerance):
        status, reason = MISMATCH, ""
    elif obs + (crit - floor) <= tolerance:
        status, reason = PASS, ""
    else:
        status = INCONCLUSIVE
        reason = ("the RDF noise of these windows is above the tolerance: run longer" if floor >= tolerance else
                  "the difference is within the noise but may exceed the tolerance: run longer")
    return StructureCheck(status, noise_floor=floor, critical=crit, p_value=p, reason=reason, noise_method=method,
                          **base)


# --- dynamics ---------------------------------------------------------------------------------------------
@dataclass
class Convergence:
    """Is one run long enough for its D?  Halves agree within their errors, and the MSD is large enough."""
    diffusivity_cm2_s: float
    diffusivity_err_cm2_s: float
    first_half_cm2_s: float
    first_half_err_cm2_s: float
    second_half_cm2_s: float
    second_half_err_cm2_s: float
    halves_z: float
    msd_at_fit_end_A2: float
    min_msd_A2: float
    too_short: bool
    reason: str = ""
    error_inflation: float = 1.0      # block Birge ratio applied to the halves' GLS errors (analysis.diffusion)

    def to_dict(self) -> dict:
        return asdict(self)


HALVES_ALPHA = 0.01     # a converged run is flagged too_short this often by its halves (1 %)


def diffusion_convergence(traj: Trajectory, species: str, alpha: float = HALVES_ALPHA, min_msd_A2: float = 10.0
                          ) -> tuple["DiffusionResult", Convergence]:  # noqa: F821
    """D of the production part of ``traj`` and whether it is converged (``too_short`` when not).

    too_short: the halves' D differ by more than z(α/2) combined errors (α = :data:`HALVES_ALPHA`: the
    diagnostic rarely flags a converged run, so the checks built on it keep their own false-alarm rate),
    or the mobile MSD at the end of the fit window is below ``min_msd_A2`` (the ions have not left their
    sites often enough).
    """
    from analysis.diffusion import ERROR_BLOCKS, MIN_FIT_FRAMES, diffusion

    prod = traj.production()
    full = diffusion(prod.unwrapped, prod.numbers, prod.dt_fs, species=species, temperature_K=prod.temperature_K)
    half = len(prod) // 2
    if half < MIN_FIT_FRAMES:
        conv = Convergence(full.diffusivity_cm2_s, full.diffusivity_err_cm2_s, *(float("nan"),) * 5,
                           full.evidence["mobile_msd_at_fit_end_A2"], min_msd_A2, True,
                           f"{len(prod)} production frames: each half needs {MIN_FIT_FRAMES} for a D")
        return full, conv
    # each half's GLS error, inflated by the Birge ratio of the blocks *within* the halves, pooled over both
    # (correlated ions widen it; a drift from one half to the other must not, or the test could not see it)
    parts = [diffusion(x, prod.numbers, prod.dt_fs, species=species, error_blocks=max(3, ERROR_BLOCKS // 2))
             for x in (prod.unwrapped[:half], prod.unwrapped[half:2 * half])]
    ratios = [float(p.evidence.get("block_birge_ratio", 1.0)) for p in parts]
    factor = max(1.0, math.sqrt(sum(r * r for r in ratios) / len(ratios)))
    d1, e1 = parts[0].diffusivity_cm2_s, float(parts[0].evidence["gls_err_cm2_s"]) * factor
    d2, e2 = parts[1].diffusivity_cm2_s, float(parts[1].evidence["gls_err_cm2_s"]) * factor
    z = abs(d1 - d2) / math.sqrt(e1 ** 2 + e2 ** 2) if (e1 > 0 or e2 > 0) else float("inf")
    msd = float(full.evidence["mobile_msd_at_fit_end_A2"])
    reasons = []
    if not z <= z_two_sided(alpha):
        reasons.append(f"halves disagree (D {d1:.3g} vs {d2:.3g} cm^2/s, z = {z:.1f})")
    if msd < min_msd_A2:
        reasons.append(f"{species} MSD {msd:.3g} Å^2 < {min_msd_A2:g} Å^2 at the fit end")
    return full, Convergence(full.diffusivity_cm2_s, full.diffusivity_err_cm2_s, d1, e1, d2, e2, float(z), msd,
                             min_msd_A2, bool(reasons), "; ".join(reasons), factor)


def combine_convergence(results: list, conv: list[Convergence]) -> Convergence:
    """One :class:`Convergence` of the replicas of one temperature: D is the inverse-variance mean of their
    D (:func:`replica_mean`; their scatter widens its error), the halves are combined the same way
    and tested at :data:`HALVES_ALPHA`, the MSD at the fit end is their mean.  One replica: its own."""
    if len(conv) == 1:
        return conv[0]
    d, d_err = replica_mean([r.diffusivity_cm2_s for r in results], [r.diffusivity_err_cm2_s for r in results])
    msd = float(np.mean([c.msd_at_fit_end_A2 for c in conv]))
    factor = float(np.sqrt(np.mean([c.error_inflation ** 2 for c in conv])))
    if any(not math.isfinite(c.first_half_cm2_s) for c in conv):
        short = next(c for c in conv if not math.isfinite(c.first_half_cm2_s))
        return Convergence(d, d_err, *(float("nan"),) * 5, msd, conv[0].min_msd_A2, True, short.reason, factor)
    d1, e1 = replica_mean([c.first_half_cm2_s for c in conv], [c.first_half_err_cm2_s for c in conv], False)
    d2, e2 = replica_mean([c.second_half_cm2_s for c in conv], [c.second_half_err_cm2_s for c in conv], False)
    z = abs(d1 - d2) / math.hypot(e1, e2) if (e1 > 0 or e2 > 0) else float("inf")
    reasons = []
    if not z <= z_two_sided(HALVES_ALPHA):
        reasons.append(f"halves disagree (D {d1:.3g} vs {d2:.3g} cm^2/s, z = {z:.1f}, {len(conv)} replicas)")
    if msd < conv[0].min_msd_A2:
        reasons.append(f"MSD {msd:.3g} Å^2 < {conv[0].min_msd_A2:g} Å^2 at the fit end ({len(conv)} replicas)")
    return Convergence(d, d_err, d1, e1, d2, e2, float(z), msd, conv[0].min_msd_A2, bool(reasons), "; ".join(reasons),
                       factor)


def replicas_convergence(runs, species: str, min_msd_A2: float = 10.0) -> tuple[list, Convergence]:
    """Each replica's :func:`diffusion_convergence` and their :func:`combine_convergence`: (results, combined)."""
    pairs = [diffusion_convergence(t, species, min_msd_A2=min_msd_A2) for t in replicas_of(runs)]
    results = [p[0] for p in pairs]
    return results, combine_convergence(results, [p[1] for p in pairs])


def _framework_msd_per_atom(traj: Trajectory, species: str, lag_fs: float) -> np.ndarray:
    from ase.data import atomic_masses

    prod = traj.production()
    numbers = np.asarray(prod.numbers)
    fw = numbers != atomic_numbers[species]
    x = prod.unwrapped[:, fw]
    m = atomic_masses[numbers[fw]]
    x = x - ((x * m[None, :, None]).sum(1) / m.sum())[:, None, :]
    lag = int(min(max(1, round(lag_fs / prod.dt_fs)), len(prod) - 1))
    return ((x[lag:] - x[:-lag]) ** 2).sum(-1).mean(0)


def framework_msd(runs, species: str, lag_fs: float) -> tuple[float, float]:
    """Mean framework (non-``species``) MSD at ``lag_fs`` over atoms, origins and replicas, with its standard
    error over atoms (of every replica) (Å^2); each run's framework centre of mass is removed."""
    per_atom = np.concatenate([_framework_msd_per_atom(t, species, lag_fs) for t in replicas_of(runs)])
    return float(per_atom.mean()), float(per_atom.std(ddof=1) / math.sqrt(len(per_atom)))


@dataclass
class DynamicsCheck:
    status: str                       # pass | mismatch | inconclusive
    species: str
    temperature_K: float | None
    student_D_cm2_s: float
    student_D_err_cm2_s: float
    reference_D_cm2_s: float
    reference_D_err_cm2_s: float
    log10_ratio: float                # log10(D_student / D_reference)
    log10_ratio_err: float
    tolerance_log10: float
    alpha: float
    student_convergence: dict = field(default_factory=dict)
    reference_convergence: dict = field(default_factory=dict)
    framework_msd_A2: float = float("nan")          # student, at the reference's fit end
    framework_msd_err_A2: float = float("nan")
    reference_framework_msd_A2: float = float("nan")
    reference_framework_msd_err_A2: float = float("nan")
    framework_status: str = INCONCLUSIVE
    reason: str = ""
    student_replicas: int = 1
    reference_replicas: int = 1

    def evidence(self) -> dict:
        d = asdict(self)
        d["dynamics_status"] = d.pop("status")
        d["dynamics_reason"] = d.pop("reason")
        return d


def log10_ratio(a: float, ea: float, b: float, eb: float) -> tuple[float, float]:
    """(log10(a / b), its error) from a ± ea and b ± eb (first order; NaN when either is not positive)."""
    if a <= 0 or b <= 0:
        return float("nan"), float("nan")
    return math.log10(a / b), math.sqrt((ea / a) ** 2 + (eb / b) ** 2) / math.log(10)


def check_dynamics(student, reference, species: str = "Li", tolerance_log10: float = 0.3,
                   alpha: float = 0.05, min_msd_A2: float = 10.0, framework_tolerance_log10: float = 0.3
                   ) -> DynamicsCheck:
    """Student D of ``species`` against the reference's, at the same temperature and protocol.

    ``student`` and ``reference``: a trajectory or several replicas of it; replicas are combined by
    inverse variance with their scatter (:func:`replicas_convergence`).  inconclusive when either side is
    too short (:func:`diffusion_convergence`); otherwise :func:`decide` on log10(D_s / D_r).  The framework
    check is :func:`decide` on log10 of the framework MSD ratio at the reference's fit end (only a framework
    moving *more* than the reference's counts as a mismatch); an undecided framework check makes a passing D
    check ``inconclusive``, so ``pass`` means both passed.
    """
    students, references = replicas_of(student), replicas_of(reference)
    _, s_conv = replicas_convergence(students, species, min_msd_A2)
    r_runs, r_conv = replicas_convergence(references, species, min_msd_A2)
    ratio, ratio_err = log10_ratio(s_conv.diffusivity_cm2_s, s_conv.diffusivity_err_cm2_s, r_conv.diffusivity_cm2_s,
                                   r_conv.diffusivity_err_cm2_s)
    lag = min(r.fit_end_fs for r in r_runs)
    fs, fs_err = framework_msd(students, species, lag)
    fr, fr_err = framework_msd(references, species, lag)
    f_ratio, f_err = log10_ratio(fs, fs_err, fr, fr_err)
    f_status = decide(f_ratio, f_err, framework_tolerance_log10, alpha)
    if f_status == MISMATCH and f_ratio < 0:
        f_status = PASS                         # a stiffer framework is no broken diffusion path
    reasons = []
    if s_conv.too_short:
        reasons.append(f"student run too short: {s_conv.reason}")
    if r_conv.too_short:
        reasons.append(f"reference run too short: {r_conv.reason}")
    # a run that is too short has no trustworthy error (its halves disagree or its ions barely moved):
    # neither a pass nor a mismatch can be claimed from it
    status = INCONCLUSIVE if reasons else decide(ratio, ratio_err, tolerance_log10, alpha)
    if status == INCONCLUSIVE and not reasons:
        more = "more replicas or longer runs" if len(students) > 1 else "run longer, or more replicas"
        reasons.append(f"log10 D ratio {ratio:+.2f} ± {ratio_err:.2f} cannot be placed inside or outside "
                       f"±{tolerance_log10}: {more}")
    if f_status == MISMATCH:
        status = MISMATCH
        reasons.append(f"the framework moves {10 ** f_ratio:.1f}x more than in the reference")
    elif f_status == INCONCLUSIVE and status == PASS:   # D agrees, but the path's sanity is undecided
        status = INCONCLUSIVE
        reasons.append(f"framework MSD log10 ratio {f_ratio:+.2f} ± {f_err:.2f} cannot be placed inside or outside "
                       f"±{framework_tolerance_log10}: run longer")
    return DynamicsCheck(status, species, students[0].temperature_K, s_conv.diffusivity_cm2_s,
                         s_conv.diffusivity_err_cm2_s, r_conv.diffusivity_cm2_s, r_conv.diffusivity_err_cm2_s, ratio,
                         ratio_err, tolerance_log10, alpha, s_conv.to_dict(), r_conv.to_dict(), fs, fs_err, fr, fr_err,
                         f_status, "; ".join(reasons), len(students), len(references))


# --- accuracy on the student's own MD ------------------------------------------------------------------
@dataclass
class AccuracyCheck:
    status: str                       # pass | mismatch | inconclusive
    own_error_eV_A: float             # mean atomic force error on the audited frames of the student's MD
    own_error_err_eV_A: float
    reference_error_eV_A: float       # the same on the reference's held-out frames
    reference_error_err_eV_A: float
    error_log10_ratio: float          # log10(own / reference)
    error_log10_ratio_err: float
    n_audit_frames: int
    reference_blocks: int
    tolerance_log10: float
    alpha: float
    reason: str = ""
    transit: dict | None = None       # the ions in transit (:func:`check_transit`), None when not asked

    def evidence(self) -> dict:
        d = asdict(self)
        d["accuracy_status"] = d.pop("status")
        d["accuracy_reason"] = d.pop("reason")
        d["accuracy_tolerance_log10"] = d.pop("tolerance_log10")
        d.pop("alpha")
        d.update(d.pop("transit") or {})
        return d


def check_accuracy(own_error, reference_error, reference_block_frames: int, tolerance_log10: float = 0.1,
                   alpha: float = 0.05, own_transit=None, reference_transit=None) -> AccuracyCheck:
    """Is the student as accurate on its own MD as on the oracle's?

    ``own_error``: per-frame mean atomic force error (eV/Å, against oracle labels) on frames spread over the
    student's run (far enough apart to be independent: their scatter gives the mean's error);
    ``reference_error``: the same on the reference's held-out frames, consecutive and correlated: the
    error of their mean comes from blocks of ``reference_block_frames``.  :func:`decide` on
    log10(own / reference), one-sided: only a student *less* accurate on its own MD is a mismatch, and one
    more accurate passes once the ratio's upper bound is inside ``tolerance_log10``.

    ``own_transit`` / ``reference_transit``: per frame, the mean force error on the mobile ions in transit
    (:mod:`analysis.transit`; NaN where none is), on the same frames.  When given, the transit comparison
    (:func:`check_transit`) joins the check and each comparison's mismatch is decided at ``alpha / 2``
    (Bonferroni: the check's false-alarm rate stays at most ``alpha``); a transit mismatch makes the check
    a mismatch, a transit comparison that cannot be placed is evidence only (the frame mean decides the
    rest).
    """
    if own_transit is not None and reference_transit is not None:
        half = alpha / 2.0
        frames = check_accuracy(own_error, reference_error, reference_block_frames, tolerance_log10, half)
        transit = check_transit(own_transit, reference_transit, reference_block_frames, tolerance_log10, half)
        mismatches = [c for c, bad in ((frames.reason, frames.status == MISMATCH),
                                       (transit["transit_reason"], transit["transit_status"] == MISMATCH)) if bad]
        if mismatches:
            return replace(frames, status=MISMATCH, reason="; ".join(mismatches), alpha=alpha, transit=transit)
        # no mismatch at alpha / 2: the pass side is the frame mean's one-sided bound at alpha, as without transit
        alone = check_accuracy(own_error, reference_error, reference_block_frames, tolerance_log10, alpha)
        return replace(alone if alone.status != MISMATCH else frames, alpha=alpha, transit=transit)
    own = np.asarray(own_error, float)
    own = own[np.isfinite(own)]
    ref = np.asarray(reference_error, float)
    ref = ref[np.isfinite(ref)]
    n_blocks = len(ref) // max(1, reference_block_frames)
    if len(own) < 2 or n_blocks < 2:
        return AccuracyCheck(INCONCLUSIVE, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"),
                             float("nan"), len(own), n_blocks, tolerance_log10, alpha,
                             f"{len(own)} audited frames and {n_blocks} reference blocks: at least 2 of each needed")
    blocks = ref[:n_blocks * reference_block_frames].reshape(n_blocks, -1).mean(1)
    o, o_err = float(own.mean()), float(own.std(ddof=1) / math.sqrt(len(own)))
    r, r_err = float(blocks.mean()), float(blocks.std(ddof=1) / math.sqrt(n_blocks))
    ratio, ratio_err = log10_ratio(o, o_err, r, r_err)
    # one-sided: only a student less accurate on its own MD fails; one as accurate or more passes once the
    # upper bound of its ratio is inside the tolerance (the false-alarm side is decide's, unchanged)
    if not (math.isfinite(ratio) and math.isfinite(ratio_err)):
        status = INCONCLUSIVE
    elif ratio + z_one_sided(alpha) * ratio_err <= tolerance_log10:
        status = PASS
    elif ratio > z_two_sided(alpha) * ratio_err and ratio > tolerance_log10:
        status = MISMATCH
    else:
        status = INCONCLUSIVE
    reason = ""
    if status == MISMATCH:
        reason = (f"force error on its own MD {1000 * o:.0f} meV/Å against {1000 * r:.0f} on the reference's held-out "
                  f"frames ({10 ** ratio:.2f}x): label its own frames and retrain")
    elif status == INCONCLUSIVE:
        reason = (f"log10 force-error ratio {ratio:+.2f} ± {ratio_err:.2f} cannot be placed inside or outside "
                  f"+{tolerance_log10}: audit more frames")
    return AccuracyCheck(status, o, o_err, r, r_err, ratio, ratio_err, len(own), n_blocks, tolerance_log10, alpha,
                         reason)


def check_transit(own_transit, reference_transit, reference_block_frames: int, tolerance_log10: float = 0.1,
                  alpha: float = 0.05) -> dict:
    """The accuracy comparison restricted to mobile ions in transit (hop barriers set Ea): per frame, the mean
    force error on the ions in transit, NaN where none is.  Own frames count where an ion is in transit; the
    reference's frames keep their time order and blocks of ``reference_block_frames`` average their finite
    values (a block without one is dropped).  Evidence keys ``transit_*``; ``transit_status`` pass | mismatch |
    inconclusive with the same rule as :func:`check_accuracy`."""
    own = np.asarray(own_transit, float)
    own = own[np.isfinite(own)]
    ref = np.asarray(reference_transit, float)
    b = max(1, reference_block_frames)
    blocks = [np.nanmean(blk) for blk in (ref[k:k + b] for k in range(0, len(ref) - b + 1, b)) if np.isfinite(blk).any()]
    out = {"transit_own_error_eV_A": float("nan"), "transit_reference_error_eV_A": float("nan"),
           "transit_log10_ratio": float("nan"), "transit_log10_ratio_err": float("nan"),
           "n_transit_frames": int(len(own)), "transit_reference_blocks": len(blocks)}
    if len(own) < 2 or len(blocks) < 2:
        return {**out, "transit_status": INCONCLUSIVE,
                "transit_reason": f"{len(own)} audited frames and {len(blocks)} reference blocks with an ion in transit: "
                                  "at least 2 of each needed"}
    # the frame-mean rule on the ions in transit: the same one-sided decision
    c = check_accuracy(own, np.asarray(blocks), 1, tolerance_log10, alpha)
    out.update(transit_own_error_eV_A=c.own_error_eV_A, transit_reference_error_eV_A=c.reference_error_eV_A,
               transit_log10_ratio=c.error_log10_ratio, transit_log10_ratio_err=c.error_log10_ratio_err)
    reason = ""
    if c.status == MISMATCH:
        reason = (f"force error on its ions in transit {1000 * c.own_error_eV_A:.0f} meV/Å against "
                  f"{1000 * c.reference_error_eV_A:.0f} on the reference's ({10 ** c.error_log10_ratio:.2f}x): its hop "
                  "barriers are not the oracle's; label its own frames and retrain")
    elif c.status == INCONCLUSIVE:
        reason = (f"ions in transit: log10 force-error ratio {c.error_log10_ratio:+.2f} ± {c.error_log10_ratio_err:.2f} "
                  f"cannot be placed inside or outside +{tolerance_log10}: audit more frames (precision.transit_labels)")
    return {**out, "transit_status": c.status, "transit_reason": reason}
