"""A stage's typed config, composed from the project spec.

Every stage of `rlhfkit run` runs the same config class its command runs (`SFTConfig` for
`rlhfkit train sft`, `PolicyEvalConfig` for `rlhfkit eval policy`, ...), composed in one order:

    the class's defaults  <  the spec's table ([train.dpo], [eval])  <  explicit values

where the explicit values are the run's own (paths between stages) and the command line's
flags. A table key that is no setting of its class, or that the run sets itself, or a value
of the wrong type, is an error naming the spec's line, found before any stage runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from rlhfkit.errors import Problem, UserError, display_path
from rlhfkit.evaluate.configs import PolicyEvalConfig
from rlhfkit.project import Project
from rlhfkit.train.configs import DPOConfig, LoopConfig, PPOConfig, RewardConfig, SFTConfig

TRAIN_TABLES: dict[str, tuple[str, type[LoopConfig]]] = {
    "sft": ("sft", SFTConfig),
    "rm": ("reward", RewardConfig),
    "dpo": ("dpo", DPOConfig),
    "ppo": ("ppo", PPOConfig),
}
"""Training stage -> (its table under [train], its config class)."""

SET_BY_RUN_TRAIN = frozenset({"model", "data", "output_dir", "project", "resume", "reward"})
SET_BY_RUN_EVAL = frozenset(
    {"project", "before", "after", "out", "prompts", "reward_model", "sample_cache"}
)
RENAMED = {
    "adaptive_kl": "kl_target (nats per response; 0 keeps kl_coef fixed)",
    "target_kl": "kl_target (nats per response; 0 keeps kl_coef fixed)",
}
"""Keys earlier specs had, and what took their place."""


def spec_line(project: Project, table: str, key: str) -> int | None:
    """The line of `key = ...` inside `[table]` of the project's spec (None if not found)."""
    try:
        lines = project.spec_path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    header = re.compile(r"^\s*\[\s*" + re.escape(table).replace(r"\.", r"\s*\.\s*") + r"\s*\]")
    inside = False
    for number, line in enumerate(lines, 1):
        if re.match(r"^\s*\[", line):
            inside = bool(header.match(line))
        elif inside and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            return number
    return None


def criterion_line(project: Project, index: int, key: str) -> int | None:
    """The line of `key = ...` (or of its ``[success_criteria.KEY]`` table) in the spec's
    `index`-th ``[[success_criteria]]``; that header's line when the key is not written
    there (None when the spec has fewer)."""
    try:
        lines = project.spec_path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    seen, start = -1, None
    for number, line in enumerate(lines, 1):
        if re.match(r"^\s*\[\[\s*success_criteria\s*\]\]", line):
            seen += 1
            if seen == index:
                start = number
            elif seen > index:
                break
        elif start is not None and re.match(r"^\s*\[(?!\s*success_criteria\s*\.)", line):
            break  # another table: this criterion's lines are over
        elif start is not None and (
            re.match(rf"^\s*{re.escape(key)}\s*=", line)
            or re.match(rf"^\s*\[\s*success_criteria\s*\.\s*{re.escape(key)}\s*\]", line)
        ):
            return number
    return start


def checked_table(
    project: Project,
    table: str,
    config_cls: type,
    values: dict[str, Any],
    set_by_run: Iterable[str],
) -> dict[str, Any]:
    """`values` (a spec table) checked against `config_cls`'s fields and types, coerced
    (lists to tuples where the field is a tuple); every problem at once, as FILE:LINE."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    hints = typing.get_type_hints(config_cls)
    source = display_path(project.spec_path)
    problems, out = [], {}
    for key, value in values.items():
        line = spec_line(project, table, key)
        reason = _key_problem(key, fields, set_by_run)
        if reason is None:
            try:
                out[key] = _coerce(hints[key], value)
            except ValidationError as e:
                reason = f"{e.errors()[0]['msg']} (got {value!r})"
        if reason is not None:
            problems.append(Problem(source, line, f"{table}.{key}: {reason}"))
    if problems:
        raise UserError(problems)
    return out


def _key_problem(key: str, fields: set[str], set_by_run: Iterable[str]) -> str | None:
    if key in set_by_run:
        return "set by `rlhfkit run` itself (each stage's paths come from the run)"
    if key in RENAMED:
        return f"no longer a setting: use {RENAMED[key]}"
    if key not in fields:
        close = difflib.get_close_matches(key, sorted(fields - set(set_by_run)), n=1)
        return "unknown setting" + (f"; did you mean {close[0]}?" if close else "")
    return None


def _coerce(hint: Any, value: Any) -> Any:
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        value = tuple(value)
    return TypeAdapter(hint).validate_python(value, strict=True)


def train_config(stage: str, project: Project, /, **explicit: Any) -> LoopConfig:
    """The config `rlhfkit train STAGE` would run: class defaults < [train.<table>] <
    `explicit` (the run's paths, CLI flags; None means 'not given')."""
    table, config_cls = TRAIN_TABLES[stage]
    values = checked_table(
        project, f"train.{table}", config_cls, getattr(project.spec.train, table), SET_BY_RUN_TRAIN
    )
    given = {k: v for k, v in explicit.items() if v is not None}
    cfg = config_cls(**{**values, **given})
    _checked(cfg, project, f"train.{table}")
    return cfg


def eval_config(project: Project, /, **explicit: Any) -> PolicyEvalConfig:
    """The config `rlhfkit eval policy` would run: class defaults < [eval] < `explicit`."""
    values = checked_table(project, "eval", PolicyEvalConfig, project.spec.eval, SET_BY_RUN_EVAL)
    given = {k: v for k, v in explicit.items() if v is not None}
    return PolicyEvalConfig(**{**values, **given})


def _checked(cfg: Any, project: Project, table: str) -> None:
    try:
        cfg.check()
    except UserError as e:
        raise UserError(
            f"{display_path(project.spec_path)}: [{table}] (or its flags): {e}"
        ) from None


def effective(cfg: Any, relative_to: Path | None = None) -> dict[str, Any]:
    """A config as plain JSON-able data, for fingerprints and manifests; with `relative_to`,
    paths are written relative to it (a fingerprint must not change with the folder a run
    was started from, or the name the project was given on the command line)."""
    return {f.name: _plain(getattr(cfg, f.name), relative_to) for f in dataclasses.fields(cfg)}


def _plain(value: Any, base: Path | None) -> Any:
    if isinstance(value, Path) or (isinstance(value, str) and os.path.isabs(value)):
        return os.path.relpath(Path(value).resolve(), base.resolve()) if base else str(value)
    if isinstance(value, tuple | list):
        return [_plain(v, base) for v in value]
    return value
