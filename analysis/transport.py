"""Transport over temperatures: D(T) ± err, σ(T) ± err, Ea ± err, log10 σ(300 K) ± err.

:func:`transport` is the one path from trajectories to the numbers the service reports (campaign,
``matscreen analyze``, the benchmark, the plots).  Each trajectory's production part (after its
``discard_fs``) gives one GLS diffusivity; replicas at one temperature are combined by
inverse-variance weighting of their D; σ follows from Nernst–Einstein (Haven ratio 1) and the
Arrhenius fit propagates the slope–intercept covariance to 300 K.  A trajectory that cannot give a
fit is dropped with a note, never silently.  Units: cm^2/s, mS/cm, eV, K.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from analysis.diffusion import (MIN_FIT_FRAMES, ArrheniusResult, DiffusionResult, arrhenius, charge_of, diffusion,
                                nernst_einstein_mS_cm)
from analysis.trajectory import Trajectory
from common.errors import InputError


@dataclass
class TransportPoint:
    temperature_K: float
    n_replicas: int
    diffusivity_cm2_s: float
    diffusivity_err_cm2_s: float
    conductivity_mS_cm: float
    conductivity_err_mS_cm: float


@dataclass
class TransportResult:
    species: str
    points: list[TransportPoint]
    arrhenius: ArrheniusResult | None
    notes: list[str] = field(default_factory=list)
    runs: list[DiffusionResult] = field(default_factory=list)    # per trajectory (not serialised)

    def to_dict(self) -> dict:
        """The flat record the campaign ledger, MLflow and the tables use (lists aligned with temperatures_K)."""
        p = self.points
        out = {"species": self.species, "temperatures_K": [x.temperature_K for x in p],
               "n_replicas": [x.n_replicas for x in p],
               "diffusivity_cm2_s": [x.diffusivity_cm2_s for x in p],
               "diffusivity_cm2_s_err": [x.diffusivity_err_cm2_s for x in p],
               "conductivity_mS_cm": [x.conductivity_mS_cm for x in p],
               "conductivity_mS_cm_err": [x.conductivity_err_mS_cm for x in p], "notes": list(self.notes)}
        if self.arrhenius is not None:
            a = self.arrhenius
            out.update(activation_energy_eV=a.activation_energy_eV, activation_energy_eV_err=a.activation_energy_err_eV,
                       log10_sigma_300K=a.log10_sigma300_mS_cm, log10_sigma_300K_err=a.log10_sigma300_err,
                       arrhenius_slope_K=a.slope_K, arrhenius_intercept=a.intercept,
                       arrhenius_covariance=np.asarray(a.covariance).tolist())
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "TransportResult":
        points = [TransportPoint(*row) for row in zip(d["temperatures_K"], d["n_replicas"], d["diffusivity_cm2_s"],
                                                      d["diffusivity_cm2_s_err"], d["conductivity_mS_cm"],
                                                      d["conductivity_mS_cm_err"])]
        fit = None
        if d.get("activation_energy_eV") is not None:
            fit = ArrheniusResult(d["activation_energy_eV"], d["activation_energy_eV_err"], d["log10_sigma_300K"],
                                  d["log10_sigma_300K_err"], d["arrhenius_slope_K"], d["arrhenius_intercept"],
                                  np.asarray(d["arrhenius_covariance"]))
        return cls(species=d["species"], points=points, arrhenius=fit, notes=list(d.get("notes", [])))


def combine_replicas(results: list[DiffusionResult]) -> tuple[float, float]:
    """Inverse-variance mean of D and its error (cm^2/s); the spread between replicas widens it."""
    d = np.array([r.diffusivity_cm2_s for r in results])
    e = np.array([max(r.diffusivity_err_cm2_s, 1e-30) for r in results])
    w = 1.0 / e ** 2
    mean = float((w * d).sum() / w.sum())
    err = float(np.sqrt(1.0 / w.sum()))
    if len(d) > 1:                                   # over-dispersion: scale by the reduced chi^2 when > 1
        chi2 = float((w * (d - mean) ** 2).sum() / (len(d) - 1))
        err *= np.sqrt(max(chi2, 1.0))
    return mean, err


def combine(results: list[DiffusionResult], n_ions: int, volume_A3: float, species: str = "Li",
            notes: list[str] | None = None) -> TransportResult:
    """Group diffusion results by temperature, convert to σ, fit Arrhenius (needs >= 2 temperatures)."""
    notes = list(notes or [])
    if any(r.temperature_K is None for r in results):
        raise InputError("every diffusion result needs a temperature; pass --temperature or use MD trajectories")
    charge = charge_of(species)
    points = []
    for t in sorted({float(r.temperature_K) for r in results}):
        group = [r for r in results if float(r.temperature_K) == t]
        d, d_err = combine_replicas(group)
        sigma = nernst_einstein_mS_cm(d, n_ions, volume_A3, t, charge)
        per_d = sigma / d if d else 0.0
        points.append(TransportPoint(t, len(group), d, d_err, sigma, abs(per_d) * d_err))
    usable = [p for p in points if p.conductivity_mS_cm > 0]
    fit = None
    if len(usable) >= 2:
        fit = arrhenius([p.temperature_K for p in usable], [p.conductivity_mS_cm for p in usable],
                        [p.conductivity_err_mS_cm for p in usable])
    elif points:
        notes.append("fewer than 2 temperatures with positive conductivity: no Arrhenius fit")
    return TransportResult(species=species, points=points, arrhenius=fit, notes=notes, runs=list(results))


def transport(trajectories: list[Trajectory], species: str = "Li") -> TransportResult:
    """D, σ per temperature and the Arrhenius fit from the production part of ``trajectories``.

    All trajectories must be of one material (same atoms).  One that is too short or gives no finite
    fit is dropped with a note; with none left the result has no points and says why in ``notes``.
    """
    if not trajectories:
        raise InputError("no trajectories to analyse; give at least one stable MD run")
    first = trajectories[0]
    for t in trajectories[1:]:
        if len(t.numbers) != len(first.numbers) or not np.array_equal(t.numbers, first.numbers):
            raise InputError(f"{t.path} and {first.path} are different systems; analyse one material at a time")
    results, notes = [], []
    for traj in trajectories:
        prod = traj.production()
        name = traj.path or f"run at {traj.temperature_K} K"
        if len(prod) < MIN_FIT_FRAMES:
            notes.append(f"{name}: {len(prod)} stored frames after equilibration; a diffusion fit needs at least "
                         f"{MIN_FIT_FRAMES} (dropped)")
            continue
        res = diffusion(prod.unwrapped, prod.numbers, prod.dt_fs, species=species, temperature_K=prod.temperature_K)
        if not (math.isfinite(res.diffusivity_cm2_s) and math.isfinite(res.diffusivity_err_cm2_s)):
            notes.append(f"{name}: no finite diffusion fit (dropped)")
            continue
        results.append(res)
    if not results:
        return TransportResult(species=species, points=[], arrhenius=None, notes=notes)
    from ase.data import atomic_numbers

    n_ions = int((np.asarray(first.numbers) == atomic_numbers[species]).sum())
    return combine(results, n_ions, first.volume_A3, species, notes)
