"""`matscreen train` and `matscreen evaluate`: GNN force fields from labelled frames."""
from __future__ import annotations

import argparse
import json
import sys

TRAIN_DESCRIPTION = """\
Train a graph-neural-network force field on labelled frames (energy + forces, optionally stress)
and write ONE self-describing checkpoint (architecture, hyper-parameters, elements, reference
energies, weights) that `matscreen evaluate`, the MD engine and models.load_model read.

Data: any file ASE reads with labels: extxyz, ASE .db, VASP vasprun.xml or OUTCAR (XDATCAR has no
labels and is refused).  Several --data files are concatenated; frames are split into train and
validation per temperature and run (info keys temperature_K / run_id) reproducibly by --seed.

  matscreen train --data aimd_600K.extxyz aimd_900K.extxyz --model schnet --max-time 600 --out ff.pt
  matscreen train --data more.extxyz --init ff.pt --max-time 300 --out ff2.pt      # fine-tune
  matscreen train --data d.extxyz --model painn --ensemble 4 --max-time 1200 --out ens.pt
  matscreen train --data d.extxyz --resume ff.pt --out ff.pt                       # continue

Loss = w_E*MSE(E/atom) + w_F*MSE(F) (default 1:1000); AdamW, LR on plateau, EMA weights, gradient
clipping, early stopping.  The checkpoint is rewritten after every epoch with the best weights
and the state --resume needs (with --ensemble it is written once, when every member is done;
--max-time is shared between the members).
"""

EVALUATE_DESCRIPTION = """\
Evaluate a checkpoint on labelled frames: energy MAE (meV/atom), force MAE (meV/Å), force R²,
also per element.  With --json prints ONE JSON line with keys energy_mae_meV_atom,
energy_rmse_meV_atom, force_mae_meV_A, force_rmse_meV_A, force_r2, n_frames, n_atoms, per_element.

  matscreen evaluate --model ff.pt --data test.extxyz --json
"""


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="train a GNN force field (schnet, painn, dimenetpp, cgcnn)",
                                  description=TRAIN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--data", nargs="+", required=True, metavar="FILE",
                       help="labelled frames: extxyz, ASE .db, vasprun.xml, OUTCAR (one or more files)")
    train.add_argument("--val-data", nargs="+", metavar="FILE", help="validation frames (default: split --data)")
    train.add_argument("--model", default="schnet", choices=["schnet", "painn", "dimenetpp", "cgcnn"],
                       help="architecture (default schnet); ignored with --init / --resume")
    train.add_argument("--out", required=True, metavar="CKPT", help="checkpoint file to write (e.g. ff.pt)")
    train.add_argument("--max-time", type=float, default=None, metavar="SECONDS",
                       help="wall-clock training budget in seconds (all ensemble members together)")
    train.add_argument("--epochs", type=int, default=200, help="maximum epochs (default 200)")
    train.add_argument("--batch-size", type=int, default=8, help="frames per batch (default 8)")
    train.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    train.add_argument("--energy-weight", type=float, default=1.0, help="w_E on MSE(E/atom) (default 1)")
    train.add_argument("--force-weight", type=float, default=1000.0, help="w_F on MSE(F) (default 1000)")
    train.add_argument("--stress-weight", type=float, default=0.0,
                       help="w_S on MSE(stress in eV/Å³) for frames with stress labels (default 0: off)")
    train.add_argument("--val-fraction", type=float, default=0.1, help="validation share per temperature/run (default 0.1)")
    train.add_argument("--val-per-group", type=int, default=None, metavar="N",
                       help="validation frames per temperature/run instead of --val-fraction (the study: 500)")
    train.add_argument("--patience", type=int, default=40, help="early stopping after this many epochs without improvement")
    train.add_argument("--ensemble", type=int, default=1, metavar="K", help="train K models with seeds SEED..SEED+K-1")
    train.add_argument("--seed", type=int, default=0, help="seed for initialisation and the split (default 0)")
    train.add_argument("--cutoff", type=float, default=5.0, help="model cutoff radius in Å (default 5.0)")
    train.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="parameter precision")
    train.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    train.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE",
                       help="architecture hyper-parameter, repeatable (e.g. hidden_channels=128 num_interactions=4)")
    train.add_argument("--init", metavar="CKPT", help="fine-tune from this checkpoint (new elements are added)")
    train.add_argument("--resume", metavar="CKPT", help="continue an interrupted run from its checkpoint")
    train.add_argument("--stream", action="store_true",
                       help="keep the frames on disk (an HDF5 cache <out>.frames.h5, built once) and build graphs per "
                            "batch: memory does not grow with the data (validation: the cache's own split)")
    train.add_argument("--loader-workers", type=int, default=0, metavar="K",
                       help="with --stream: K processes build graphs while the model trains (default 0)")
    train.add_argument("--max-atoms", type=int, default=1024, metavar="N",
                       help="at most N atoms per batch as well as --batch-size frames (a larger frame is a batch "
                            "alone): memory bounded by atoms whatever the cell size (default 1024; 0 = no bound)")
    train.add_argument("--workers", type=int, default=1, metavar="N",
                       help="train data-parallel on N Ray Train workers (torch DDP, gloo on CPU; streams the data; "
                            "joins $RAY_ADDRESS or starts a local Ray); the global batch is --batch-size")
    train.add_argument("--checkpoint-every", type=int, default=0, metavar="B",
                       help="also write the checkpoint every B batches, so --resume continues mid-epoch")
    train.add_argument("--mixed-precision", action="store_true", help="bf16 autocast of the forward pass (CUDA only)")
    train.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    train.add_argument("--json", action="store_true", help="print the final validation metrics as one JSON line")
    train.set_defaults(func=_train)

    ev = subparsers.add_parser("evaluate", help="evaluate a force-field checkpoint on labelled frames",
                               description=EVALUATE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("--model", required=True, metavar="CKPT", help="checkpoint written by `matscreen train`")
    ev.add_argument("--data", nargs="+", required=True, metavar="FILE", help="labelled frames (extxyz, .db, vasprun.xml, OUTCAR)")
    ev.add_argument("--batch-size", type=int, default=16, help="frames per forward pass (default 16)")
    ev.add_argument("--device", default="cpu", help="torch device (default cpu)")
    ev.add_argument("--json", action="store_true", help="print one JSON line")
    ev.set_defaults(func=_evaluate)


def _parse_hparams(items) -> dict:
    from common.errors import InputError

    out = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"--hparam {item!r} is not KEY=VALUE; write e.g. --hparam hidden_channels=128")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _train(args) -> int:
    from common.atomic import check_writable
    from common.errors import InputError
    from models.checkpoint import load_model, save_model
    from models.data import read_frames
    from models.ensemble import Ensemble
    from models.ensemble_training import EnsembleConfig, train_ensemble
    from models.training import TrainConfig, fit

    for name in ("epochs", "batch_size", "ensemble", "workers"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if args.loader_workers < 0 or args.checkpoint_every < 0 or args.max_atoms < 0:
        raise InputError("--loader-workers, --checkpoint-every and --max-atoms must be >= 0 (--max-atoms 0: no bound)")
    stream = args.stream or args.workers > 1
    if stream and args.val_data:
        raise InputError("--stream brings its own validation split; drop --val-data (or --stream)")
    if args.max_time is not None and args.max_time <= 0:
        raise InputError("--max-time must be a positive number of seconds")
    check_writable(args.out)
    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    if stream:
        from pathlib import Path

        from models.data import iter_frames
        from models.streaming import FrameCache

        cache = Path(f"{args.out}.frames.h5")
        fresh = cache.is_file() and all(cache.stat().st_mtime >= Path(d).stat().st_mtime for d in args.data)
        frames = FrameCache(cache) if fresh else FrameCache.build(cache, iter_frames(args.data))
        say(f"{len(frames)} frames streamed from {cache}")
    else:
        frames = read_frames(args.data)
    val = read_frames(args.val_data) if args.val_data else None
    k = args.ensemble
    budget = None if args.max_time is None else args.max_time / k
    base_cfg = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, energy_weight=args.energy_weight,
                    force_weight=args.force_weight, stress_weight=args.stress_weight, val_fraction=args.val_fraction,
                    val_per_group=args.val_per_group, max_time_s=budget,
                    early_stopping_patience=args.patience, device=args.device, loader_workers=args.loader_workers,
                    max_atoms_per_batch=args.max_atoms or None, checkpoint_every_batches=args.checkpoint_every,
                    mixed_precision=args.mixed_precision)
    meta = {"data": [str(p) for p in args.data]}
    say(_batching(args, frames))
    if args.resume:
        if k != 1 or args.workers != 1:
            raise InputError("--resume continues one model on one worker; drop --ensemble / --workers")
        result = fit(None, frames, val, TrainConfig(seed=args.seed, **base_cfg), out=args.out, resume=args.resume,
                     progress=say, metadata=meta)
        return _finish(args, result.model, result.val_metrics)

    init = None
    if args.init:
        init = load_model(args.init, device=args.device, dtype=args.dtype if args.dtype != "float32" else None)
        init = init.models if isinstance(init, Ensemble) else [init]
    config = EnsembleConfig(architectures=(args.model,), size=k, cutoff_A=args.cutoff, hidden=None, layers=None,
                            hparams=_parse_hparams(args.hparam), dtype=args.dtype)
    fit_fn = None
    if args.workers > 1:
        from actors.distributed import data_parallel_fit
        from orchestrator.ops.ray_runtime import ray_init

        ray_init()
        fit_fn = data_parallel_fit(args.workers, use_gpu=str(args.device).startswith("cuda"))
    result = train_ensemble(frames, config, TrainConfig(seed=args.seed, **base_cfg), seed=args.seed, init=init,
                            val_frames=val, member_paths=[str(args.out)] if k == 1 else None, resumable=k == 1,
                            progress=say, metadata={**meta, "init": args.init}, fit_fn=fit_fn)
    if k == 1:   # fit wrote the checkpoint (and its resume state) after every epoch
        return _finish(args, result.models[0], result.val_metrics[0])
    save_model(Ensemble(result.models), args.out, training={"data": meta["data"], "ensemble": k})
    return _finish(args, None, _mean_metrics(result.val_metrics))


def _batching(args, frames) -> str:
    """Which batching ``train`` chose, in words (frames per batch, bounded by atoms)."""
    sizes = frames.n_atoms if hasattr(frames, "n_atoms") else [len(a) for a in frames]
    largest = int(max(sizes)) if len(sizes) else 0
    if not args.max_atoms:
        return f"batches: {args.batch_size} frames each (up to {args.batch_size * largest} atoms; no atom bound)"
    per = max(1, min(args.batch_size, args.max_atoms // max(largest, 1)))
    return (f"batches: up to {args.batch_size} frames and {args.max_atoms} atoms each (frames of up to {largest} "
            f"atoms: {per} per batch{'; a larger frame is a batch alone' if largest > args.max_atoms else ''})")


def _mean_metrics(metrics: list[dict]) -> dict:
    keys = ["energy_mae_meV_atom", "force_mae_meV_A", "force_r2"]
    return {key: sum(m[key] for m in metrics) / len(metrics) for key in keys} | {"n_frames": metrics[0]["n_frames"],
                                                                                 "members": len(metrics)}


def _finish(args, model, metrics: dict) -> int:
    if args.json:
        print(json.dumps({"checkpoint": str(args.out), **metrics}))
    else:
        print(f"wrote {args.out}: validation energy MAE {metrics['energy_mae_meV_atom']:.2f} meV/atom, "
              f"force MAE {metrics['force_mae_meV_A']:.1f} meV/Å, force R² {metrics['force_r2']:.4f} "
              f"({metrics['n_frames']} frames)")
    return 0


def _evaluate(args) -> int:
    from models.checkpoint import load_model
    from models.data import read_frames
    from models.training import evaluate

    model = load_model(args.model, device=args.device)
    frames = read_frames(args.data)
    metrics = evaluate(model, frames, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(metrics))
        return 0
    print(f"{args.model} on {len(frames)} frames ({metrics['n_atoms']} atoms):")
    print(f"  energy MAE {metrics['energy_mae_meV_atom']:.2f} meV/atom   RMSE {metrics['energy_rmse_meV_atom']:.2f}")
    print(f"  force  MAE {metrics['force_mae_meV_A']:.1f} meV/Å   RMSE {metrics['force_rmse_meV_A']:.1f}   "
          f"R² {metrics['force_r2']:.4f}")
    for el, m in metrics["per_element"].items():
        print(f"  {el:>3}: force MAE {m['force_mae_meV_A']:.1f} meV/Å  R² {m['force_r2']:.4f}  ({m['n_atoms']} atoms)")
    return 0
