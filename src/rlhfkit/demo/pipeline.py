"""The demo: the bundled example project run through every stage that exists so far.

Each stage is resumable: a finished stage is recorded in ``stages.json`` with a fingerprint
of its inputs and settings, and a rerun skips it unless that fingerprint changed. Stages now:
scaffold the project, provision SmolLM2, sample candidate replies, and measure the success
criteria's base rates on them (what training will have to move).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.data.io import atomic_open
from rlhfkit.lineage import config_hash


@dataclass(frozen=True)
class DemoConfig:
    root: Path = Path("runs/demo")
    """Where the demo's project and artifacts go."""
    quick: bool = False
    """Smaller everything, same stages."""

    @property
    def n_prompts(self) -> int:
        return 8 if self.quick else 32

    @property
    def max_new_tokens(self) -> int:
        return 64 if self.quick else 128


@dataclass
class StageLog:
    """Per-stage timings and whether each ran or was skipped as already done."""

    path: Path
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path) -> StageLog:
        records = json.loads(path.read_text()) if path.exists() else {}
        return cls(path, records)

    def run(
        self,
        name: str,
        inputs: dict[str, Any],
        fn: Callable[[], Any],
        outputs: tuple[Path, ...] = (),
    ) -> bool:
        """Run `fn` unless it finished before with the same inputs and its outputs are still
        there; return True if it ran."""
        fingerprint = config_hash(inputs)
        previous = self.records.get(name)
        if (
            previous
            and previous.get("fingerprint") == fingerprint
            and all(p.exists() for p in outputs)
        ):
            return False
        started = time.time()
        fn()
        self.records[name] = {
            "fingerprint": fingerprint,
            "seconds": round(time.time() - started, 1),
        }
        with atomic_open(self.path) as f:
            json.dump(self.records, f, indent=2)
        return True


def baseline_rates(project_root: Path, candidates: Path) -> dict[str, Any]:
    """Pass rate of each success criterion over every sampled response."""
    from rlhfkit.data import load
    from rlhfkit.project import load_project

    spec = load_project(project_root).spec
    rows = load(candidates).rows
    # A reply cut at the token limit can never end with a sign-off and always looks
    # concise: counting it would bias every rate, so only complete replies count.
    pairs = [
        (r[k], r.get("truncated", [False, False])[i])
        for r in rows
        for i, k in enumerate(("response_a", "response_b"))
    ]
    responses = [_text(reply) for reply, cut in pairs if not cut]
    rates = {}
    for c in spec.success_criteria:
        hits = sum(c.detector.matches(t) for t in responses)
        rates[c.name] = {
            "direction": c.direction,
            "pass_rate": hits / len(responses) if responses else None,
            "n": len(responses),
        }
    words = [len(t.split()) for t in responses]
    return {
        "complete": len(responses),
        "truncated": len(pairs) - len(responses),
        "criteria": rates,
        "mean_words": sum(words) / len(words) if words else None,
        "responses": len(responses),
    }


def _text(value: str | list[dict[str, str]]) -> str:
    return value if isinstance(value, str) else "\n".join(m["content"] for m in value)
