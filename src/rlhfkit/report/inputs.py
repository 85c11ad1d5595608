"""What `rlhfkit report` reads: the run folder's layout and a tolerant loader for it.

A run folder (what `rlhfkit demo` writes; any pipeline can write the same)::

    RUN_DIR/
      project/rlhfkit.toml          the spec: task, rubric (with version), success criteria
      annotation/agreement.json     `rlhfkit agreement LABELS --json`
      annotation/status.json        `rlhfkit annotate status --json` (gate, override, progress)
      annotation/panel.json         the demo's simulated panel: who it was, its set noise and biases
      rm/eval_rm.json               `rlhfkit eval rm --json`
      <stage>/metrics.jsonl         one JSON object per step, as every `rlhfkit train` writes
                                    (sft/, rm/, ppo/, dpo/ first, any other folder after)
      <stage>/monitors.jsonl        PPO's live reward-hacking monitors: each step's raised
                                    flags (train/monitoring.py); absent: none ran
      eval/<policy>/eval.json       `rlhfkit eval policy` for one trained policy
      eval/<policy>/samples.jsonl   its before/after samples

Every part is optional: a section whose inputs are missing says "not run". A file that is
there but broken is an error (``FILE:LINE: reason``), because a report that silently drops a
corrupt evaluation would mislead the reader. The one exception is the last line of a
metrics.jsonl or monitors.jsonl, which a killed run may have cut in half (the trainers drop
it on resume).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.errors import Problem, UserError, display_path
from rlhfkit.evaluate.schema import PolicyEvalResult, Result, RMEvalResult, SchemaError
from rlhfkit.project import SPEC_FILE, load_project

STAGE_ORDER = ("sft", "rm", "ppo", "dpo")
LAYOUT_HINT = "the run folder's layout and which command writes each file: `rlhfkit report --help`"


@dataclass
class TrainingRun:
    """One training stage's step log."""

    name: str
    """The folder's name: sft, rm, ppo, dpo or anything else."""
    path: Path
    records: list[dict[str, Any]]
    manifest: dict[str, Any] | None = None
    """``final/rlhfkit-manifest.json`` when the run finished: what it was made from."""
    monitors: list[MonitorStep] | None = None
    """monitors.jsonl's steps; None when the run has none (not PPO, `--no-monitor`, no
    `--project`, or written before live monitors existed)."""
    monitors_path: Path | None = None

    @property
    def kind(self) -> str:
        """sft / rm / ppo / dpo, from the folder name or else from the metrics it logged."""
        if self.name in STAGE_ORDER:
            return self.name
        keys = set().union(*(r.keys() for r in self.records)) if self.records else set()
        if "kl" in keys and "kl_coef" in keys:
            return "ppo"
        if "rewards/margin" in keys:
            return "dpo"
        if "margin" in keys:
            return "rm"
        return "sft"


@dataclass(frozen=True)
class MonitorStep:
    """One line of monitors.jsonl: a PPO step and the flags raised on it (`Flag.to_json`:
    name, value, threshold, flagged, explanation, reference); steps with none are logged too."""

    step: int
    flags: list[dict[str, Any]]


@dataclass
class PolicyEval:
    """One `eval policy` result and its samples."""

    name: str
    path: Path
    data: PolicyEvalResult
    samples: list[dict[str, Any]] = field(default_factory=list)
    """samples.jsonl's rows as they are (see `rlhfkit.evaluate.schema`)."""
    samples_path: Path | None = None


@dataclass
class RunInputs:
    run_dir: Path | None
    project: Any = None
    """The loaded `rlhfkit.project.Project`, or None."""
    agreement: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    panel: dict[str, Any] | None = None
    """The simulated panel's settings when the labels came from `rlhfkit.demo.panel`."""
    rm_eval: RMEvalResult | None = None
    training: list[TrainingRun] = field(default_factory=list)
    evals: list[PolicyEval] = field(default_factory=list)
    sources: dict[str, Path] = field(default_factory=dict)
    """Every file read, by what it was read as: the report lists them."""

    @property
    def empty(self) -> bool:
        return not (
            self.project
            or self.agreement
            or self.status
            or self.rm_eval
            or self.training
            or self.evals
        )


def read_json(path: Path) -> Any:
    """A JSON file, or `UserError` at the line where it breaks."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{display_path(path)}: is not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(
            [Problem(display_path(path), e.lineno, f"not valid JSON: {e.msg}")]
        ) from None


def read_jsonl(path: Path, allow_cut_tail: bool = False) -> list[dict[str, Any]]:
    """JSON objects, one a line; with `allow_cut_tail`, a broken *last* line is dropped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{display_path(path)}: is not UTF-8 text") from None
    rows, problems = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if allow_cut_tail and n == len(lines):
                break
            problems.append(Problem(display_path(path), n, f"not valid JSON: {e.msg}"))
            continue
        if not isinstance(row, dict):
            problems.append(Problem(display_path(path), n, "expected a JSON object"))
            continue
        rows.append(row)
    if problems:
        raise UserError(problems[:20])
    return rows


def _object(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError([Problem(display_path(path), 1, "expected a JSON object")])
    return data


def wrong_shape(paths: list[Path | None], e: Exception) -> UserError:
    """A file of the wrong shape (another command's output, a hand-edited file) is the user's
    to fix: name it instead of showing a stack trace."""
    names = " / ".join(display_path(p) for p in paths if p is not None) or "an input"
    return UserError(
        f"{names}: not what `rlhfkit report` expects here ({type(e).__name__}: {e})",
        hint=LAYOUT_HINT,
    )


def _result(path: Path, cls: type[Result]) -> Any:
    """An `eval policy` / `eval rm` result: its schema version checked, then read as the
    typed record."""
    try:
        return cls.parse(_object(path), path)
    except SchemaError as e:
        raise wrong_shape([path], e) from None


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise UserError(f"{display_path(path)}: no such {what}")
    return path


def read_monitors(path: Path) -> list[MonitorStep]:
    """monitors.jsonl (a killed run's cut last line dropped); a line of another shape is the
    file's problem, named by line."""
    steps, problems = [], []
    for n, row in enumerate(read_jsonl(path, allow_cut_tail=True), 1):
        flags = row.get("flags")
        if not isinstance(row.get("step"), int) or not isinstance(flags, list):
            problems.append(Problem(display_path(path), n, 'expected {"step": N, "flags": [...]}'))
        elif not all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in flags):
            problems.append(Problem(display_path(path), n, "a flag without a name"))
        else:
            steps.append(MonitorStep(row["step"], flags))
    if problems:
        raise UserError(problems[:20])
    return steps


def load_training(folder: Path, name: str | None = None) -> TrainingRun:
    """A training output folder (or its metrics.jsonl), with monitors.jsonl if there."""
    path = folder if folder.suffix == ".jsonl" else folder / "metrics.jsonl"
    _need(path, "metrics file (train writes OUTPUT/metrics.jsonl)")
    root = path.parent
    manifest_path = root / "final" / "rlhfkit-manifest.json"
    manifest = _object(manifest_path) if manifest_path.is_file() else None
    run = TrainingRun(name or root.name, path, read_jsonl(path, allow_cut_tail=True), manifest)
    monitors = root / "monitors.jsonl"
    if monitors.is_file():
        run.monitors, run.monitors_path = read_monitors(monitors), monitors
    return run


def load_eval(folder: Path, name: str | None = None) -> PolicyEval:
    """An `eval policy` output folder (or its eval.json); samples.jsonl beside it if there."""
    path = folder if folder.suffix == ".json" else folder / "eval.json"
    data = _result(_need(path, "evaluation (eval policy writes OUT/eval.json)"), PolicyEvalResult)
    samples_path = path.parent / "samples.jsonl"
    samples = read_jsonl(samples_path) if samples_path.is_file() else []
    return PolicyEval(
        name or path.parent.name,
        path,
        data,
        samples,
        samples_path if samples_path.is_file() else None,
    )


def load_run(
    run_dir: Path | None,
    *,
    project: Path | None = None,
    agreement: Path | None = None,
    status: Path | None = None,
    rm_eval: Path | None = None,
    training: list[Path] = (),
    evals: list[Path] = (),
) -> RunInputs:
    """Everything found under `run_dir` (laid out as this module's docstring says), with the
    explicitly given paths replacing or adding to what was found."""
    if run_dir is not None and not run_dir.is_dir():
        raise UserError(f"{display_path(run_dir)}: no such run folder")
    base = run_dir or Path("/nonexistent-rlhfkit-run")

    def found(explicit: Path | None, *default: str) -> Path | None:
        if explicit is not None:
            return _need(explicit, "file")
        path = base.joinpath(*default)
        return path if path.is_file() else None

    out = RunInputs(run_dir)
    spec = project if project is not None else base / "project"
    if project is not None or (spec / SPEC_FILE).is_file():
        out.project = load_project(spec)
        out.sources["project spec"] = out.project.spec_path
    for key, explicit, default in (
        ("agreement", agreement, ("annotation", "agreement.json")),
        ("status", status, ("annotation", "status.json")),
        ("panel", None, ("annotation", "panel.json")),
        ("rm_eval", rm_eval, ("rm", "eval_rm.json")),
    ):
        path = found(explicit, *default)
        if path is not None:
            setattr(out, key, _result(path, RMEvalResult) if key == "rm_eval" else _object(path))
            out.sources[key.replace("_", " ")] = path

    runs: dict[str, TrainingRun] = {}
    if run_dir is not None:
        for metrics in sorted(run_dir.glob("*/metrics.jsonl")):
            runs[metrics.parent.name] = load_training(metrics.parent)
    for folder in training:
        run = load_training(folder)
        runs[run.name] = run
    order = {name: i for i, name in enumerate(STAGE_ORDER)}
    out.training = sorted(runs.values(), key=lambda r: (order.get(r.name, len(order)), r.name))
    for r in out.training:
        out.sources[f"training: {r.name}"] = r.path
        if r.monitors_path:
            out.sources[f"live monitors: {r.name}"] = r.monitors_path

    found_evals: dict[str, PolicyEval] = {}
    if run_dir is not None:
        for path in sorted(run_dir.glob("eval/*/eval.json")):
            found_evals[path.parent.name] = load_eval(path.parent)
    for folder in evals:
        ev = load_eval(folder)
        found_evals[ev.name] = ev
    out.evals = sorted(found_evals.values(), key=lambda e: (order.get(e.name, len(order)), e.name))
    for ev in out.evals:
        out.sources[f"evaluation: {ev.name}"] = ev.path
        if ev.samples_path:
            out.sources[f"samples: {ev.name}"] = ev.samples_path
    return out
