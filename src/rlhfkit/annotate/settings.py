"""The server's settings: from the command line, else the environment, else defaults.

Environment variables (so a process manager or `uvicorn --factory` can configure it too):
``RLHFKIT_DB_URL`` (the store), ``RLHFKIT_PROJECT`` (the project folder),
``RLHFKIT_TASK_TIMEOUT`` (seconds), ``RLHFKIT_MAX_BODY`` (bytes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.annotate.store import DB_ENV, DEFAULT_DB, normalise_url

PROJECT_ENV = "RLHFKIT_PROJECT"


@dataclass(frozen=True)
class ServerSettings:
    db_url: str
    project: Any
    """The project folder, or a loaded `Project` (`rlhfkit run` passes the spec it composed,
    overrides included)."""
    host: str = "127.0.0.1"
    """Loopback by default: binding elsewhere exposes the app to the network."""
    port: int = 8765
    task_timeout_s: float = 1800.0
    """An open task not labeled within this long returns to the pool."""
    max_body_bytes: int = 64 * 1024
    """Larger request bodies are refused with 413 before they are read."""
    seed: int | None = None
    """Seeds the scheduler's draws (anchors, display order, recalibration rounds); None:
    fresh each start. A seeded server that answers one request at a time hands out the same
    tasks every run."""

    @classmethod
    def from_env(cls) -> ServerSettings:
        project = Path(os.environ.get(PROJECT_ENV, "."))
        return cls(
            db_url=db_url_for(project, None),
            project=project,
            task_timeout_s=float(os.environ.get("RLHFKIT_TASK_TIMEOUT", 1800)),
            max_body_bytes=int(os.environ.get("RLHFKIT_MAX_BODY", 64 * 1024)),
        )


def db_url_for(project: Path, db: str | None) -> str:
    """`--db`, else ``$RLHFKIT_DB_URL``, else the project's SQLite file."""
    chosen = db or os.environ.get(DB_ENV) or str(Path(project) / "artifacts" / DEFAULT_DB)
    return normalise_url(chosen)
