"""Shared test settings: a quiet, fast Ray and MLflow, and automatic GPU skips."""

from __future__ import annotations

import os

import pytest

# Quiet/fast Ray settings measured in STACK_NOTES section 1; set before any test imports ray.
for _k, _v in {
    "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_DEDUP_LOGS": "0", "TUNE_GLOBAL_CHECKPOINT_S": "1",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}.items():
    os.environ.setdefault(_k, _v)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is visible")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cpp_kernels():
    """The C++ kernels of bench/models/csrc. Not building them is a failure (the machine has a
    C++ compiler); with GESTUREBENCH_NATIVE=0 the tests that need them skip."""
    if os.environ.get("GESTUREBENCH_NATIVE") == "0":
        pytest.skip("GESTUREBENCH_NATIVE=0: the C++ kernels are turned off")
    from bench.models import _native

    kernels = _native.load()
    assert kernels is not None, "the C++ kernels did not build (see the warning)"
    return kernels
