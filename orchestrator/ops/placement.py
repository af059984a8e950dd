"""Where the campaign's actors go on a cluster: a pure decision from ``ray.cluster_resources()``.

ray_cluster.yaml marks node roles with custom resources: ``matscreen_head`` (the head: campaign
driver, MLflow server), ``matscreen_md`` (GPU nodes) and ``matscreen_oracle`` (CPU nodes for the
reference calculators, one unit per CPU).  When the cluster advertises them, the actors ask for them:

* Tracker (the only MLflow writer; it reaches MLflow on the head's 127.0.0.1): a small fraction
  (0.01) of ``matscreen_head``, so it always lands on the head and never blocks anything;
* MDWorker: ``matscreen_md`` = its GPUs (0.01 when it runs without a GPU), i.e. one per GPU node;
* ReferenceWorker: ``matscreen_oracle`` = its CPUs.

A resource the cluster does not advertise is not asked for (a laptop's local Ray behaves as before).
"""
from __future__ import annotations

import math

from common.errors import InputError

HEAD, MD, ORACLE = "matscreen_head", "matscreen_md", "matscreen_oracle"
TRACKER_SHARE = 0.01


def placement(cluster_resources: dict, gpus_per_md_worker: float, cpus_per_oracle: float) -> dict[str, dict]:
    """Extra ``.options(resources=...)`` per role (``tracker``, ``md``, ``reference``); empty dicts when the
    cluster has none of the matscreen resources."""
    have = {k for k, v in (cluster_resources or {}).items() if v and v > 0}
    out: dict[str, dict] = {"tracker": {}, "md": {}, "reference": {}}
    if HEAD in have:
        out["tracker"] = {HEAD: TRACKER_SHARE}
    if MD in have:
        out["md"] = {MD: float(gpus_per_md_worker) if gpus_per_md_worker and gpus_per_md_worker > 0 else 0.01}
    if ORACLE in have:
        out["reference"] = {ORACLE: float(cpus_per_oracle) if cpus_per_oracle and cpus_per_oracle > 0 else 0.01}
    return out


def actor_cpus(resources) -> float:
    """CPUs the campaign's actors ask Ray for, all together (the spec's ``resources`` section)."""
    r = resources
    return r.cpus_per_oracle * r.reference_workers + r.cpus_per_trainer + r.cpus_per_md_worker * r.md_workers


def local_cpus(resources, num_cpus: int | None, cores: int) -> int:
    """Logical CPUs for a private local Ray on a machine with ``cores``: ``num_cpus`` when given, else the cores,
    or the actors' sum when that is more and one candidate is in flight (``queue_size`` 1: its stages run one
    after another, so each stage's actor may use every core).  InputError when the actors would not fit: Ray
    would wait for them for ever."""
    needed = math.ceil(actor_cpus(resources))
    if num_cpus is None:
        num_cpus = max(cores, needed) if resources.queue_size == 1 else cores
    if needed > num_cpus:
        raise InputError(f"the campaign's actors ask for {needed} CPUs (resources.cpus_per_* x workers) and the "
                         f"local Ray has {num_cpus}; pass --num-cpus {needed}, lower resources.cpus_per_*, or set "
                         "resources.queue_size 1 (its stages then take turns on the cores)")
    return num_cpus
