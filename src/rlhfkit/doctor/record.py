"""doctor.json in the run folder: the latest diagnosis and every override of a stop.

Keys: ``checks`` [Check.to_json, in the run's order], ``counts`` {verdict: n},
``overrides`` [{at, by, stage, candidates_sha256, failed}] (a run told to go on past a
failed check: who, when, past what). Written by `rlhfkit run` after each stage and by
`rlhfkit doctor`; read by the report and summary.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlhfkit import strict_json
from rlhfkit.data.io import atomic_open
from rlhfkit.doctor.verdict import Check, counts

DOCTOR_FILE = "doctor.json"
"""Its name in the run folder."""


def read_record(path: Path) -> dict[str, Any]:
    """The file's content ({} when there is none); ``checks`` as `Check`s."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return data | {"checks": [Check.from_json(c) for c in data.get("checks", [])]}


def write_record(path: Path, checks: list[Check], overrides: list[dict[str, Any]]) -> None:
    data = {
        "checks": [c.to_json() for c in checks],
        "counts": counts(checks),
        "overrides": overrides,
    }
    with atomic_open(path) as f:
        strict_json.dump(strict_json.nulled(data), f, indent=2)
        f.write("\n")
