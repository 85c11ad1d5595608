"""What every artifact was made from: input hashes, configuration, code version.

Each artifact ``X`` (a dataset, candidates, a trained model, a converted bundled model) gets a
sidecar ``X.manifest.json`` (or a ``rlhfkit-manifest.json`` inside
a folder), so a report can trace itself back through model, labels and rubric version.
"""

from __future__ import annotations

import getpass
import hashlib
import time
from pathlib import Path
from typing import Any

from rlhfkit import __version__, strict_json
from rlhfkit.data.io import atomic_open

MANIFEST = "rlhfkit-manifest.json"
"""A folder artifact's manifest, inside it (a model, a training run's final/)."""


def login_name() -> str:
    """Who is running this: the login name, as the store's audit log and doctor.json record
    a person's decisions and the rounds they open ("unknown" where there is none)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return "unknown"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(
        strict_json.dumps(config, sort_keys=True, default=str).encode()
    ).hexdigest()[:16]


def weights_identity(folder: Path) -> dict[str, Any]:
    """A model folder's identity for a cache key (the DPO reference log-probs, the evaluation's
    samples and rewards): its path and its weight files' names, sizes and modification times.
    Hashing 500 MB per use would cost more than it saves."""
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    weights = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return {"folder": str(folder.resolve()), "weights": weights}


def manifest_path(artifact: Path) -> Path:
    if artifact.is_dir():
        return artifact / MANIFEST
    return artifact.with_name(artifact.name + ".manifest.json")


def write_manifest(
    artifact: Path, *, kind: str, inputs: dict[str, Path], config: dict[str, Any], **extra: Any
) -> Path:
    """Record an artifact's inputs (with hashes), config and the rlhfkit version beside it.
    The one manifest writer: datasets, candidates, trained models and the model cache."""
    record = {
        "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rlhfkit_version": __version__,
        "inputs": {
            name: {"path": str(p), "sha256": sha256_file(p) if p.is_file() else None}
            for name, p in inputs.items()
        },
        "config": config,
        **extra,
    }
    target = manifest_path(artifact)
    with atomic_open(target) as f:
        strict_json.dump(record, f, indent=2, default=str)
        f.write("\n")
    return target
