"""One small function per campaign step: which actor does it, with which settings, writing where.

Each step is one actor call whose answer is a package dataclass as a dict (``to_dict``); the driver
records it in the ledger under the step's key and never runs it again.  Paths depend only on the
step, so a step retried after a crash overwrites its own half-finished work.  No science here.

``Actors`` holds the handles: pools (``ActorPool``) for oracle and MD work, single actors otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.campaign import configs
from reference.store import LabelStore, shard_name


@dataclass
class Context:
    """What every step needs: the validated spec (dict), the campaign directory, the store and actors."""
    cfg: dict
    root: Path              # <store>/<campaign name>
    store: Path             # the data store root (labels in <store>/shards)
    actors: Any             # generator, reference (pool), md (pool), judge, trainer
    _labels: LabelStore | None = field(default=None, repr=False)

    @property
    def labels(self) -> LabelStore:
        """The store, opened once: its per-shard summaries are cached between selections."""
        if self._labels is None:
            self._labels = LabelStore(self.store)
        return self._labels

    @property
    def name(self) -> str:
        return self.cfg["name"]

    def shard(self, key: str, n: int) -> str:
        return shard_name(self.name, key, n)

    def call(self, actor, method: str, *args) -> Any:
        import ray

        return ray.get(getattr(actor, method).remote(*args))


def candidates(ctx: Context) -> dict:
    """``reference.candidates.CandidateSet`` of the spec (structures in ``candidates/<c>/``)."""
    return ctx.call(ctx.actors.generator, "generate", str(ctx.root / "candidates"), configs.candidates(ctx.cfg))


def reference(ctx: Context, row: dict) -> dict:
    """Oracle MD at the reference temperature; its labels are the candidate's shard r0 (``ReferenceRun``)."""
    key = row["key"]
    return ctx.actors.reference.call("reference_md", row["structure_path"], configs.reference_protocol(ctx.cfg),
                                     str(ctx.root / "reference" / f"{key}.h5"), str(ctx.store), ctx.shard(key, 0),
                                     f"{ctx.name}/{key}/r0")


def user_reference(ctx: Context, row: dict, source: dict) -> dict:
    """The user's trajectory ``source`` (``reference_data.trajectories``) as the candidate's reference: the
    service's HDF5 copy and the shard r0 (``reference.user_reference``), instead of oracle MD."""
    key, md = row["key"], ctx.cfg["md"]
    return ctx.actors.reference.call("import_reference", source, row["structure_path"],
                                     str(ctx.root / "reference" / f"{key}.h5"),
                                     md["equilibration_steps"] * md["timestep_fs"], str(ctx.store), ctx.shard(key, 0),
                                     ctx.cfg["active_learning"]["initial_labels"], ctx.cfg["reference_data"]["oracle"],
                                     f"{ctx.name}/{key}/r0", ctx.cfg["active_learning"]["calibration_holdout"])


def training_set(ctx: Context, elements: set[str], min_shared: int, oracle: str) -> dict:
    """The store selection a round trains on (``reference.store.Selection``), fixed before training."""
    return ctx.labels.select(elements, min_shared, oracle).to_dict()


def train(ctx: Context, gkey: str, r: int, selection: dict, init: list[str] | None) -> dict:
    """Train (round 0) or fine-tune the ensemble on exactly ``selection`` (``models.EnsembleTrainResult``)."""
    t = ctx.cfg["training"]
    return ctx.call(ctx.actors.trainer, "train", str(ctx.store), selection, configs.ensemble(ctx.cfg),
                    configs.training(ctx.cfg), str(ctx.root / "models" / gkey / f"r{r}"), ctx.cfg["seed"] + r,
                    init, t["fine_tune_epochs"] if init else None, t["streaming"],
                    ctx.cfg["resources"]["trainer_workers"])


def explore(ctx: Context, gkey: str, r: int, members: list[str], structure: str, ref: dict) -> dict:
    """Student MD at the reference's temperature, same protocol and length as the reference, in
    ``md.exploration_replicas`` replicas as one batch: ``{"runs": [SystemResult, ...]}``."""
    md = ctx.cfg["md"]
    runs = ctx.actors.md.call("run", members, structure, [configs.reference_temperature(ctx.cfg, ref)],
                              md["exploration_replicas"],
                              configs.protocol(ctx.cfg, configs.exploration_steps(ctx.cfg, ref), md["equilibration_steps"]),
                              configs.monitor(ctx.cfg),
                              ctx.cfg["seed"] + 1000 * r, str(ctx.root / "md" / gkey / f"explore_r{r}"))
    return {"runs": runs}


def trajectories(explored: dict) -> list[str]:
    """The trajectory files of an exploration step's replicas."""
    return [run["trajectory"] for run in explored["runs"]]


def reference_errors(ctx: Context, members: list[str], reference_path: str) -> dict:
    """The ensemble's force deviation and true error on the reference's held-out block, and their calibration."""
    return ctx.call(ctx.actors.judge, "reference_errors", members, reference_path, configs.thresholds(ctx.cfg))


def audit(ctx: Context, gkey: str, r: int, members: list[str], explore_paths: list[str], ref: dict,
          reference_calibration: dict) -> dict:
    """Oracle labels of ``active_learning.audit_labels`` frames spread over the exploration replicas (shard
    ``<c>-audit`` r<r>: they train the next round) and the ensemble's errors and calibration there:
    {frames (per replica), n_labels, n_failed, errors, shard, force_mae_meV_A, deviation_eV_A, max_error_eV_A,
    mean_error_eV_A, calibration}."""
    frames = ctx.call(ctx.actors.judge, "audit_frames", explore_paths, ctx.cfg["active_learning"]["audit_labels"])
    lab = label(ctx, f"{gkey}-audit", r, explore_paths, frames, ref)
    out = {"frames": frames, **lab}
    if lab["shard"]:
        out.update(force_errors(ctx, members, lab["shard"], reference_calibration))
    return out


def judge(ctx: Context, gkey: str, r: int, explore_paths: list[str], reference_path: str,
          reference_errors: dict | None, audit: dict | None) -> dict:
    """Verdict on the exploration replicas, judged as one, and the frames to label, per replica
    (``analysis.selection.ExplorationReport``);
    ``reference_errors``: the ensemble's on the reference's held-out block (:func:`reference_errors`),
    ``audit``: on audited frames of the run (:func:`audit`)."""
    al = ctx.cfg["active_learning"]
    ref = reference_errors or {}
    audited = ({"frames": audit["frames"], "mean_error_eV_A": audit["mean_error_eV_A"]}
               if audit and "mean_error_eV_A" in audit else None)
    return ctx.call(ctx.actors.judge, "judge", explore_paths, reference_path, configs.thresholds(ctx.cfg),
                    al["labels_per_round"], al["min_frame_distance_A"],
                    str(ctx.root / "plots" / gkey / f"rdf_r{r}.png"), ref.get("deviation_eV_A"),
                    ref.get("mean_error_eV_A"), audited)


def label(ctx: Context, gkey: str, n: int, explore_paths: list[str], frames: list[list[int]], ref: dict) -> dict:
    """Oracle labels of the selected frames (one list per replica) as the shard ``r<n>``
    (``reference.oracles.LabelResult``)."""
    return ctx.actors.reference.call("label", explore_paths, frames, configs.reference_temperature(ctx.cfg, ref),
                                     str(ctx.store), ctx.shard(gkey, n), f"{ctx.name}/{gkey}/r{n}")


def force_errors(ctx: Context, members: list[str], shard: str, reference_calibration: dict | None) -> dict:
    """The ensemble's force MAE on the frames just labelled (meV/Å) and its deviation's calibration there,
    tested against the reference's (trust band, failure level, error-bound factor)."""
    return ctx.call(ctx.actors.judge, "force_errors", members, shard, ctx.cfg["stability"]["false_alarm_rate"],
                    reference_calibration)


def production(ctx: Context, gkey: str, members: list[str], structure: str, ref: dict) -> dict:
    """Every production temperature x replica as one batch: ``{"runs": [SystemResult, ...]}`` (the
    reference temperature's run may be the exploration's: ``configs.production_temperatures``)."""
    md = ctx.cfg["md"]
    temperatures = configs.production_temperatures(ctx.cfg, ref)
    if not temperatures:
        return {"runs": []}
    runs = ctx.actors.md.call("run", members, structure, temperatures, md["replicas"],
                              configs.protocol(ctx.cfg, md["steps"], md["equilibration_steps"]),
                              configs.monitor(ctx.cfg), ctx.cfg["seed"] + 77, str(ctx.root / "md" / gkey / "production"))
    return {"runs": runs}


def transport(ctx: Context, gkey: str, trajectories: list[str]) -> dict:
    """D(T), sigma(T), Ea, log10 sigma(300 K) of the stable runs, and their plots (``TransportResult``)."""
    s = ctx.cfg["stability"]
    return ctx.call(ctx.actors.judge, "transport", trajectories, ctx.cfg["md"]["species"],
                    str(ctx.root / "plots" / gkey), s["min_msd_A2"])
