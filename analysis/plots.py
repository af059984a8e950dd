"""PNG plots: partial RDFs vs a reference, MSD with its fit, Arrhenius with error bars."""
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
    ax.legend(fontsize=7)
    _save(fig, plt, path)


def _save(fig, plt, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_transport(result, out_dir) -> list[str]:
    """MSD of every run (``msd_<T>K_r<k>.png``) and the Arrhenius plot of a TransportResult; returns the paths."""
    from pathlib import Path

    out, paths, seen = Path(out_dir), [], {}
    for run in result.runs:
        k = seen[run.temperature_K] = seen.get(run.temperature_K, -1) + 1
        p = out / f"msd_{run.temperature_K:g}K_r{k}.png"
        plot_msd(run, p)
        paths.append(str(p))
    usable = [q for q in result.points if q.diffusivity_cm2_s > 0 and q.converged]
    if result.arrhenius is not None and len(usable) >= 2:
        p = out / "arrhenius.png"
        plot_arrhenius([q.temperature_K for q in usable], [q.diffusivity_cm2_s for q in usable],
                       [q.diffusivity_err_cm2_s for q in usable], result.arrhenius, p, "log10 D (cm²/s)")
        paths.append(str(p))
    return paths
