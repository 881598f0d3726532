"""What produced a run: the source commit and the versions of the stack (tags on every run).

A benchmark number without the code and library versions behind it cannot be reproduced
(Ray, MLflow and DALI change behaviour between minor versions)."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

# distribution name -> short tag name
PACKAGES = {
    "gesturebench": "gesturebench", "torch": "torch", "ray": "ray", "mlflow": "mlflow",
    "nvidia-dali-cuda130": "dali", "av": "av", "opencv-python-headless": "opencv",
    "polars": "polars", "numpy": "numpy", "optuna": "optuna", "python": "python",
}


@functools.cache
def git_commit() -> tuple[str, bool]:
    """(commit sha or "unknown", dirty) of the checkout holding this package."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown", False
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


@functools.cache
def package_versions() -> dict[str, str]:
    import platform

    out: dict[str, str] = {}
    for dist, short in PACKAGES.items():
        if dist == "python":
            out[short] = platform.python_version()
            continue
        try:
            out[short] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[short] = "absent"
    return out


def provenance_tags() -> dict[str, str]:
    sha, dirty = git_commit()
    tags = {"git_commit": sha, "git_dirty": str(dirty).lower()}
    tags.update({f"version.{k}": v for k, v in package_versions().items()})
    return tags
