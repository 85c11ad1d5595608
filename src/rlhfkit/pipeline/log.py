"""The stage log of a run folder (``stages.json``): which stages finished, with which inputs.

A stage's *fingerprint* is the hash of everything it was made from: its effective config and
its inputs' own fingerprints. A rerun skips a stage whose fingerprint is unchanged and whose
outputs are still there; a changed input changes the fingerprint of its stage and, through
``output_key``, of every stage downstream of it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit import strict_json
from rlhfkit.data.io import atomic_open
from rlhfkit.lineage import config_hash


@dataclass
class StageLog:
    """Per-stage timings and fingerprints, kept in ``stages.json``."""

    path: Path
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path) -> StageLog:
        records = json.loads(path.read_text()) if path.exists() else {}
        return cls(path, records)

    def done(self, name: str, inputs: dict[str, Any], outputs: tuple[Path, ...] = ()) -> bool:
        previous = self.records.get(name)
        return bool(
            previous
            and previous.get("fingerprint") == config_hash(inputs)
            and all(p.exists() for p in outputs)
        )

    def changed(self, name: str, inputs: dict[str, Any]) -> bool:
        """The stage started or finished before with other inputs: what it left behind
        (a finished output, or a half-run's checkpoints) must not be reused."""
        previous = self.records.get(name, {})
        fingerprint = config_hash(inputs)
        return any(
            previous.get(key) not in (None, fingerprint) for key in ("fingerprint", "started")
        )

    def changes(self, name: str, inputs: dict[str, Any]) -> list[str]:
        """What differs from the inputs the stage last ran with, as dotted keys
        (``config.beta``, ``after.annotate``): why it would run again."""
        before = self.records.get(name, {}).get("inputs")
        if before is None:
            return []
        now = strict_json.loads(strict_json.dumps(strict_json.nulled(inputs), default=str))
        return _differences(before, now)

    def output_key(self, name: str) -> str:
        """What downstream stages fingerprint: this stage's inputs and when it last ran, so
        a stage rerun because its outputs were deleted reruns everything after it too."""
        record = self.records[name]
        return f"{record['fingerprint']}@{record.get('finished', '')}"

    def run(
        self,
        name: str,
        inputs: dict[str, Any],
        fn: Callable[[], Any],
        outputs: tuple[Path, ...] = (),
        force: bool = False,
    ) -> bool:
        """Run `fn` unless it finished before with the same inputs and its outputs are still
        there (or `force`); return True if it ran. An exception from `fn` (an error, or a
        stage waiting for people) leaves the stage 'started', not finished."""
        if not force and self.done(name, inputs, outputs):
            return False
        self.records[name] = {"started": config_hash(inputs)}
        self._save()
        started = time.time()
        fn()
        self.records[name] = {
            "fingerprint": config_hash(inputs),
            "seconds": round(time.time() - started, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "inputs": inputs,
        }
        self._save()
        return True

    def _save(self) -> None:
        with atomic_open(self.path) as f:
            strict_json.dump(strict_json.nulled(self.records), f, indent=2, default=str)

    def seconds(self) -> dict[str, float]:
        return {name: r["seconds"] for name, r in self.records.items() if "seconds" in r}


def _differences(before: Any, now: Any, prefix: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(now, dict):
        keys = sorted(set(before) | set(now))
        return [d for k in keys for d in _differences(before.get(k), now.get(k), f"{prefix}{k}.")]
    return [] if before == now else [prefix.rstrip(".")]
