"""Per-candidate plots for MLflow: RDF of the last exploration vs the oracle reference, MSD of every
production run, Arrhenius of sigma(T) with its fit (PNG files drawn by ``analysis.plots``)."""
from __future__ import annotations

from pathlib import Path


def candidate_plots(out_dir: str | Path, ledger, key: str, result: dict) -> list[str]:
    """Draw what the ledger has for ``key``; returns the PNG paths written (missing inputs are skipped)."""
    import numpy as np

    from actors.science import rdf
    from analysis import plots

    out = Path(out_dir)
    paths: list[str] = []
    steps = ledger.steps()
    ref = steps.get(f"ref:{key.split('@')[0]}")  # one reference per candidate, shared by its generations <c>@g<n>
    explores = sorted((k for k in steps if k.startswith(f"explore:{key}:")), key=lambda k: int(k.rsplit(":", 1)[1]))
    if ref and explores and Path(ref["path"]).exists():
        last = steps[explores[-1]]
        if Path(last["path"]).exists():
            p = out / "rdf.png"
            plots.plot_rdf(rdf(last["path"], skip=2), p, reference=rdf(ref["path"], skip=2))
            paths.append(str(p))
    prod = steps.get(f"prod:{key}")
    if prod:
        from analysis.diffusion import diffusion

        from md.trajectory import TrajectoryReader

        spec = ledger.get_meta("spec") or {}
        eq = spec.get("md", {}).get("equilibration_steps", 0)
        for run in prod["runs"]:
            if run.get("exploded") or run.get("fusion") or not Path(run["path"]).exists():
                continue
            with TrajectoryReader(run["path"]) as tr:
                skip = eq // int(tr.stride)
                unwrapped, numbers, dt = tr.read("unwrapped_positions")[skip:], tr.numbers, float(tr.dt_fs)
            if len(unwrapped) < 20:
                continue
            try:
                res = diffusion(unwrapped, numbers, dt, species="Li", temperature_K=run["temperature_K"])
            except ValueError:
                continue
            p = out / f"msd_{run['temperature_K']:g}K.png"
            plots.plot_msd(res, p)
            paths.append(str(p))
    if result.get("activation_energy_eV") is not None and len(result.get("temperatures_K", [])) >= 2:
        from analysis.diffusion import arrhenius

        t = np.asarray(result["temperatures_K"])
        s = np.asarray(result["conductivity_mS_cm"])
        e = np.asarray(result["conductivity_mS_cm_err"])
        ok = s > 0
        if ok.sum() >= 2:
            fit = arrhenius(t[ok], s[ok], e[ok])
            p = out / "arrhenius.png"
            plots.plot_arrhenius(t[ok], s[ok], e[ok], fit, p)
            paths.append(str(p))
    return paths
