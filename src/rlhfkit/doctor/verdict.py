"""A doctor check's outcome: a verdict, the numbers behind it, and what to do next."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Verdict = Literal["ok", "warn", "fail", "not yet measurable"]
VERDICTS: tuple[Verdict, ...] = ("fail", "warn", "ok", "not yet measurable")
"""Worst first: the order a diagnosis lists its checks in."""

STAGES = ("candidates", "annotate", "rm", "eval")
"""The run's stages after which checks become measurable (eval: each `eval policy`)."""


@dataclass(frozen=True)
class Check:
    """One failure mode, checked: ``verdict`` on ``evidence``, and ``action`` to take."""

    name: str
    """A stable id (``sft_never_shows``, ``kl``, ...), with ``:criterion`` or ``:policy``
    where one check runs per criterion or per trained policy."""
    stage: str
    """After which stage (`STAGES`) its inputs exist."""
    title: str
    """What it asks, in a few words."""
    verdict: Verdict
    evidence: str
    """The numbers it decided on, in words; for 'not yet measurable', which input is missing."""
    action: str = ""
    """A concrete next step (a command, a spec setting); empty when all is well."""
    numbers: dict[str, Any] = field(default_factory=dict)
    """The same numbers, for machines (summary.json, --json)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Check:
        """As `to_json` wrote it (keys it does not know are read past)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def missing(name: str, stage: str, title: str, what: str, action: str = "") -> Check:
    """A check whose inputs are not there (yet): never a silent OK."""
    return Check(name, stage, title, "not yet measurable", what, action)


def worst_first(checks: list[Check]) -> list[Check]:
    return sorted(checks, key=lambda c: VERDICTS.index(c.verdict))


def counts(checks: list[Check]) -> dict[str, int]:
    """How many checks got each verdict."""
    return {v: sum(c.verdict == v for c in checks) for v in VERDICTS}


def pct(x: float) -> str:
    """A share as a percentage: one decimal under 10% unless it is whole (1.6%, 5%, 42%)."""
    whole = abs(100 * x - round(100 * x)) < 1e-9
    return f"{100 * x:.0f}%" if x >= 0.1 or whole else f"{100 * x:.1f}%"


def share(k: int, n: int) -> str:
    """'3 of 182 (1.6%)'."""
    return f"{k} of {n} ({pct(k / n)})" if n else f"{k} of 0"


MARK = {"fail": "FAIL", "warn": "WARN", "ok": "ok", "not yet measurable": "n/a"}


def as_text(check: Check) -> str:
    """Two lines at most: the verdict and evidence, then what to do."""
    text = f"{MARK[check.verdict]:>4}  {check.title}: {check.evidence}"
    return text + (f"\n      -> {check.action}" if check.action else "")
