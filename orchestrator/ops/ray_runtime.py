"""How a matscreen process joins Ray: the cluster in ``$RAY_ADDRESS``, else a local instance of its own."""
from __future__ import annotations

import os


def ray_init(num_cpus: int | None = None) -> bool:
    """Connect to ``$RAY_ADDRESS`` or start a local Ray (no dashboard); True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return True
