"""Transport over temperatures: D(T) ± err, σ(T) ± err, Ea ± err, log10 σ(300 K) ± err.

:func:`transport` is the one path from trajectories to the numbers the service reports (campaign,
``matscreen analyze``, the benchmark, the plots).  Each trajectory's production part (after its
``discard_fs``) gives one GLS diffusivity; replicas at one temperature are combined by
inverse-variance weighting of their D; σ follows from Nernst–Einstein (Haven ratio 1).  The Arrhenius
fit is of D(T) (σ T, not σ, is Arrhenius: fitting ln σ against 1/T would bias Ea low by about k_B T); it
propagates the slope–intercept covariance to D(300 K), and σ(300 K) is Nernst–Einstein of that.  A trajectory that cannot give a
fit is dropped with a note, never silently.  Units: cm^2/s, mS/cm, eV, K.

Honest errors:

* replicas are independent estimates: their scatter widens the error (reduced chi^2 when > 1);
* a temperature whose runs are too short (first and second halves disagree beyond their errors, or the
  mobile MSD stays below ``min_msd_A2``, see :func:`analysis.checks.diffusion_convergence`) is flagged
  ``too_short`` and left out of the Arrhenius fit, with a note; it is still reported;
* the Arrhenius lack of fit (reduced chi^2 > 1 with 3+ temperatures) inflates the fit covariance;
* the extrapolation distance to 300 K is reported in 1/T and as a multiple of the fitted 1/T range.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from analysis.diffusion import (MIN_FIT_FRAMES, ArrheniusResult, DiffusionResult, arrhenius, charge_of, diffusion,
                                nernst_einstein_mS_cm)
from analysis.checks import Convergence, combine_convergence, replica_mean
from common.trajectory import Trajectory
from common.errors import InputError


@dataclass
class TransportPoint:
    temperature_K: float
    n_replicas: int
    diffusivity_cm2_s: float
    diffusivity_err_cm2_s: float
    conductivity_mS_cm: float
    conductivity_err_mS_cm: float
    converged: bool = True            # False: too_short (left out of the Arrhenius fit)
    halves_z: float | None = None     # |D(first half) - D(second half)| / combined error (replicas combined)
    msd_A2: float | None = None       # mean mobile MSD at the fit end (Å^2)


@dataclass
class TransportResult:
    species: str
    points: list[TransportPoint]
    arrhenius: ArrheniusResult | None
    notes: list[str] = field(default_factory=list)
    runs: list[DiffusionResult] = field(default_factory=list)    # per trajectory (not serialised)
    arrhenius_reduced_chi2: float | None = None
    extrapolation_inv_K: float | None = None      # 1/300 K - 1/T_min of the fit (1/K)
    extrapolation_ratio: float | None = None      # that distance / the fitted 1/T range

    @property
    def too_short_K(self) -> list[float]:
        return [p.temperature_K for p in self.points if not p.converged]

    def to_dict(self) -> dict:
        """The flat record the campaign ledger, MLflow and the tables use (lists aligned with temperatures_K)."""
        p = self.points
        out = {"species": self.species, "temperatures_K": [x.temperature_K for x in p],
               "n_replicas": [x.n_replicas for x in p],
               "diffusivity_cm2_s": [x.diffusivity_cm2_s for x in p],
               "diffusivity_cm2_s_err": [x.diffusivity_err_cm2_s for x in p],
               "conductivity_mS_cm": [x.conductivity_mS_cm for x in p],
               "conductivity_mS_cm_err": [x.conductivity_err_mS_cm for x in p],
               "converged": [x.converged for x in p], "halves_z": [x.halves_z for x in p],
               "msd_A2": [x.msd_A2 for x in p], "too_short_K": self.too_short_K, "notes": list(self.notes)}
        if self.arrhenius is not None:
            a = self.arrhenius
            out.update(activation_energy_eV=a.activation_energy_eV, activation_energy_eV_err=a.activation_energy_err_eV,
                       log10_sigma_300K=a.log10_sigma300_mS_cm, log10_sigma_300K_err=a.log10_sigma300_err,
                       arrhenius_slope_K=a.slope_K, arrhenius_intercept=a.intercept,
                       arrhenius_covariance=np.asarray(a.covariance).tolist(),
                       arrhenius_reduced_chi2=self.arrhenius_reduced_chi2, extrapolation_inv_K=self.extrapolation_inv_K,
                       extrapolation_ratio=self.extrapolation_ratio)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "TransportResult":
        n = len(d["temperatures_K"])
        points = [TransportPoint(*row) for row in zip(d["temperatures_K"], d["n_replicas"], d["diffusivity_cm2_s"],
                                                      d["diffusivity_cm2_s_err"], d["conductivity_mS_cm"],
                                                      d["conductivity_mS_cm_err"], d.get("converged", [True] * n),
                                                      d.get("halves_z", [None] * n), d.get("msd_A2", [None] * n))]
        fit = None
        if d.get("activation_energy_eV") is not None:
            fit = ArrheniusResult(d["activation_energy_eV"], d["activation_energy_eV_err"], d["log10_sigma_300K"],
                                  d["log10_sigma_300K_err"], d["arrhenius_slope_K"], d["arrhenius_intercept"],
                                  np.asarray(d["arrhenius_covariance"]))
        return cls(species=d["species"], points=points, arrhenius=fit, notes=list(d.get("notes", [])),
                   arrhenius_reduced_chi2=d.get("arrhenius_reduced_chi2"),
                   extrapolation_inv_K=d.get("extrapolation_inv_K"), extrapolation_ratio=d.get("extrapolation_ratio"))


def combine_replicas(results: list[DiffusionResult]) -> tuple[float, float]:
    """Mean D of the replicas and its error (cm^2/s, :func:`analysis.checks.replica_mean`); their spread widens it."""
    return replica_mean([r.diffusivity_cm2_s for r in results], [r.diffusivity_err_cm2_s for r in results])


def combine(results: list[DiffusionResult], n_ions: int, volume_A3: float, species: str = "Li",
            notes: list[str] | None = None, convergence: list[Convergence] | None = None,
            extrapolate_K: float = 300.0) -> TransportResult:
    """Group diffusion results by temperature, convert to σ, fit Arrhenius on the converged temperatures.

    ``convergence``: one :class:`analysis.checks.Convergence` per result (None: every result counts as
    converged, e.g. synthetic data); the halves of the replicas at one temperature are combined first.
    """
    notes = list(notes or [])
    if any(r.temperature_K is None for r in results):
        raise InputError("every diffusion result needs a temperature; pass --temperature or use MD trajectories")
    charge = charge_of(species)
    points = []
    for t in sorted({float(r.temperature_K) for r in results}):
        idx = [i for i, r in enumerate(results) if float(r.temperature_K) == t]
        d, d_err = combine_replicas([results[i] for i in idx])
        sigma = nernst_einstein_mS_cm(d, n_ions, volume_A3, t, charge)
        per_d = sigma / d if d else 0.0
        point = TransportPoint(t, len(idx), d, d_err, sigma, abs(per_d) * d_err)
        if convergence is not None:
            _converged(point, [results[i] for i in idx], [convergence[i] for i in idx], notes)
        points.append(point)
    usable = [p for p in points if p.diffusivity_cm2_s > 0 and p.converged]
    out = TransportResult(species=species, points=points, arrhenius=None, notes=notes, runs=list(results))
    if len(usable) >= 2:
        temps = [p.temperature_K for p in usable]
        d, d_err = [p.diffusivity_cm2_s for p in usable], [p.diffusivity_err_cm2_s for p in usable]
        fit = arrhenius(temps, d, d_err, extrapolate_K=extrapolate_K)
        if len(usable) > 2:
            chi2 = _reduced_chi2(fit, usable)
            out.arrhenius_reduced_chi2 = chi2
            if chi2 > 1.0:
                fit = arrhenius(temps, d, d_err, extrapolate_K=extrapolate_K, inflate=chi2)
                notes.append(f"Arrhenius lack of fit (reduced chi^2 {chi2:.2f}) widens the errors")
        # the fit is of D (sigma T, not sigma, is Arrhenius); sigma(300 K) is Nernst-Einstein of D(300 K)
        per_d = nernst_einstein_mS_cm(1.0, n_ions, volume_A3, extrapolate_K, charge)
        out.arrhenius = replace(fit, log10_sigma300_mS_cm=fit.log10_sigma300_mS_cm + math.log10(per_d))
        span = 1.0 / min(temps) - 1.0 / max(temps)
        out.extrapolation_inv_K = 1.0 / extrapolate_K - 1.0 / min(temps)
        out.extrapolation_ratio = out.extrapolation_inv_K / span if span > 0 else float("inf")
    elif points:
        notes.append("fewer than 2 converged temperatures with positive diffusivity: no Arrhenius fit")
    return out


def _converged(point: TransportPoint, results: list[DiffusionResult], conv: list[Convergence], notes: list[str]) -> None:
    """Mark ``point`` too_short when its replicas' combined halves disagree or the MSD is too small
    (:func:`analysis.checks.combine_convergence`, the dynamics check's rule)."""
    c = combine_convergence(results, conv)
    if not math.isfinite(c.first_half_cm2_s):
        point.converged = False
        notes.append(f"{point.temperature_K:g} K too_short: {c.reason} (left out of the Arrhenius fit)")
        return
    point.halves_z = c.halves_z
    point.msd_A2 = c.msd_at_fit_end_A2
    if c.too_short:
        point.converged = False
        notes.append(f"{point.temperature_K:g} K too_short: {c.reason}: run longer "
                     "(left out of the Arrhenius fit)")


def _reduced_chi2(fit: ArrheniusResult, points: list[TransportPoint]) -> float:
    t = np.array([p.temperature_K for p in points])
    y = np.log([p.diffusivity_cm2_s for p in points])
    e = np.array([p.diffusivity_err_cm2_s / p.diffusivity_cm2_s for p in points])
    resid = y - (fit.intercept + fit.slope_K / t)
    return float(((resid / np.maximum(e, 1e-12)) ** 2).sum() / (len(t) - 2))


def transport(trajectories: list[Trajectory], species: str = "Li", min_msd_A2: float = 10.0) -> TransportResult:
    """D, σ per temperature and the Arrhenius fit from the production part of ``trajectories``.

    All trajectories must be of one material (same atoms).  One that is too short to fit or gives no
    finite fit is dropped with a note; a temperature whose runs are not converged is flagged
    ``too_short`` (:func:`combine`).  With no run left the result has no points and says why in ``notes``.
    """
    from analysis.checks import diffusion_convergence

    if not trajectories:
        raise InputError("no trajectories to analyse; give at least one stable MD run")
    first = trajectories[0]
    for t in trajectories[1:]:
        if len(t.numbers) != len(first.numbers) or not np.array_equal(t.numbers, first.numbers):
            raise InputError(f"{t.path} and {first.path} are different systems; analyse one material at a time")
    results, conv, notes = [], [], []
    for traj in trajectories:
        prod = traj.production()
        name = traj.path or f"run at {traj.temperature_K} K"
        if len(prod) < MIN_FIT_FRAMES:
            notes.append(f"{name}: {len(prod)} stored frames after equilibration; a diffusion fit needs at least "
                         f"{MIN_FIT_FRAMES} (dropped)")
            continue
        res, c = diffusion_convergence(traj, species, min_msd_A2=min_msd_A2)
        if not (math.isfinite(res.diffusivity_cm2_s) and math.isfinite(res.diffusivity_err_cm2_s)):
            notes.append(f"{name}: no finite diffusion fit (dropped)")
            continue
        results.append(res)
        conv.append(c)
    if not results:
        return TransportResult(species=species, points=[], arrhenius=None, notes=notes)
    from ase.data import atomic_numbers

    n_ions = int((np.asarray(first.numbers) == atomic_numbers[species]).sum())
    return combine(results, n_ions, first.volume_A3, species, notes, conv)
