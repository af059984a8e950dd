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

from orchestrator.campaign.spec import CampaignSpec
from reference.store import LabelStore, shard_name


@dataclass
class Context:
    """What every step needs: the validated spec, the campaign directory, the store and actors."""
    spec: CampaignSpec
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
        return self.spec.name

    def shard(self, key: str, n: int) -> str:
        return shard_name(self.name, key, n)

    def call(self, actor, method: str, *args) -> Any:
        import ray

        return ray.get(getattr(actor, method).remote(*args))


def candidates(ctx: Context) -> dict:
    """``reference.candidates.CandidateSet`` of the spec (structures in ``candidates/<c>/``)."""
    s = ctx.spec
    return ctx.call(ctx.actors.generator, "generate", str(ctx.root / "candidates"), s.candidates, list(s.prototypes),
                    s.space)


def reference(ctx: Context, row: dict) -> dict:
    """Oracle MD at the reference temperature; its labels are the candidate's shard r0 (``ReferenceRun``)."""
    key = row["key"]
    return ctx.actors.reference.call("reference_md", row["structure_path"], ctx.spec.reference_protocol(),
                                     str(ctx.root / "reference" / f"{key}.h5"), str(ctx.store), ctx.shard(key, 0),
                                     f"{ctx.name}/{key}/r0")


def user_reference(ctx: Context, row: dict, source) -> dict:
    """The user's trajectory ``source`` (``reference_data.trajectories``) as the candidate's reference: the
    service's HDF5 copy and the shard r0 (``reference.user_reference``), instead of oracle MD."""
    key, s = row["key"], ctx.spec
    return ctx.actors.reference.call("import_reference", source, row["structure_path"],
                                     str(ctx.root / "reference" / f"{key}.h5"),
                                     s.md.equilibration_steps * s.md.protocol.timestep_fs, str(ctx.store),
                                     ctx.shard(key, 0), s.active_learning.initial_labels, s.reference_data.oracle,
                                     f"{ctx.name}/{key}/r0", s.active_learning.calibration_holdout)


def training_set(ctx: Context, elements: set[str], min_shared: int, oracle: str) -> dict:
    """The store selection a round trains on (``reference.store.Selection``), fixed before training."""
    return ctx.labels.select(elements, min_shared, oracle).to_dict()


def train(ctx: Context, gkey: str, r: int, selection: dict, init: list[str] | None) -> dict:
    """Train (round 0) or fine-tune the ensemble on exactly ``selection`` (``models.EnsembleTrainResult``)."""
    s = ctx.spec
    return ctx.call(ctx.actors.trainer, "train", str(ctx.store), selection, s.models, s.training,
                    str(ctx.root / "models" / gkey / f"r{r}"), s.seed + r, init,
                    s.active_learning.fine_tune_epochs if init else None, s.resources.streaming,
                    s.resources.trainer_workers)


def explore(ctx: Context, gkey: str, r: int, members: list[str], structure: str, ref: dict) -> dict:
    """Student MD at the reference's temperature, same protocol and length as the reference, in
    ``md.exploration_replicas`` replicas as one batch: ``{"runs": [SystemResult, ...]}``."""
    s = ctx.spec
    runs = ctx.actors.md.call("run", members, structure, [s.reference_temperature(ref)], s.md.exploration_replicas,
                              s.md.run_protocol(s.exploration_steps(ref), s.md.equilibration_steps), s.monitor(),
                              s.seed + 1000 * r, str(ctx.root / "md" / gkey / f"explore_r{r}"))
    return {"runs": runs}


def trajectories(explored: dict) -> list[str]:
    """The trajectory files of an exploration step's replicas."""
    return [run["trajectory"] for run in explored["runs"]]


def reference_errors(ctx: Context, members: list[str], reference_path: str) -> dict:
    """The ensemble's force deviation and true error on the reference's held-out block, and their calibration."""
    return ctx.call(ctx.actors.judge, "reference_errors", members, reference_path, ctx.spec.stability)


def audit(ctx: Context, gkey: str, r: int, members: list[str], explore_paths: list[str], ref: dict,
          reference_calibration: dict) -> dict:
    """Oracle labels of ``active_learning.audit_labels`` frames spread over the exploration replicas (shard
    ``<c>-audit`` r<r>: they train the next round) and the ensemble's errors and calibration there:
    {frames (per replica), n_labels, n_failed, errors, shard, force_mae_meV_A, deviation_eV_A, max_error_eV_A,
    mean_error_eV_A, calibration}."""
    frames = ctx.call(ctx.actors.judge, "audit_frames", explore_paths, ctx.spec.active_learning.audit_labels)
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
    al = ctx.spec.active_learning
    ref = reference_errors or {}
    audited = ({"frames": audit["frames"], "mean_error_eV_A": audit["mean_error_eV_A"]}
               if audit and "mean_error_eV_A" in audit else None)
    return ctx.call(ctx.actors.judge, "judge", explore_paths, reference_path, ctx.spec.stability,
                    al.labels_per_round, al.min_frame_distance_A,
                    str(ctx.root / "plots" / gkey / f"rdf_r{r}.png"), ref.get("deviation_eV_A"),
                    ref.get("mean_error_eV_A"), audited)


def label(ctx: Context, gkey: str, n: int, explore_paths: list[str], frames: list[list[int]], ref: dict) -> dict:
    """Oracle labels of the selected frames (one list per replica) as the shard ``r<n>``
    (``reference.oracles.LabelResult``)."""
    return ctx.actors.reference.call("label", explore_paths, frames, ctx.spec.reference_temperature(ref),
                                     str(ctx.store), ctx.shard(gkey, n), f"{ctx.name}/{gkey}/r{n}")


def force_errors(ctx: Context, members: list[str], shard: str, reference_calibration: dict | None) -> dict:
    """The ensemble's force MAE on the frames just labelled (meV/Å) and its deviation's calibration there,
    tested against the reference's (trust band, failure level, error-bound factor)."""
    return ctx.call(ctx.actors.judge, "force_errors", members, shard, ctx.spec.stability.false_alarm_rate,
                    reference_calibration)


def production(ctx: Context, gkey: str, members: list[str], structure: str, ref: dict) -> dict:
    """Every production temperature x replica as one batch: ``{"runs": [SystemResult, ...]}`` (the
    reference temperature's run may be the exploration's: ``CampaignSpec.production_temperatures``)."""
    s = ctx.spec
    temperatures = s.production_temperatures(ref)
    if not temperatures:
        return {"runs": []}
    runs = ctx.actors.md.call("run", members, structure, temperatures, s.md.replicas,
                              s.md.run_protocol(s.md.steps, s.md.equilibration_steps), s.monitor(), s.seed + 77,
                              str(ctx.root / "md" / gkey / "production"))
    return {"runs": runs}


def transport(ctx: Context, gkey: str, trajectories: list[str]) -> dict:
    """D(T), sigma(T), Ea, log10 sigma(300 K) of the stable runs, and their plots (``TransportResult``)."""
    s = ctx.spec
    return ctx.call(ctx.actors.judge, "transport", trajectories, s.md.species, str(ctx.root / "plots" / gkey),
                    s.stability.min_msd_A2)
