"""The pilot's simulated panel: K annotators sharing one judge, each with its own slips
(`PanelSettings`, one definition for `rlhfkit annotate pilot` and the run's pilot stage),
and the judge as they call it (`CheckedJudge`: what it raises becomes one clear line)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlhfkit.errors import UserError
from rlhfkit.pipeline.pilot_judges import PairKey, PilotJudge, pair_key, row_key
from rlhfkit.pipeline.simulated import JudgeAnnotator
from rlhfkit.project import Project

FAILINGS = ("noise", "position_bias", "length_bias", "drift_after", "drift_noise")
"""What `--annotator NAME:KEY=VALUE,...` may set (the demo panel's failings)."""


@dataclass(frozen=True)
class PanelSettings:
    """The simulated panel: K annotators sharing the judge, each slipping on its own."""

    annotators: int = 3
    """How many (at least the spec's overlap)."""
    failings: dict[str, float] = field(default_factory=lambda: {"noise": 0.05})
    """Every annotator's: noise (the share of flipped answers), position_bias (of lapses:
    the reply shown first, unread), length_bias (of the longer reply picked over the
    judge's verdict); see `JudgeAnnotator`."""
    overrides: tuple[str, ...] = ()
    """Per-annotator settings, 'sim-3:noise=0.45,position_bias=0.1', each naming one of the
    panel's sim-1 ... sim-K (more annotators: `annotators`): one careless annotator, one
    that drifts after 20 labels, ..."""

    @classmethod
    def for_project(
        cls,
        project: Project,
        annotators: int | None = None,
        failings: dict[str, float] | None = None,
        overrides: tuple[str, ...] = (),
    ) -> PanelSettings:
        """A pilot's panel, one definition for `rlhfkit annotate pilot` and the run's pilot
        stage: `annotators` (default: [run] simulated_annotators, raised to
        annotation.overlap so that every pair gets its labels), each with `failings` (noise
        default: [run] simulated_noise)."""
        run, overlap = project.spec.run, project.spec.annotation.overlap
        if annotators is not None and annotators < 1:
            raise UserError(f"--annotators {annotators}: a panel needs at least 1 annotator")
        k = max(run.simulated_annotators, overlap) if annotators is None else annotators
        return cls(k, {"noise": run.simulated_noise} | (failings or {}), overrides)

    def panel(self, judge: CheckedJudge, seed: int) -> list[JudgeAnnotator]:
        base = dict(self.failings)
        settings = {f"sim-{i + 1}": dict(base) for i in range(self.annotators)}
        for text in self.overrides:
            name, values = parse_override(text)
            if name not in settings:
                raise UserError(
                    f"--annotator {text}: the panel has {self.annotators} annotators "
                    f"({_names(self.annotators)}); give --annotators to have more"
                )
            settings[name].update(values)
        try:
            return [
                JudgeAnnotator(name, judge, seed=seed, judge_name=judge.name, **kw)
                for name, kw in settings.items()
            ]
        except ValueError as e:  # a rate outside [0, 1]
            raise UserError(f"simulated annotator {e}") from None


def _names(k: int) -> str:
    return "sim-1" if k == 1 else f"sim-1 to sim-{k}"


def parse_override(text: str) -> tuple[str, dict[str, Any]]:
    """'sim-3:noise=0.45,drift_after=20' -> ('sim-3', {'noise': 0.45, 'drift_after': 20})."""
    name, _, rest = text.partition(":")
    problem = None
    values: dict[str, Any] = {}
    if not name.startswith("sim-") or not rest:
        problem = "give NAME:KEY=VALUE,... with a name that starts with sim-"
    for part in rest.split(",") if rest else ():
        key, _, raw = part.partition("=")
        key = key.strip().replace("-", "_")
        if key not in FAILINGS:
            problem = f"{key!r} is not one of {', '.join(FAILINGS)}"
            break
        try:
            values[key] = int(raw) if key == "drift_after" else float(raw)
        except ValueError:
            problem = f"{key}={raw!r} is not a number"
            break
    if problem:
        raise UserError(f"--annotator {text}: {problem}")
    return name, values


class CheckedJudge:
    """The judge as the panel and the borderline check call it: whatever it raises becomes
    one line naming the judge and the pair (its id, else its prompt's first words), so a
    team's rubric in code that fails on one pair stops the pilot without a traceback."""

    def __init__(self, judge: PilotJudge):
        self.judge, self.name = judge, judge.name
        self.ids: dict[PairKey, str] = {}

    def see(self, rows: list[dict[str, Any]]) -> None:
        self.ids |= {row_key(r): str(r["id"]) for r in rows if r.get("id") is not None}

    def __call__(self, prompt: Any, a: str, b: str, where: str | None = None) -> Any:
        try:
            return self.judge(prompt, a, b)
        except UserError:
            raise
        except Exception as e:  # the team's code: which judge, on what, and why
            pair = self.ids.get(pair_key(prompt, a, b))
            where = where or (f"pair {pair}" if pair else f"the pair {_opening(prompt)}")
            raise UserError(
                f"the pilot's judge {self.name} raised {type(e).__name__} on {where}: {e}; "
                "the pilot stopped and left nothing behind"
            ) from None


def _opening(prompt: Any) -> str:
    """A prompt's last message, its first words: how an error names a pair without an id."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict):
        prompt = prompt[-1].get("content", "")
    text = " ".join(str(prompt).split())
    return repr(text if len(text) <= 60 else text[:57] + "...")
