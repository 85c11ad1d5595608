"""Success criteria before and after, for `eval policy`: each criterion's pass rate over the
prompts it applies to (``applies_to``), and per slice of a prompt column (``--slice``).

A criterion is measured on its subset only: its rates, interval, paired test and verdict
come from the prompts whose columns it applies to, every sample of each. Which prompts those
are is known before a model loads (`check_subsets`): a pre-registered criterion that no
evaluation prompt falls under is an error then, not a result, since the evaluation could not
test what was written down.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlhfkit import stats
from rlhfkit.criteria import SuccessCriterion, column_value
from rlhfkit.errors import UserError, display_path
from rlhfkit.evaluate import schema

MISSING = "(missing)"
"""The slice of prompts whose row has no such column."""

Columns = Sequence[Mapping[str, Any]]
"""Each prompt's row in the prompts file, less "prompt"."""


@dataclass(frozen=True)
class RateSettings:
    """How a before/after difference is tested and judged (`eval policy`'s settings)."""

    samples: int
    test: str
    confidence: float
    alpha: float
    seed: int

    @classmethod
    def of(cls, s: schema.Settings) -> RateSettings:
        """The settings an eval.json records (its test named as `stats.TEST_NAMES` says)."""
        tests = {name: key for key, name in stats.TEST_NAMES.items()}
        if s.test not in tests:
            raise UserError(f"eval.json names an unknown test: {s.test!r}")
        return cls(s.samples_per_prompt, tests[s.test], s.confidence, s.alpha, s.seed)


@dataclass(frozen=True)
class Hits:
    """Both models' samples as the criteria saw them: ``before[name]`` and ``after[name]``
    run over prompts x samples in order (None where the criterion does not apply)."""

    criteria: Sequence[SuccessCriterion]
    before: Mapping[str, list]
    after: Mapping[str, list]
    columns: Columns
    how: RateSettings


def check_subsets(criteria: Sequence[SuccessCriterion], columns: Columns, source: Path) -> None:
    """Every criterion applies to at least one evaluation prompt: said before sampling."""
    for c in criteria:
        problem = c.subset_problem(columns)  # the one rule, as `project check` applies it
        if problem is not None:
            raise UserError(
                f"success criterion '{c.name}' applies to prompts with {c.subset()}, and of "
                f"the {len(columns)} evaluation prompts of {display_path(source)}, {problem}",
                hint="give the prompts that column (or evaluate with --prompts FILE that has "
                "such prompts; a --limit may have cut them off)",
            )


def check_slices(slice_by: Sequence[str], columns: Columns, source: Path) -> None:
    """Each --slice column is in at least one prompt's row."""
    for col in slice_by:
        if not any(col in row for row in columns):
            found = sorted({k for row in columns for k in row})
            raise UserError(
                f"--slice {col}: no prompt of {display_path(source)} has a '{col}' column",
                hint=f"its columns: {', '.join(found)}" if found else "its rows have no columns",
            )


def measure(hits: Hits, within: Sequence[int] | None = None) -> list[schema.CriterionResult]:
    """Each criterion before and after, over the prompts it applies to (and, with `within`,
    among those prompts only). A criterion with no prompt there is left out."""
    out, how = [], hits.how
    among = range(len(hits.columns)) if within is None else within
    for i, c in enumerate(hits.criteria):
        rows = [k for k in among if c.applies(hits.columns[k])]
        if not rows:
            continue
        comp = compare(hits.before[c.name], hits.after[c.name], rows, how, how.seed + i)
        out.append(
            schema.CriterionResult(
                name=c.name,
                description=c.description,
                direction=c.direction,
                detector=c.detector.kind,
                **comparison(comp, schema.Rate),
                verdict=stats.verdict(comp.diff, comp.p_value, c.direction, how.alpha),
                applies_to=None if c.applies_to is None else dict(c.applies_to),
                n_prompts=len(rows),
                n_samples=len(rows) * how.samples,
            )
        )
    return out


def compare(
    before: Sequence, after: Sequence, rows: Sequence[int], how: RateSettings, seed: int
) -> stats.Comparison:
    """A rate before and after, tested as `eval policy` tests a criterion's: ``before[k *
    samples + j]`` is prompt k's sample j (prompts x samples, flat), compared over the
    prompts `rows`, every sample of each, by `how.test`."""
    return stats.compare_rates(
        _grid(before, rows, how.samples),
        _grid(after, rows, how.samples),
        how.test,  # type: ignore[arg-type]
        how.confidence,
        seed=seed,
    )


def slices(
    hits: Hits, slice_by: Sequence[str]
) -> dict[str, dict[str, list[schema.CriterionResult]]]:
    """``{column: {value: [criterion results]}}``: every criterion on each value's prompts
    (those it applies to among them), values in the order they first appear."""
    out: dict[str, dict[str, list[schema.CriterionResult]]] = {}
    for col in slice_by:
        groups: dict[str, list[int]] = {}
        for k, row in enumerate(hits.columns):
            groups.setdefault(column_value(row[col]) if col in row else MISSING, []).append(k)
        out[col] = {value: measure(hits, within=rows) for value, rows in groups.items()}
    return out


def comparison(c: stats.Comparison, side: type[schema.Rate] | type[schema.Mean]) -> dict:
    """The fields every before/after comparison shares (criteria, length, reward)."""
    return {
        "before": side(c.before, list(c.before_ci)),
        "after": side(c.after, list(c.after_ci)),
        "diff": c.diff,
        "diff_ci": list(c.diff_ci),
        "p_value": c.p_value,
        "test": c.test,
    }


def _grid(flat: list, rows: Sequence[int], s: int) -> np.ndarray:
    """The [len(rows), s] hits of those prompts, from a flat prompts x samples list."""
    return np.array([[flat[k * s + j] for j in range(s)] for k in rows], dtype=float)
