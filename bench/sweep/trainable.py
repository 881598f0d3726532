"""The function every sweep trial runs: note where it runs, then train.

Why a wrapper around `bench.train.trainable.trial_fn`: on a multi-node cluster a result is
only interpretable with the node that produced it (timings, GPU type), and Tune's own
``node_ip`` cannot tell two nodes on one host apart. Each (re)start appends one line to
``<trial dir>/node.json`` in the sweep's storage (the folder Tune keeps the trial's
result.json in, which every node must reach: run multi-node sweeps on a shared filesystem).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from bench.train.trainable import trial_fn


def node_file(config: dict[str, Any], trial_name: str) -> Path | None:
    sweep = config.get("sweep") or {}
    if not sweep.get("dir") or not sweep.get("unit"):
        return None
    return Path(sweep["dir"]) / sweep["unit"] / trial_name / "node.json"


def run_trial(config: dict[str, Any]) -> None:
    import ray  # heavy
    from ray import tune  # heavy

    ctx = tune.get_context()
    f = node_file(config, ctx.get_trial_name())
    if f is not None:
        rt = ray.get_runtime_context()
        line = {"node_id": rt.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
                "hostname": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
                "resources": {k: v for k, v in rt.get_assigned_resources().items()}}
        try:
            f.parent.mkdir(parents=True, exist_ok=True)
            with f.open("a") as fh:
                fh.write(json.dumps(line) + "\n")
        except OSError:
            pass                # bookkeeping only: never fail a trial for it
    trial_fn(config)
