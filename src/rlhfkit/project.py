"""The project spec: one ``rlhfkit.toml`` per project, validated with pydantic.

A project folder holds the spec and everything made from it. The spec names the task, the
base model, the annotation rubric, the success criteria written down *before* training, the
annotation settings and each stage's settings. A bad spec fails with the field's path and the
reason (``rlhfkit.toml: rubric.criteria: at least 2 items``), never a stack trace.
"""

from __future__ import annotations

import re
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from rlhfkit.choices import Precision
from rlhfkit.criteria import DETECTOR_KINDS, SuccessCriterion, hash_criteria
from rlhfkit.errors import Problem, UserError, display_path
from rlhfkit.spec_base import NAME, Strict

SPEC_FILE = "rlhfkit.toml"


# --- rubric -------------------------------------------------------------------------------


class Criterion(Strict):
    name: Annotated[str, Field(pattern=NAME)]
    description: Annotated[str, Field(min_length=1)]


class BorderlineExample(Strict):
    """A hard case with the answer the team agreed on, shown to annotators beside the rubric."""

    prompt: Annotated[str, Field(min_length=1)]
    response_a: Annotated[str, Field(min_length=1)]
    response_b: Annotated[str, Field(min_length=1)]
    preferred: Literal["a", "b", "tie", "both_bad"]
    why: Annotated[str, Field(min_length=1)]


class Rubric(Strict):
    version: Annotated[str, Field(min_length=1)]
    criteria: Annotated[list[Criterion], Field(min_length=2, max_length=3)]
    """Two or three criteria, not ten: more and annotators stop agreeing."""
    borderline_examples: Annotated[list[BorderlineExample], Field(min_length=1)]
    tie_policy: Literal["allow", "force_choice"] = "force_choice"
    """allow: annotators may answer 'tie'; force_choice: they must pick one."""
    both_bad_policy: Literal["allow", "force_choice"] = "allow"
    """allow: annotators may answer 'both bad' (the pair is left out of training)."""

    @model_validator(mode="after")
    def _policies_and_names(self) -> Rubric:
        _unique([c.name for c in self.criteria], "rubric criterion")
        for ex in self.borderline_examples:
            if ex.preferred == "tie" and self.tie_policy == "force_choice":
                raise ValueError("a borderline example answers 'tie' but tie_policy forbids ties")
            if ex.preferred == "both_bad" and self.both_bad_policy == "force_choice":
                raise ValueError(
                    "a borderline example answers 'both_bad' but both_bad_policy forbids it"
                )
        return self


# --- settings -----------------------------------------------------------------------------


class DataFiles(Strict):
    """Paths relative to the project folder."""

    prompts: str = "data/prompts.jsonl"
    """Prompts the model answers: candidates for annotation, and PPO's prompts."""
    sft: str | None = "data/sft.jsonl"
    """(prompt, ideal reply) rows for stage 1; unset: `rlhfkit run` skips SFT."""
    eval_prompts: str = "data/eval_prompts.jsonl"
    """Held-out prompts, used only to prove what changed."""
    anchors: str | None = None
    """Anchor pairs with the team's answers (comparison rows with `label` A or B): mixed into
    annotation to catch drift and, with [run] anchors_as_training, training pairs too."""


class AnnotationSettings(Strict):
    overlap: Annotated[int, Field(ge=1, le=20)] = 3
    """How many annotators label each main item."""
    calibration_size: Annotated[int, Field(ge=0)] = 50
    """Items every annotator labels first; the calibration gate is computed on them."""
    agreement_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.65
    """Percent agreement the calibration round must reach before the main queue opens."""
    anchor_rate: Annotated[float, Field(ge=0.0, le=0.5)] = 0.1
    """Share of each annotator's queue that is anchor items with known answers."""
    anchor_accuracy_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.7
    """Annotators below this anchor accuracy are flagged, and left out of the export once
    they have `min_anchor_labels` anchor answers."""
    min_anchor_labels: Annotated[int, Field(ge=1)] = 5
    """Anchor answers an annotator needs before their anchor accuracy can leave them out of
    the export: with fewer (two slips in four anchors), it is shown but not acted on."""
    recalibrate_every: Annotated[int, Field(ge=0)] = 500
    """Labels per annotator after which a recalibration round is due (0: never)."""


class GenerateSettings(Strict):
    """[generate]: sampling candidate replies for annotation (`rlhfkit generate`, the
    candidates stage of `rlhfkit run`)."""

    n: Annotated[int, Field(ge=1)] = 2
    """Replies per prompt from the model being trained (the SFT model, in `run`)."""
    temperature: Annotated[float, Field(gt=0.0)] = 0.9
    """Sampling temperature; above 0, since candidate pairs need different replies."""
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    max_new_tokens: Annotated[int, Field(ge=1)] = 128
    seed: int = 0
    batch_size: Annotated[int, Field(ge=1)] = 16
    """Prompts per sampling batch (each expands to n sequences); the seeds go by batch."""
    precision: Precision = "auto"
    limit: Annotated[int, Field(ge=1)] | None = None
    """Sample for only the first N prompts (unset: all of them)."""
    all_pairs: bool = True
    """Every pair of a prompt's replies is a comparison (InstructGPT's K-way comparisons,
    asked pairwise: 6 pairs from 4 replies); false: only 1-2, 3-4, ..."""
    start_samples: Annotated[int, Field(ge=0)] = 1
    """`rlhfkit run`: replies per prompt also sampled from the starting model (before SFT),
    so annotators compare the two models too (0: none)."""


RUN_STAGES = ("sft", "candidates", "pilot", "annotate", "rm", "ppo", "dpo", "eval", "report")


class RunSettings(Strict):
    """[run]: how `rlhfkit run` joins the stages (each stage's own settings are in its
    table: [generate], [annotation], [train.*], [eval])."""

    policies: Annotated[list[Literal["ppo", "dpo"]], Field(min_length=1)] = Field(
        default_factory=lambda: ["ppo", "dpo"]
    )
    """Which optimisers train a policy after the reward model: ppo, dpo or both."""
    labeler: Annotated[str, Field(min_length=1)] = "people"
    """people: `run` stops at annotation and says how to serve the app; the next `run` goes
    on once the calibration gate passed and the queue is done. Or module:function /
    FILE.py:function (relative to the project folder), a judge (prompt, response_a,
    response_b) -> 'a' | 'b' | 'tie' | 'both_bad' standing in for people: a SIMULATED
    panel labels through the real app."""
    pilot: Annotated[str, Field(min_length=1)] | None = None
    """A SIMULATED pilot of the rubric after candidates, before annotate (`rlhfkit annotate
    pilot`): "rule" (the success criteria decide), "openai" (an LLM prompted with the
    rubric, RLHFKIT_JUDGE_* from the environment) or module:function / FILE.py:function.
    A panel labels a pilot round through the real app in a store of its own; the run shows
    the gate, agreement and a tiny reward model's held-out accuracy. Unset: no pilot."""
    simulated_annotators: Annotated[int, Field(ge=1, le=20)] = 3
    """How many simulated annotators share the judge (each with its own slips)."""
    simulated_noise: Annotated[float, Field(ge=0.0, le=0.5)] = 0.05
    """The share of labels each simulated annotator gets wrong."""
    heldout_share: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    """Share of the prompts whose preference pairs are kept out of RM and DPO training to
    check the reward model on (`eval rm`); split by prompt, so no held-out pair shares a
    prompt with a training pair."""
    anchors_as_training: bool = True
    """The anchors' known answers join the reward model's and DPO's training pairs."""
    dpo_pairs: Literal["all", "same model", "across models"] = "same model"
    """Which exported pairs DPO trains on, by their `pairing`: 'same model' keeps pairs of
    two replies of the model being trained (DPO learns from the policy's own replies);
    'all' keeps every pair."""


class TrainSettings(Strict):
    """[train.sft|reward|dpo|ppo]: any setting of `rlhfkit train sft|rm|dpo|ppo` (its
    `--help`), by the option's name with underscores: learning_rate = 1e-3. Paths (model,
    data, output_dir, project) come from the run. Checked when a stage is composed."""

    sft: dict[str, Any] = Field(default_factory=dict)
    reward: dict[str, Any] = Field(default_factory=dict)
    dpo: dict[str, Any] = Field(default_factory=dict)
    ppo: dict[str, Any] = Field(default_factory=dict)


class MonitorSettings(Strict):
    """Thresholds of the reward-hacking monitors (train/monitors.py), live in PPO and in
    `eval policy`. Rates are shares of responses; 'reference' is the starting policy's
    responses (eval policy: the --before model's; PPO: its first steps')."""

    length_inflation: Annotated[float, Field(gt=1.0)] = 1.5
    """Flag when mean length (words) exceeds this multiple of the reference's."""
    length_collapse: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    """Flag when mean length falls below this fraction of the reference's."""
    prompt_echo: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    """Flag when more than this share of responses mostly copy the prompt."""
    echo_overlap: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    """A response 'copies' the prompt when this share of its word 4-grams occur in it."""
    hedging: Annotated[float, Field(ge=0.0, le=1.0)] = 0.25
    """Flag when more than this share of responses hedge ('I think', 'maybe', ...) and the
    share rose above the reference's."""
    sycophancy: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    """Same, for flattery ('great question', 'you're absolutely right', ...)."""
    refusal: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    """Same, for refusing or declining."""
    repetition: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    """Same, for repetitive responses (see repetition_share)."""
    repetition_share: Annotated[float, Field(gt=0.0, le=1.0)] = 0.3
    """A response is repetitive when this share of its word 3-grams are repeats."""
    reward_rise: Annotated[float, Field(gt=0.0)] = 0.5
    """'Reward up, no criterion moved (or one moved the wrong way)': a rise of this many
    reference standard deviations of the reward counts as 'up'."""
    criteria_min_change: Annotated[float, Field(gt=0.0, le=1.0)] = 0.05
    """... and a criterion 'moved' when its rate changed this much in its direction, or the
    wrong way when this much against it (in `eval policy` also significant at its --alpha)."""
    kl_max: Annotated[float, Field(gt=0.0)] = 20.0
    """Flag when KL(policy || reference) exceeds this many nats per response."""
    entropy_collapse: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.3
    """Flag when the policy's mean token entropy falls below this fraction of its start."""
    entropy_blowup: Annotated[float, Field(gt=1.0)] = 2.0
    """Flag when it rises above this multiple of its start (degenerating into noise)."""
    reward_length_correlation: Annotated[float, Field(gt=0.0, le=1.0)] = 0.8
    """Flag when reward and length correlate above this within a step (reward buys length)."""
    window: Annotated[int, Field(ge=1)] = 5
    """Live monitors compare the mean of the first and of the last `window` steps."""


class ProjectSpec(Strict):
    name: Annotated[str, Field(min_length=1)]
    task: Annotated[str, Field(min_length=1)]
    """What the model should learn to do, in a sentence or two."""
    base_model: Annotated[str, Field(min_length=1)] = "smollm2-135m-instruct"
    data: DataFiles = DataFiles()
    rubric: Rubric
    success_criteria: Annotated[list[SuccessCriterion], Field(min_length=1)]
    annotation: AnnotationSettings = AnnotationSettings()
    generate: GenerateSettings = GenerateSettings()
    train: TrainSettings = TrainSettings()
    eval: dict[str, Any] = Field(default_factory=dict)
    """[eval]: any setting of `rlhfkit eval policy` (limit, samples, batch_size, judges,
    ...), by the option's name; checked when the stage is composed."""
    run: RunSettings = RunSettings()
    monitors: MonitorSettings = MonitorSettings()

    @model_validator(mode="after")
    def _criteria(self) -> ProjectSpec:
        _unique([c.name for c in self.success_criteria], "success criterion")
        directions = {c.direction for c in self.success_criteria}
        if directions != {"increase", "decrease"}:
            raise ValueError(
                "success_criteria need a behavior that should increase and one that should "
                "decrease, both written down before training"
            )
        return self

    def criteria_hash(self) -> str:
        """Hash of the success criteria; frozen when the first training stage starts."""
        return hash_criteria([c.dump() for c in self.success_criteria])


def _unique(names: list[str], what: str) -> None:
    seen = set()
    for n in names:
        if n in seen:
            raise ValueError(f"{what} name '{n}' is used twice")
        seen.add(n)


# --- loading ------------------------------------------------------------------------------


class Project:
    """A project folder: its spec and where its artifacts live."""

    def __init__(self, root: Path, spec: ProjectSpec):
        self.root = root
        self.spec = spec

    @cached_property
    def spec_path(self) -> Path:
        return self.root / SPEC_FILE

    def data_path(self, name: str) -> Path:
        value = getattr(self.spec.data, name)
        if value is None:
            raise UserError(f"{display_path(self.spec_path)}: data.{name} is not set")
        return self.root / value

    def artifacts(self, *parts: str) -> Path:
        return self.root.joinpath("artifacts", *parts)


def load_project(path: Path | str, overrides: dict[str, Any] | None = None) -> Project:
    """Load and validate a project from its folder or its spec file; `overrides` ({"train.dpo.
    beta": 0.2}) replace the file's values before validation (`rlhfkit run --set`)."""
    path = Path(path)
    spec_path = path / SPEC_FILE if path.is_dir() else path
    if not spec_path.exists():
        raise UserError(
            f"{display_path(spec_path)}: no project spec here",
            hint="create one with `rlhfkit init DIR`",
        )
    try:
        text = spec_path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, IsADirectoryError) as e:
        reason = "is a folder" if isinstance(e, IsADirectoryError) else "is not UTF-8 text"
        raise UserError(f"{display_path(spec_path)}: {reason}") from None
    return Project(spec_path.parent, parse_spec(text, display_path(spec_path), overrides))


def parse_spec(
    text: str, source: str = SPEC_FILE, overrides: dict[str, Any] | None = None
) -> ProjectSpec:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        match = re.search(r"\(at line (\d+), column \d+\)", str(e))
        line = int(match.group(1)) if match else None
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        raise UserError([Problem(source, line, f"not valid TOML: {reason}")]) from None
    for dotted, value in (overrides or {}).items():
        *tables, key = dotted.split(".")
        table = raw
        for name in tables:
            table = table.setdefault(name, {})
            if not isinstance(table, dict):
                raise UserError(f"--set {dotted}: {name} is not a table")
        table[key] = value
    try:
        return ProjectSpec.model_validate(raw)
    except ValidationError as e:
        raise UserError([Problem(source, None, _describe(err)) for err in e.errors()]) from None


def _describe(err: Any) -> str:
    loc = []
    for part in err["loc"]:
        if isinstance(part, int):
            loc.append(f"[{part}]")
        elif part in DETECTOR_KINDS:
            continue  # the discriminator's branch name only repeats `kind`
        else:
            loc.append(("." if loc else "") + str(part))
    where = "".join(loc) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "too_short" and "min_length" in err.get("ctx", {}):
        msg = f"needs at least {err['ctx']['min_length']} items"
    elif err["type"] == "too_long" and "max_length" in err.get("ctx", {}):
        msg = f"allows at most {err['ctx']['max_length']} items"
    return f"{where}: {msg}"
