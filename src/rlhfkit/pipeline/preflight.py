"""What `rlhfkit run`, `rlhfkit plan` and `rlhfkit project check` check in the spec before the
first stage, so that a mistake there fails in a second, not after SFT and sampling:

- every function the spec names (``module:function`` or ``FILE.py:function``) is imported and
  its signature checked: each `callable` detector, ``[run] labeler``, ``[run] pilot`` and
  ``callable:`` judges in ``[eval] judges``;
- every success criterion's ``applies_to`` selects at least one of the evaluation's prompts
  (the held-out file, cut at ``[eval] limit``), as `eval policy` will require at the end.

Each problem names its line in ``rlhfkit.toml`` where it can (``FILE:LINE: reason``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlhfkit.callables import check_pairwise, load_callable
from rlhfkit.criteria import CallableDetector, prompt_columns
from rlhfkit.data import load
from rlhfkit.errors import Problem, UserError, display_path
from rlhfkit.generate import PROMPT_FORMATS
from rlhfkit.pipeline.annotation import Labeler
from rlhfkit.pipeline.compose import criterion_line, spec_line
from rlhfkit.pipeline.pilot_judges import make_pilot_judge
from rlhfkit.pipeline.plan import Plan
from rlhfkit.project import Project


def spec_labeler(project: Project) -> Labeler:
    """``[run] labeler``, loaded and checked; a bad one fails naming its line."""
    try:
        return Labeler.from_spec(project)
    except UserError as e:
        raise UserError([_at(project, spec_line(project, "run", "labeler"), e)]) from None


def callable_problems(project: Project) -> list[Problem]:
    """Every function the spec names other than the labeler, imported and signature-checked."""
    problems = []
    for i, c in enumerate(project.spec.success_criteria):
        if isinstance(c.detector, CallableDetector):
            line = criterion_line(project, i, "detector")
            problems += _try(project, line, c.detector.load, f"success_criteria[{i}].detector: ")
    pilot = project.spec.run.pilot
    if pilot is not None:
        line = spec_line(project, "run", "pilot")
        setting = f'[run] pilot = "{pilot}"'
        problems += _try(
            project, line, lambda: make_pilot_judge(pilot, project, setting=setting), ""
        )
    judges = project.spec.eval.get("judges", [])
    for value in judges if isinstance(judges, list) else []:
        kind, _, target = str(value).partition(":")
        if kind == "callable" and ":" in target:
            what = f"eval.judges: callable:{target}"
            line = spec_line(project, "eval", "judges")
            problems += _try(project, line, lambda t=target, w=what: _pairwise(t, w), "")
    return problems


def check_callables(project: Project) -> None:
    if problems := callable_problems(project):
        raise UserError(problems)


def _pairwise(target: str, what: str) -> None:
    check_pairwise(load_callable(target, what), what)


def subset_problems(plan: Plan) -> list[Problem]:
    """Each criterion with ``applies_to`` that none of the evaluation's prompts is in."""
    stage = next((s for s in plan.stages if s.name.startswith("eval_")), None)
    project = plan.project
    if stage is None or not any(c.applies_to for c in project.spec.success_criteria):
        return []
    cfg = stage.config
    rows = [prompt_columns(r) for r in load(cfg.prompts, expect=PROMPT_FORMATS).rows[: cfg.limit]]
    where = display_path(cfg.prompts)
    cut = f" (its first {cfg.limit}, [eval] limit)" if cfg.limit is not None else ""
    problems = []
    for i, c in enumerate(project.spec.success_criteria):
        if (reason := c.subset_problem(rows)) is not None:
            reason = reason.replace("no prompt", f"no prompt of {where}{cut}", 1)
            line = criterion_line(project, i, "applies_to")
            problems.append(_at(project, line, f"success_criteria[{i}].applies_to: {reason}"))
    return problems


def check_subsets(plan: Plan) -> None:
    if problems := subset_problems(plan):
        raise UserError(problems)


def _try(project: Project, line: int | None, fn: Callable[[], Any], prefix: str) -> list[Problem]:
    try:
        fn()
    except UserError as e:
        return [_at(project, line, f"{prefix}{e}")]
    return []


def _at(project: Project, line: int | None, reason: Any) -> Problem:
    return Problem(display_path(project.spec_path), line, str(reason))
