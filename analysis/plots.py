"""PNG plots: partial RDFs vs a reference, MSD with its fit, Arrhenius with error bars, σ(T) with its 300 K
extrapolation, and a campaign's ranking of log10 σ(300 K) beside known values.  Every plot has a title."""
from __future__ import annotations

import numpy as np

from common.atomic import atomic_path


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rdf(result, path, reference=None) -> None:
    plt = _figure()
    names = sorted(result.partial)
    fig, axes = plt.subplots(len(names), 1, figsize=(5, 1.6 * len(names) + 0.5), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        ax.plot(result.r_A, result.partial[name], label="MD")
        if reference is not None and name in reference.partial:
            ax.plot(reference.r_A, reference.partial[name], "--", label="reference")
        ax.set_ylabel(f"g {name}")
    axes[-1, 0].set_xlabel("r (Å)")
    axes[0, 0].legend(fontsize=7)
    axes[0, 0].set_title("partial RDFs: this run" + (" against the reference" if reference is not None else ""),
                         fontsize=9)
    _save(fig, plt, path)


def plot_msd(result, path) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    t_ps = result.lag_fs / 1000.0
    ax.plot(t_ps, result.msd_A2, label=f"{result.species} MSD")
    ax.plot(t_ps, result.framework_msd_A2, label="framework MSD")
    slope = result.diffusivity_cm2_s / 0.1 * 6.0
    fit = (result.lag_fs >= result.fit_start_fs) & (result.lag_fs <= result.fit_end_fs)
    ax.plot(t_ps[fit], slope * result.lag_fs[fit] + result.intercept_A2, "k--",
            label=f"D = {result.diffusivity_cm2_s:.2e} ± {result.diffusivity_err_cm2_s:.1e} cm²/s")
    ax.set_xlabel("lag (ps)")
    ax.set_ylabel("MSD (Å²)")
    t = getattr(result, "temperature_K", None)
    ax.set_title(f"{result.species} mean squared displacement" + (f" at {t:g} K" if t else "") + " and its fit",
                 fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, plt, path)


def plot_arrhenius(temperatures_K, sigma_mS_cm, sigma_err_mS_cm, fit, path, ylabel: str = "log10 σ (mS/cm)") -> None:
    """Points and the fitted line ln y = intercept + slope / T of the quantity ``fit`` was fitted to."""
    plt = _figure()
    t = np.asarray(temperatures_K, float)
    s = np.asarray(sigma_mS_cm, float)
    e = np.asarray(sigma_err_mS_cm, float)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(1000.0 / t, np.log10(s), yerr=e / (s * np.log(10)), fmt="o", capsize=3)
    x = np.linspace(1000.0 / 300.0, 1000.0 / t.max(), 50)
    ax.plot(x, (fit.intercept + fit.slope_K * x / 1000.0) / np.log(10), "k--",
            label=f"Ea = {fit.activation_energy_eV:.3f} ± {fit.activation_energy_err_eV:.3f} eV")
    ax.set_xlabel("1000 / T (1/K)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"Arrhenius fit of {ylabel.split(' (')[0].replace('log10 ', '')} at "
                 f"{', '.join(f'{x:g}' for x in sorted(t, reverse=True))} K", fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, plt, path)


def _save(fig, plt, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_sigma(points, fit, log10_sigma_300K: float, err_300K: float | None, path, title: str) -> None:
    """σ(T) on an Arrhenius axis: the Nernst-Einstein σ of each temperature with its error, the fit of D carried
    to σ (σ ∝ D/T) down to 300 K, and the 300 K value with its error (``err_300K``: the total, else the fit's)."""
    plt = _figure()
    t = np.array([q.temperature_K for q in points], float)
    s = np.array([q.conductivity_mS_cm for q in points], float)
    e = np.array([q.conductivity_err_mS_cm for q in points], float)
    per_d_t = float(np.median([q.conductivity_mS_cm / q.diffusivity_cm2_s * q.temperature_K for q in points]))
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.errorbar(1000.0 / t, np.log10(s), yerr=e / (s * np.log(10)), fmt="o", capsize=3, label="MD (Nernst-Einstein)")
    temps = np.linspace(300.0, t.max(), 60)
    line = (fit.intercept + fit.slope_K / temps + np.log(per_d_t / temps)) / np.log(10)
    ax.plot(1000.0 / temps, line, "k--", label=f"Arrhenius fit of D, Ea = {fit.activation_energy_eV:.3f} ± "
                                               f"{fit.activation_energy_err_eV:.3f} eV")
    ax.errorbar([1000.0 / 300.0], [log10_sigma_300K], yerr=[err_300K or 0.0], fmt="s", color="C3", capsize=4,
                label=f"300 K: {log10_sigma_300K:.2f} ± {err_300K or 0.0:.2f}")
    ax.set_xlabel("1000 / T (1/K)")
    ax.set_ylabel("log10 σ (mS/cm)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, plt, path)


def plot_ranking(names, values, errors, known, path, title: str) -> None:
    """log10 σ(300 K) of each candidate with its total error (a candidate without a number is named, no point)
    and the known (measured) value beside it where there is one."""
    plt = _figure()
    y = np.arange(len(names))[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(names) + 1.4))
    for yi, v, e, k in zip(y, values, errors, known):
        if v is not None:
            ax.errorbar([v], [yi], xerr=[e or 0.0], fmt="o", color="C0", capsize=3)
        if k is not None:
            ax.plot([k], [yi], "k*", markersize=9)
    ax.plot([], [], "o", color="C0", label="computed ± total error")
    ax.plot([], [], "k*", label="measured (known)")
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("log10 σ(300 K) (mS/cm)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    _save(fig, plt, path)


def plot_transport(result, out_dir, title: str | None = None, log10_sigma_300K_err: float | None = None) -> list[str]:
    """MSD of every run (``msd_<T>K_replica<k>.png``), the Arrhenius plot of D (``arrhenius.png``) and σ(T) with its
    300 K extrapolation (``sigma_arrhenius.png``, titled ``title``; ``log10_sigma_300K_err``: the total error of
    the budget when there is one) of a TransportResult; returns the paths."""
    from pathlib import Path

    out, paths, seen = Path(out_dir), [], {}
    for run in result.runs:
        k = seen[run.temperature_K] = seen.get(run.temperature_K, -1) + 1
        p = out / f"msd_{run.temperature_K:g}K_replica{k}.png"
        plot_msd(run, p)
        paths.append(str(p))
    usable = [q for q in result.points if q.diffusivity_cm2_s > 0 and q.converged]
    if result.arrhenius is not None and len(usable) >= 2:
        p = out / "arrhenius.png"
        plot_arrhenius([q.temperature_K for q in usable], [q.diffusivity_cm2_s for q in usable],
                       [q.diffusivity_err_cm2_s for q in usable], result.arrhenius, p, "log10 D (cm²/s)")
        paths.append(str(p))
        temps = ", ".join(f"{q.temperature_K:g}" for q in usable)
        a = result.arrhenius
        p = out / "sigma_arrhenius.png"
        plot_sigma(usable, a, a.log10_sigma300_mS_cm, log10_sigma_300K_err or a.log10_sigma300_err, p,
                   f"{title or result.species}: σ({result.species}) at {temps} K, extrapolated to 300 K")
        paths.append(str(p))
    return paths
