"""How every benchmark script prints its figures: one JSON line (``--json``) or ``key: value`` lines."""
from __future__ import annotations

import json


def print_result(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
