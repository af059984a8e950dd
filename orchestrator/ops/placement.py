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
