"""Data-parallel training on Ray Train: ``models.fit`` on N TorchTrainer workers (DDP; gloo on CPU).

Ray Train sets up ``torch.distributed``; each worker's ``fit`` takes its share of every global batch of a
streamed frame cache and DDP averages the gradients: N workers train like one with the same seed and
global batch.  Rank 0 writes the checkpoint (and its record) for the caller.  Used by ``matscreen train
--workers N`` and the campaign's Trainer (``resources.trainer_workers``) via ``train_ensemble(fit_fn=)``.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path


def _worker_loop(config: dict) -> None:
    import ray.train

    from common.atomic import atomic_write_text
    from models import TrainConfig, fit
    from models.checkpoint import model_from_dict
    from models.streaming import FrameCache

    cfg = dict(config["config"])
    if config["use_gpu"]:
        import ray.train.torch

        cfg["device"] = str(ray.train.torch.get_device())
    model = model_from_dict(config["model"], cfg["device"])
    res = fit(model, FrameCache(config["cache"]), None, TrainConfig(**cfg), out=config["out"],
              fine_tune=config["fine_tune"], metadata=config["metadata"])
    if ray.train.get_context().get_world_rank() == 0:      # its record beside rank 0's checkpoint
        atomic_write_text(config["out"] + ".result.json", json.dumps({   # the caller reads it, then deletes it
            "history": res.history, "best_val_loss": res.best_val_loss, "stop_reason": res.stop_reason,
            "val_metrics": res.val_metrics, "added": res.added_elements}, default=float))


def data_parallel_fit(workers: int, use_gpu: bool = False):
    """A ``fit``-compatible function that trains on ``workers`` Ray Train workers (frames: a FrameCache)."""
    from common.errors import InputError

    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")

    def fit_fn(model, frames, val_frames=None, config=None, out=None, progress=None, fine_tune=None, metadata=None):
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        from models import TrainConfig
        from models.checkpoint import load_model, model_to_dict
        from models.streaming import FrameCache
        from models.training import TrainResult

        if not isinstance(frames, FrameCache) or val_frames is not None:
            raise InputError("data-parallel training streams one frame cache (its own validation split); "
                             "build one with models.streaming.FrameCache.build")
        cfg = config or TrainConfig()
        with tempfile.TemporaryDirectory(prefix="matscreen-train-") as tmp:
            target = str(out) if out else str(Path(tmp) / "model.pt")
            trainer = TorchTrainer(
                _worker_loop,
                train_loop_config={"model": model_to_dict(model), "cache": str(frames.path), "config": asdict(cfg),
                                   "out": target, "fine_tune": fine_tune, "metadata": metadata or {},
                                   "use_gpu": use_gpu},
                scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
                run_config=RunConfig(storage_path=tmp, name="fit"))
            trainer.fit()
            m = json.loads(Path(target + ".result.json").read_text())
            Path(target + ".result.json").unlink()
            trained = load_model(target, device=cfg.device)
        for row in m["history"] if progress else []:
            progress(f"epoch {row['epoch']}  val {row['val_loss']:.4g}  ({workers} data-parallel workers)")
        return TrainResult(model=trained, history=m["history"], best_val_loss=m["best_val_loss"],
                           epochs_run=len(m["history"]), stop_reason=m["stop_reason"], val_metrics=m["val_metrics"],
                           added_elements=m["added"])

    return fit_fn
