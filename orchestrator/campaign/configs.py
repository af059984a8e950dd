"""The spec's words -> the packages' settings (plain dicts of their dataclasses, ready to cross Ray).

Translation only: every number comes from the validated spec (``orchestrator.campaign.spec``); the
packages own the meaning (``models.TrainConfig``, ``md.protocol.Protocol``, ``md.monitors.MonitorConfig``,
``analysis.verdicts.VerdictThresholds``, ``reference.reference_md.ReferenceMDProtocol``, ...).
The campaign and the benchmark both use these, so both run the same settings.
"""
from __future__ import annotations


def oracle(cfg: dict) -> dict:
    """``reference.oracles.Oracle`` keywords."""
    o = cfg["oracle"]
    return {"name": o["name"], "version": o["version"], "device": o["device"]}


def ensemble(cfg: dict) -> dict:
    """``models.EnsembleConfig`` fields."""
    m = cfg["models"]
    return {"architectures": list(m["architectures"]), "size": m["ensemble_size"], "cutoff_A": m["cutoff_A"],
            "hidden": m["hidden"], "layers": m["layers"]}


def training(cfg: dict) -> dict:
    """``models.TrainConfig`` fields (the seed is set per member by ``models.train_ensemble``)."""
    t = cfg["training"]
    return {"epochs": t["epochs"], "batch_size": t["batch_size"], "lr": t["learning_rate"],
            "energy_weight": t["energy_weight"], "force_weight": t["force_weight"],
            "max_time_s": None if t["max_minutes"] is None else t["max_minutes"] * 60.0, "val_fraction": t["validation_fraction"],
            "loader_workers": t["loader_workers"], "max_atoms_per_batch": t["max_atoms_per_batch"]}


def thresholds(cfg: dict) -> dict:
    """``analysis.verdicts.VerdictThresholds`` fields: the judge's and the live monitors' numbers."""
    s = cfg["stability"]
    keys = ("fusion_fraction", "max_temperature_factor", "min_runaway_K", "framework_drift_A", "false_alarm_rate",
            "rdf_mae", "rdf_block_fs", "lattice_tolerance", "dynamics_log10_tolerance", "framework_log10_tolerance",
            "min_msd_A2", "accuracy_log10_tolerance", "trust_lo_eV_A", "trust_hi_eV_A", "trust_band_ratio", "accurate_fraction")
    return {**{k: s[k] for k in keys}, "mobile_species": [cfg["md"]["species"]]}


def exploration_steps(cfg: dict, ref: dict | None = None) -> int:
    """Steps of an exploration run: ``md.exploration_steps``, by default the reference's length (a user's
    reference trajectory: its duration in the student's time steps)."""
    md = cfg["md"]
    if md["exploration_steps"] is not None:
        return md["exploration_steps"]
    meta = (ref or {}).get("metadata") or {}
    if meta.get("kind") == "user-reference":
        return max(1, round(meta["duration_fs"] / md["timestep_fs"]))
    return md["reference_steps"]


def reference_temperature(cfg: dict, ref: dict | None = None) -> float:
    """The temperature of the candidate's reference (K): a user's trajectory's own, else the spec's."""
    meta = (ref or {}).get("metadata") or {}
    return float(meta["temperature_K"]) if meta.get("kind") == "user-reference" else cfg["md"]["reference_temperature_K"]


def is_production_temperature(cfg: dict, temperature_K: float) -> bool:
    """Whether ``temperature_K`` is one of ``md.temperatures_K`` (where the judged exploration run, at the
    reference temperature, counts as a production replica)."""
    return float(temperature_K) in {float(t) for t in cfg["md"]["temperatures_K"]}


def production_temperatures(cfg: dict, ref: dict | None = None) -> list[float]:
    """Temperatures (K) production runs ``md.replicas`` times.  The judged exploration replicas, at the
    reference temperature with the same model and protocol, are production replicas there; when there are at
    least ``md.replicas`` of them, each at least ``md.steps`` long, production does not repeat that temperature."""
    md = cfg["md"]
    t_ref = reference_temperature(cfg, ref)
    covered = md["exploration_replicas"] >= md["replicas"] and exploration_steps(cfg, ref) >= md["steps"]
    return [float(t) for t in md["temperatures_K"] if not (covered and float(t) == t_ref)]


def user_reference(cfg: dict, row: dict) -> dict | None:
    """``reference.user_reference.UserReference`` fields of the candidate's entry in
    ``reference_data.trajectories`` (by candidate key, else by reduced formula), None when it has none."""
    from pymatgen.core import Composition

    entries = cfg["reference_data"]["trajectories"]
    if row["key"] in entries:
        return dict(entries[row["key"]])
    reduced = Composition(row["formula"]).reduced_formula
    for name, entry in entries.items():
        try:
            if Composition(name).reduced_formula == reduced:
                return dict(entry)
        except Exception:  # noqa: BLE001 - a candidate key, not a formula
            continue
    return None


def monitor(cfg: dict) -> dict:
    """``md.monitors.MonitorConfig`` fields: the judge's thresholds, checked every stored frame at most."""
    return {**thresholds(cfg), "check_every": max(1, min(10, cfg["md"]["save_every"]))}


def protocol(cfg: dict, steps: int, equilibration_steps: int = 0) -> dict:
    """``md.protocol.Protocol`` fields: straight NVT at the target with the spec's thermostat and stride;
    ``equilibration_steps`` become the ``discard_fs`` every analysis of the run drops."""
    md = cfg["md"]
    dt = md["timestep_fs"]
    return {"timestep_fs": dt, "total_fs": steps * dt, "ramp_fs": 0.0, "discard_fs": equilibration_steps * dt,
            "thermostat": md["thermostat"], "stride": md["save_every"], "checkpoint_every": max(md["save_every"], 50)}


def reference_protocol(cfg: dict, temperature_K: float | None = None, steps: int | None = None,
                       labels: int | None = None) -> dict:
    """``reference.reference_md.ReferenceMDProtocol`` fields: oracle MD with the students' stride and time step,
    labelling ``labels`` evenly spaced frames (default ``active_learning.initial_labels``) before the held-out
    calibration block (``active_learning.calibration_holdout``)."""
    from reference.reference_md import calibration_block

    md, al = cfg["md"], cfg["active_learning"]
    steps = md["reference_steps"] if steps is None else steps
    labels = al["initial_labels"] if labels is None else labels
    holdout = al["calibration_holdout"]
    labelled_steps = calibration_block(steps + 1, md["equilibration_steps"], holdout)   # labels only before it
    return {"temperature_K": md["reference_temperature_K"] if temperature_K is None else temperature_K,
            "steps": steps, "timestep_fs": md["timestep_fs"], "stride": md["save_every"],
            "label_every": max(1, labelled_steps // max(1, labels)), "seed": cfg["seed"],
            "discard_fs": md["equilibration_steps"] * md["timestep_fs"], "holdout_fraction": holdout}


def candidates(cfg: dict) -> dict:
    """``reference.candidates.generate_candidates`` keywords (``space`` as ``SpaceSpec`` fields)."""
    c, sp = cfg["candidates"], cfg["space"]
    return {"formulas": list(c["formulas"]), "structures": dict(c["structures"]), "prototypes": list(cfg["prototypes"]),
            "max_candidates": c["max_candidates"], "max_atoms": c["max_atoms"], "include_known": c["include_known"],
            "known": c["known"],
            "space": {"elements": list(sp["elements"]), "require": list(sp["require"]), "arity_min": sp["arity_min"],
                      "arity_max": sp["arity_max"], "max_stoichiometry": sp["max_stoichiometry"],
                      "charge_neutral": sp["charge_neutral"], "electronegativity": sp["electronegativity"]}}
