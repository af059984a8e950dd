"""Transport result over temperatures: D(T) ± err, σ(T) ± err, Ea ± err, log10 σ(300 K) ± err.

Replicas at one temperature are combined by inverse-variance weighting of their D; σ follows
from Nernst–Einstein (Haven ratio 1) and the Arrhenius fit propagates the slope–intercept
covariance to 300 K.  Units: cm^2/s, mS/cm, eV, K.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.diffusion import ArrheniusResult, DiffusionResult, arrhenius, charge_of, nernst_einstein_mS_cm
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

    def to_dict(self) -> dict:
        out = {"species": self.species, "points": [vars(p) for p in self.points], "notes": self.notes}
        if self.arrhenius is not None:
            a = self.arrhenius
            out.update(activation_energy_eV=a.activation_energy_eV, activation_energy_err_eV=a.activation_energy_err_eV,
                       log10_sigma300_mS_cm=a.log10_sigma300_mS_cm, log10_sigma300_err=a.log10_sigma300_err)
        return out


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


def transport(results: list[DiffusionResult], n_ions: int, volume_A3: float, species: str = "Li") -> TransportResult:
    """Group diffusion results by temperature, convert to σ, fit Arrhenius (needs >= 2 temperatures)."""
    if not results:
        raise InputError("no diffusion results to combine; analyse at least one stable trajectory")
    if any(r.temperature_K is None for r in results):
        raise InputError("every diffusion result needs a temperature; pass --temperature or use MD trajectories")
    charge = charge_of(species)
    points, notes = [], []
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
    else:
        notes.append("fewer than 2 temperatures with positive conductivity: no Arrhenius fit")
    return TransportResult(species=species, points=points, arrhenius=fit, notes=notes)
