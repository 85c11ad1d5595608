"""`rlhfkit project check`: the spec and every file it names, checked before a long step.

Everything is checked and every problem reported at once, as ``FILE:LINE: reason``: the spec
(TOML, fields), each stage's settings composed as `rlhfkit run` would ([train.*], [eval]),
the data files (format, every bad row), the anchors (a known answer on each), every function
the spec names (imported, its signature checked), each criterion's applies_to against the
evaluation's prompts, and the base model. Nothing is written and no model is loaded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.annotate import Policy
from rlhfkit.annotate.importing import read_import
from rlhfkit.data import Format, load
from rlhfkit.errors import UserError, display_path
from rlhfkit.evaluate.configs import PolicyEvalConfig
from rlhfkit.generate import PROMPT_FORMATS
from rlhfkit.pipeline.compose import (
    SET_BY_RUN_EVAL,
    SET_BY_RUN_TRAIN,
    TRAIN_TABLES,
    checked_table,
)
from rlhfkit.pipeline.plan import Plan, RunOptions
from rlhfkit.pipeline.preflight import callable_problems, spec_labeler
from rlhfkit.pipeline.run import plan_run
from rlhfkit.project import Project, load_project

DATA_FORMATS: dict[str, tuple[Format, ...] | None] = {
    "prompts": PROMPT_FORMATS,
    "sft": (Format.PROMPT_COMPLETION, Format.LANGUAGE_MODELING),
    "eval_prompts": PROMPT_FORMATS,
    "anchors": None,  # comparison or preference rows with `label`: checked as an import
}


@dataclass
class CheckResult:
    project: Project
    plan: Plan | None = None
    rows: dict[str, int] = field(default_factory=dict)
    """data file (its [data] name) -> rows."""
    problems: list[str] = field(default_factory=list)
    """Each as `FILE:LINE: reason` where there is a file."""


def check_project(
    path: Path | str, overrides: dict[str, Any] | None = None, model: str | None = None
) -> CheckResult:
    """Check a project; the result lists every problem found (none: ready to run)."""
    project = load_project(path, overrides)  # a spec that does not parse stops here
    result = CheckResult(project)
    problems = result.problems
    problems += _tables(project)
    for name, formats in DATA_FORMATS.items():
        problems += _data(project, name, formats, result.rows)
    if project.spec.run.labeler != "people":
        problems += _collect(lambda: spec_labeler(project))
    problems += [str(p) for p in callable_problems(project)]
    if not problems:  # the settings each stage checks itself (batch sizes, ranges)
        options = RunOptions(model=model)
        try:
            result.plan = plan_run(path, options=options, overrides=overrides)
        except UserError as e:
            problems += _problems(e)
    return result


def _tables(project: Project) -> list[str]:
    problems = []
    for table, config_cls in TRAIN_TABLES.values():
        values = getattr(project.spec.train, table)
        problems += _collect(
            functools.partial(
                checked_table, project, f"train.{table}", config_cls, values, SET_BY_RUN_TRAIN
            )
        )
    problems += _collect(
        lambda: checked_table(project, "eval", PolicyEvalConfig, project.spec.eval, SET_BY_RUN_EVAL)
    )
    return problems


def _data(
    project: Project, name: str, formats: tuple[Format, ...] | None, rows: dict[str, int]
) -> list[str]:
    if getattr(project.spec.data, name) is None:
        return []
    path = project.data_path(name)
    if not path.exists():
        spec = display_path(project.spec_path)
        return [f"{spec}: data.{name}: {display_path(path)} does not exist"]
    if formats is None:  # anchors

        def read() -> None:
            rows[name] = len(read_import(Policy.from_project(project), anchors=path).rows)
    else:

        def read() -> None:
            rows[name] = len(load(path, expect=formats).rows)

    return _collect(read)


def _collect(fn) -> list[str]:
    try:
        fn()
    except UserError as e:
        return _problems(e)
    return []


def _problems(e: UserError) -> list[str]:
    return [str(p) for p in e.problems] or [str(e)]
