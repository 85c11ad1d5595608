"""The judges a pilot panel can share (`rlhfkit annotate pilot --judge`, ``[run] pilot``):

- ``module:function`` or ``FILE.py:function`` (relative to the project folder): the team's
  rubric in code, ``f(prompt, response_a, response_b) -> 'a' | 'b' | 'tie' | 'both_bad'``
  (or that with a rationale), the convention of ``[run] labeler``;
- ``openai``: a chat model behind an OpenAI-compatible endpoint (``RLHFKIT_JUDGE_BASE_URL``,
  ``RLHFKIT_JUDGE_MODEL``, ``RLHFKIT_JUDGE_API_KEY``; the client of `rlhfkit.evaluate.judges`,
  with its retries and disk cache), prompted with the spec's rubric: the task, the criteria,
  the borderline examples with the team's answers, and the tie and both-bad policies;
- ``rule``: a judge any project has, built from its pre-registered success criteria: the
  reply that satisfies more of them, each in its direction, wins.

Every judge here is a stand-in for people; the pilot marks everything it makes as simulated.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhfkit import strict_json
from rlhfkit.callables import load_callable
from rlhfkit.criteria import SuccessCriterion, prompt_columns
from rlhfkit.data import load
from rlhfkit.errors import UserError
from rlhfkit.evaluate.criteria import detect
from rlhfkit.evaluate.judges import (
    EndpointConfig,
    Judgement,
    OpenAIJudge,
    combine_orders,
    parse_preference,
    swapped,
)
from rlhfkit.pipeline.simulated import response_text
from rlhfkit.project import Project

JUDGE_HELP = (
    "rule (the spec's success criteria decide), openai (an LLM over an OpenAI-compatible "
    "API, prompted with the spec's rubric; RLHFKIT_JUDGE_BASE_URL, RLHFKIT_JUDGE_MODEL), or "
    "module:function / FILE.py:function (the rubric in code: (prompt, response_a, "
    "response_b) -> 'a' | 'b' | 'tie' | 'both_bad')"
)


class PilotJudge:
    """A pairwise judge for the panel: called as ``judge(prompt, a, b) -> (preference,
    rationale)``; `name` says which; `counts` what went wrong (unreadable answers)."""

    name: str = "judge"
    kind: str = "callable"

    def __call__(self, prompt: Any, response_a: str, response_b: str) -> Any:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"judge": self.name, "kind": self.kind}

    def counts(self) -> dict[str, int]:
        """Requests, cache hits, retries, unreadable answers (an endpoint's judge)."""
        return {}

    def see_pairs(self, rows: Sequence[dict[str, Any]]) -> None:
        """The pair rows it is about to judge (the pilot's draw and the anchors), before the
        panel starts. The app shows an annotator the prompt and the replies only; a judge
        that reads more of a row (the rule judge: its prompt columns) takes it from here."""

    def left_out(self, prompt: Any, response_a: str, response_b: str) -> list[str]:
        """What of the rubric it could not apply to this pair (the rule judge: criteria
        whose ``applies_to`` columns the pair lacks)."""
        return []


def make_pilot_judge(
    value: str,
    project: Project,
    endpoint: EndpointConfig | None = None,
    setting: str | None = None,
) -> PilotJudge:
    """The judge `value` names (see the module's docstring); `endpoint` replaces the
    environment's for ``openai``; `setting` is how errors name where it came from
    (default ``--judge VALUE``; the run's pilot stage: ``[run] pilot = "VALUE"``)."""
    setting = setting or f"--judge {value}"
    if value == "rule":
        return RuleJudge.from_project(project)
    if value == "openai":
        return RubricLLMJudge(project, endpoint or EndpointConfig.from_env())
    if re.fullmatch(r"[^:]+:\w+", value):
        return CodeJudge(value, project, setting)
    raise UserError(f"{setting}: give {JUDGE_HELP}")


class CodeJudge(PilotJudge):
    """The rubric in code: a pairwise function the team wrote. Its parameters are checked
    when it loads (before any stage of a run), not at its first pair."""

    kind = "callable"

    def __init__(self, target: str, project: Project, setting: str = "the pilot's judge"):
        where, _, name = target.rpartition(":")
        if where.endswith(".py") and not Path(where).is_absolute():
            target = f"{project.root / where}:{name}"  # a file of the project's
        self.fn = load_callable(target, setting)
        self.name = f"{Path(where).name if where.endswith('.py') else where}:{name}"
        try:
            signature = inspect.signature(self.fn)
        except (TypeError, ValueError):  # a builtin without a signature: its first call tells
            return
        try:
            signature.bind("prompt", "response_a", "response_b")
        except TypeError as e:
            raise UserError(
                f"{setting}: {name}{signature} cannot be called with (prompt, response_a, "
                f"response_b): {e}; a pilot judge is f(prompt, response_a, response_b) -> "
                "'a' | 'b' | 'tie' | 'both_bad'"
            ) from None

    def __call__(self, prompt: Any, response_a: str, response_b: str) -> Any:
        return self.fn(prompt, response_a, response_b)


# --- the rule judge ---------------------------------------------------------------------------


class RuleJudge(PilotJudge):
    """The spec's pre-registered success criteria as a rubric: a reply scores one point for
    each criterion that applies to the prompt (``applies_to``, by the prompt columns its pair
    row carries, as `rlhfkit generate` copies them, an anchor's its row in the anchors file;
    a column the row lacks from the prompt's row in the prompts file; a borderline example
    has none, so a criterion with ``applies_to`` does not apply to it) and that it satisfies
    in its direction (shows an 'increase' behavior, avoids a 'decrease' one). The higher
    score wins. The same score from different criteria: the criterion listed first in the
    spec that one reply meets and the other fails decides (an on-topic answer that runs
    long beats a refusal when "refuses on topic" comes before "long reply"). The same
    criteria met: a tie, or 'both bad' when both fail one and the rubric allows 'both bad'.
    Criteria whose detector needs a model (reward_model, judge) are left out and named."""

    kind = "rule"
    name = "rule (success criteria)"

    def __init__(
        self,
        criteria: Sequence[SuccessCriterion],
        columns: dict[str, dict[str, Any]] | None = None,
        allow_both_bad: bool = True,
    ):
        self.criteria = [c for c in criteria if c.text_only]
        self.skipped = [c.name for c in criteria if not c.text_only]
        if not self.criteria:
            raise UserError(
                "the rule judge needs a success criterion with a text detector (regex, "
                "keywords, length, starts_with, ends_with, refusal, callable); this spec's "
                f"need a model ({', '.join(self.skipped)})",
                hint="give --judge openai or a module:function rubric instead",
            )
        self.columns = columns or {}
        """The prompts file's columns, by `_prompt_key`: where a pair row lacks one."""
        self.pair_columns: dict[PairKey, dict[str, Any]] = {}
        """Each pair row's own columns, by its prompt and its two replies (`see_pairs`):
        the drawn pairs' and the anchors'."""
        self.allow_both_bad = allow_both_bad

    @classmethod
    def from_project(cls, project: Project) -> RuleJudge:
        spec = project.spec
        columns = {}
        prompts = project.data_path("prompts")
        if prompts.exists():  # the prompts' columns, for criteria with applies_to
            for row in load(prompts).rows:
                columns[_prompt_key(row.get("prompt"))] = prompt_columns(row)
        return cls(spec.success_criteria, columns, spec.rubric.both_bad_policy == "allow")

    def see_pairs(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            self.pair_columns[row_key(row)] = prompt_columns(row)

    def columns_for(self, prompt: Any, response_a: str, response_b: str) -> dict[str, Any]:
        """The prompt's columns: its pair row's, then the prompts file's where it has none.
        Keyed by the pair, so two prompts with the same text keep their own."""
        own = self.pair_columns.get(pair_key(prompt, response_a, response_b), {})
        return self.columns.get(_prompt_key(prompt), {}) | own

    def left_out(self, prompt: Any, response_a: str, response_b: str) -> list[str]:
        """Criteria with ``applies_to`` on a column this pair lacks: a borderline example of
        the spec has no prompt columns, so such a criterion does not apply to it (as to a
        prompt without the column anywhere); the pilot says so beside its check."""
        columns = self.columns_for(prompt, response_a, response_b)
        return [
            c.name for c in self.criteria if c.applies_to and not set(c.applies_to) <= set(columns)
        ]

    def describe(self) -> dict[str, Any]:
        used = [f"{c.name} ({c.direction})" for c in self.criteria]
        return {"judge": self.name, "kind": self.kind, "criteria": used, "skipped": self.skipped}

    def score(self, prompt: Any, response_a: str, response_b: str) -> tuple[list[int], list]:
        """Each reply's points, and each reply's failed criteria (names)."""
        columns = self.columns_for(prompt, response_a, response_b)
        applying = [c for c in self.criteria if c.applies(columns)]
        shows = detect(applying, [prompt, prompt], [response_a, response_b])
        points, failed = [0, 0], [[], []]
        for c in applying:
            for side in (0, 1):
                if shows[c.name][side] == (c.direction == "increase"):
                    points[side] += 1
                else:
                    failed[side].append(c.name)
        return points, failed

    def __call__(self, prompt: Any, response_a: str, response_b: str) -> tuple[str, str]:
        (pa, pb), (fa, fb) = self.score(prompt, response_a, response_b)
        why = f"criteria met: A {pa}, B {pb}"
        if fa or fb:
            why += f"; A fails {', '.join(fa) or 'none'}, B fails {', '.join(fb) or 'none'}"
        if pa != pb:
            return ("a" if pa > pb else "b"), why
        if fa != fb:  # the same score from other criteria: the one listed first decides
            first = next(c.name for c in self.criteria if (c.name in fa) != (c.name in fb))
            return ("b" if first in fa else "a"), f"{why}; the same score: {first} decides"
        if fa and fb and self.allow_both_bad:
            return "both_bad", why
        return "tie", why


def _prompt_key(prompt: Any) -> str:
    """A prompt (text or chat messages) as a dict key."""
    return strict_json.dumps(prompt, sort_keys=True)


PairKey = tuple[str, frozenset[str]]


def pair_key(prompt: Any, response_a: Any, response_b: Any) -> PairKey:
    """A pair as a judge sees it through the app (the prompt, the two replies as text, in
    either order): how a judge finds the row it came from."""
    return _prompt_key(prompt), frozenset((response_text(response_a), response_text(response_b)))


def row_key(row: dict[str, Any]) -> PairKey:
    return pair_key(row.get("prompt"), row.get("response_a"), row.get("response_b"))


# --- an LLM prompted with the rubric ---------------------------------------------------------

RUBRIC_SYSTEM = """You label pairs of replies for a team that is about to collect human \
preferences. Label as the team's annotators are asked to.

The task: {task}

The rubric (version {version}), most important first:
{criteria}
Hard cases the team has already decided:
{examples}
{policies}
Reply with one JSON object and nothing else:
{{"rationale": "<one or two sentences>", "preference": {answers}}}"""


class RubricLLMJudge(PilotJudge):
    """A chat model behind an OpenAI-compatible endpoint, given the spec's rubric (see
    `rubric_prompt`), asked each pair in both orders: an answer that flips with the order is
    a tie (position bias), and an answer it cannot read counts as a tie, counted in
    `counts()['unreadable']`."""

    kind = "openai"

    def __init__(self, project: Project, endpoint: EndpointConfig):
        self.client = OpenAIJudge(endpoint)
        self.name = f"openai:{endpoint.model}"
        self.system = rubric_prompt(project)

    def describe(self) -> dict[str, Any]:
        return {"judge": self.name, "kind": self.kind, "endpoint": self.client.config.base_url}

    def counts(self) -> dict[str, int]:
        return dict(self.client.stats)

    def __call__(self, prompt: Any, response_a: str, response_b: str) -> Judgement:
        first = self._ask(prompt, response_a, response_b)
        second = swapped(self._ask(prompt, response_b, response_a))
        return combine_orders(first, second)

    def _ask(self, prompt: Any, a: str, b: str) -> Judgement:
        user = pair(prompt, a, b)
        answer = self.client.chat(
            [{"role": "system", "content": self.system}, {"role": "user", "content": user}]
        )
        preference, rationale = parse_rubric_answer(answer)
        if preference is None:
            self.client.stats["unreadable"] += 1
            return Judgement("tie", f"unreadable judge answer, counted as a tie: {answer[:200]!r}")
        return Judgement(preference, rationale)


def pair(prompt: Any, a: str, b: str) -> str:
    """The user message: the prompt and the two replies."""
    if not isinstance(prompt, str):
        prompt = "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
    return f"[Prompt]\n{prompt}\n\n[Response A]\n{a}\n\n[Response B]\n{b}\n\nWhich is better?"


def rubric_prompt(project: Project) -> str:
    """The system prompt the LLM judge gets: what `--show-prompt` prints."""
    rubric = project.spec.rubric
    criteria = "".join(f"- {c.name}: {c.description}\n" for c in rubric.criteria)
    examples = "".join(
        f"Example {i}:\n{pair(ex.prompt, ex.response_a, ex.response_b)}\n"
        f"The team's answer: {_ANSWER[ex.preferred]}, because {ex.why}\n\n"
        for i, ex in enumerate(rubric.borderline_examples, 1)
    )
    answers = ['"A"', '"B"']
    policies = []
    if rubric.tie_policy == "allow":
        answers.append('"tie"')
        policies.append('Answer "tie" only when neither reply is better by the rubric.')
    else:
        policies.append("Always pick A or B: the team does not allow ties.")
    if rubric.both_bad_policy == "allow":
        answers.append('"both_bad"')
        policies.append('Answer "both_bad" when neither reply is acceptable by the rubric.')
    return RUBRIC_SYSTEM.format(
        task=project.spec.task.strip(),
        version=rubric.version,
        criteria=criteria,
        examples=examples,
        policies="\n".join(policies) + "\n",
        answers=" | ".join(answers),
    )


_ANSWER = {"a": "A", "b": "B", "tie": "tie", "both_bad": "both_bad"}
_BOTH_BAD = re.compile(r"preference\W{0,4}both[\s_-]?bad\b", re.IGNORECASE)


def parse_rubric_answer(answer: str) -> tuple[str | None, str]:
    """'a', 'b', 'tie' or 'both_bad' and the rationale (None: unreadable)."""
    if _BOTH_BAD.search(answer):
        obj = re.search(r'"rationale"\s*:\s*"([^"]*)"', answer)
        return "both_bad", obj.group(1) if obj else answer
    return parse_preference(answer)
