"""How a matscreen process joins Ray, and where its results go when it runs as a Ray job.

* With ``$RAY_ADDRESS`` (a cluster, or the driver of a Ray job) it joins that cluster and never
  passes resource counts.
* Without it, it starts a private local instance (``address="local"``), whatever a stale
  ``ray_current_cluster`` file in Ray's temp directory says about an earlier ``ray start --head``.
* A Ray job's working directory is a temporary copy that Ray deletes with its session, so inside
  a job (``RAY_JOB_CONFIG_JSON_ENV_VAR`` is set for every job driver) relative locations (the store,
  the default MLflow database) resolve against the home directory instead: ``~/.matscreen``.
"""
from __future__ import annotations

import os
from pathlib import Path

JOB_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"     # set by Ray's job supervisor for the job's driver


def in_ray_job() -> bool:
    """True inside the driver of a job submitted with ``ray job submit`` / ``matscreen schedule``."""
    return bool(os.environ.get(JOB_ENV_VAR))


def base_dir() -> Path:
    """Where relative result locations resolve: the working directory, or ``~`` inside a Ray job."""
    return Path.home() if in_ray_job() else Path.cwd()


def starts_local_ray() -> bool:
    """Whether :func:`ray_init` would start a private local Ray (none running here, no ``$RAY_ADDRESS`` to join)."""
    import ray

    return not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")


def ray_init(num_cpus: int | None = None, log_file: str | os.PathLike | None = None) -> bool:
    """Join ``$RAY_ADDRESS`` or start a private local Ray (no dashboard); True if this call started one.
    ``log_file``: Ray's own messages in this process (its token notice, its start line) go there, not to the
    user's terminal."""
    import logging

    import ray

    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("ray").handlers = [handler]
    if ray.is_initialized():
        return False
    if starts_local_ray():
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    return True
