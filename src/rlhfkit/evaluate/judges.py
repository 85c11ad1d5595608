"""Pairwise judges behind one small interface: ``judge(prompt, response_a, response_b) ->
Judgement(preference, rationale)``, preference one of 'a', 'b', 'tie', 'both_bad'.

- `RewardModelJudge`: a reward model from `rlhfkit train rm`; the higher reward wins.
- `CallableJudge`: any pairwise function ``fn(prompt, a, b) -> (preference, rationale)`` (or a
  `Judgement`), e.g. the demo's simulated panel, ``rlhfkit.demo.panel:rubric_judge`` (named by
  that string, `PANEL_JUDGE`, and loaded like any other: the library imports nothing from
  the demo).
- `RubricJudge`: a per-response rubric scorer ``fn(prompt, response) -> float | {criterion:
  score}``; the higher total wins.
- `OpenAIJudge`: any OpenAI-compatible ``/v1/chat/completions`` endpoint (OpenAI, a local vLLM
  or llama.cpp server), configured from the environment: ``RLHFKIT_JUDGE_BASE_URL`` (e.g.
  ``http://localhost:8000/v1``; else ``OPENAI_BASE_URL``, else OpenAI's),
  ``RLHFKIT_JUDGE_MODEL``, ``RLHFKIT_JUDGE_API_KEY`` (else ``OPENAI_API_KEY``; a local server
  may need none). Requests time out, are retried with exponential backoff on connection
  errors, 429 and 5xx, and are cached on disk by their exact content, so a rerun costs
  nothing. Every pair is asked in both orders: LLM judges favour a position (Zheng et al.
  2023, "Judging LLM-as-a-judge"), so a verdict that flips with the order counts as a tie.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rlhfkit import strict_json
from rlhfkit.callables import load_callable
from rlhfkit.data.io import atomic_open
from rlhfkit.errors import UserError
from rlhfkit.models import cache_dir
from rlhfkit.train.reward_model import RewardFn, RewardModelFn

Preference = Literal["a", "b", "tie", "both_bad"]
PREFERENCES = ("a", "b", "tie", "both_bad")


@dataclass(frozen=True)
class Judgement:
    preference: Preference
    rationale: str


Pair = tuple[Any, str, str]
"""(prompt, response_a, response_b)."""


class PairwiseJudge:
    """The interface: `judge` one pair; `judge_many` a list of pairs (batched where a judge
    can do better than one at a time). `name` labels its results in eval.json."""

    name = "judge"

    def judge(self, prompt: Any, response_a: str, response_b: str) -> Judgement:
        return self.judge_many([(prompt, response_a, response_b)])[0]

    def judge_many(self, pairs: Sequence[Pair]) -> list[Judgement]:
        return [self.judge(*pair) for pair in pairs]


def swapped(j: Judgement) -> Judgement:
    """The judgement with a and b exchanged."""
    flip = {"a": "b", "b": "a"}
    return Judgement(flip.get(j.preference, j.preference), j.rationale)  # type: ignore[arg-type]


def combine_orders(first: Judgement, second_swapped_back: Judgement) -> Judgement:
    """Both orders agree: that verdict; they disagree: a tie, said to be position bias."""
    if first.preference == second_swapped_back.preference:
        return Judgement(first.preference, first.rationale)
    return Judgement(
        "tie",
        f"position bias: {first.preference} when shown as (a, b), "
        f"{second_swapped_back.preference} when shown as (b, a); counted as a tie. "
        f"First: {first.rationale}",
    )


def prefer(score_a: float, score_b: float, tie_margin: float = 0.0) -> Preference:
    if abs(score_a - score_b) <= tie_margin:
        return "tie"
    return "a" if score_a > score_b else "b"


# --- reward model -----------------------------------------------------------------------------


class RewardModelJudge(PairwiseJudge):
    """The higher reward wins. `reward` is a reward model folder or any batch reward
    function ``(prompts, responses) -> [float]``."""

    def __init__(
        self,
        reward: str | RewardFn,
        name: str = "reward_model",
        tie_margin: float = 0.0,
    ):
        if isinstance(reward, str):
            reward = RewardModelFn(reward)
        self.reward = reward
        self.name = name
        self.tie_margin = tie_margin

    def scores(self, prompts: list[Any], responses: list[str]) -> list[float]:
        return [float(r) for r in self.reward(prompts, responses)]

    def judge_many(self, pairs: Sequence[Pair]) -> list[Judgement]:
        prompts = [p for p, _, _ in pairs]
        ra = self.scores(prompts, [a for _, a, _ in pairs])
        rb = self.scores(prompts, [b for _, _, b in pairs])
        return self.from_scores(ra, rb)

    def from_scores(self, ra: Sequence[float], rb: Sequence[float]) -> list[Judgement]:
        """Judgements from rewards already computed (eval policy scores each side once)."""
        return [
            Judgement(prefer(a, b, self.tie_margin), f"reward {a:.3f} vs {b:.3f}")
            for a, b in zip(ra, rb, strict=True)
        ]


# --- code: a pairwise callable or a rubric scorer -----------------------------------------------


class CallableJudge(PairwiseJudge):
    """A pairwise function ``fn(prompt, a, b) -> (preference, rationale) | Judgement``.
    `both_orders`: also ask (b, a) and call disagreement a tie (for judges with position
    bias; the demo's panel verdict has none)."""

    def __init__(self, fn: Callable[..., Any], name: str, both_orders: bool = False):
        self.fn = fn
        self.name = name
        self.both_orders = both_orders

    def _ask(self, prompt: Any, a: str, b: str) -> Judgement:
        out = self.fn(prompt, a, b)
        j = out if isinstance(out, Judgement) else Judgement(out[0], str(out[1]))
        if j.preference not in PREFERENCES:
            raise UserError(
                f"judge {self.name}: answered {j.preference!r}; a judge answers one of "
                f"{', '.join(PREFERENCES)}"
            )
        return j

    def judge(self, prompt: Any, response_a: str, response_b: str) -> Judgement:
        first = self._ask(prompt, response_a, response_b)
        if not self.both_orders:
            return first
        return combine_orders(first, swapped(self._ask(prompt, response_b, response_a)))


class RubricJudge(PairwiseJudge):
    """A per-response rubric scorer ``fn(prompt, response) -> float | {criterion: score}``;
    the higher total wins (a mapping with an ``overall`` key is judged by it alone)."""

    def __init__(
        self,
        score: Callable[[Any, str], float | Mapping[str, float]],
        name: str = "rubric",
        tie_margin: float = 1e-9,
    ):
        self.score = score
        self.name = name
        self.tie_margin = tie_margin

    def _total(self, prompt: Any, response: str) -> tuple[float, str]:
        s = self.score(prompt, response)
        if isinstance(s, Mapping):
            total = float(s["overall"]) if "overall" in s else float(sum(s.values()))
            return total, ", ".join(f"{k} {float(v):.2f}" for k, v in s.items())
        return float(s), f"{float(s):.2f}"

    def judge(self, prompt: Any, response_a: str, response_b: str) -> Judgement:
        ta, da = self._total(prompt, response_a)
        tb, db = self._total(prompt, response_b)
        return Judgement(prefer(ta, tb, self.tie_margin), f"a: {da}; b: {db}")


# --- an OpenAI-compatible endpoint ----------------------------------------------------------------


@dataclass(frozen=True)
class EndpointConfig:
    base_url: str
    """Up to and including /v1: requests go to BASE_URL/chat/completions."""
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    """Seconds per request."""
    retries: int = 4
    """Further tries after a failed one (connection error, timeout, 429, 5xx)."""
    backoff: float = 1.0
    """Seconds before the first retry; doubled for each further one."""
    max_tokens: int = 400
    cache_dir: Path | None = None
    """Where answers are cached (None: no cache)."""

    @classmethod
    def from_env(cls, **overrides: Any) -> EndpointConfig:
        env = os.environ
        base = env.get("RLHFKIT_JUDGE_BASE_URL") or env.get("OPENAI_BASE_URL")
        model = env.get("RLHFKIT_JUDGE_MODEL")
        if not model and "model" not in overrides:
            raise UserError(
                "the openai judge needs a model name in RLHFKIT_JUDGE_MODEL",
                hint="e.g. RLHFKIT_JUDGE_BASE_URL=http://localhost:8000/v1 "
                "RLHFKIT_JUDGE_MODEL=Qwen2.5-7B-Instruct (a local vLLM or llama.cpp server)",
            )
        values: dict[str, Any] = {
            "base_url": base or "https://api.openai.com/v1",
            "model": model,
            "api_key": env.get("RLHFKIT_JUDGE_API_KEY") or env.get("OPENAI_API_KEY"),
            "cache_dir": cache_dir() / "judge",
        }
        return cls(**{**values, **overrides})


PAIRWISE_SYSTEM = """You are an impartial judge comparing two responses to the same prompt.
{task}{rubric}Judge which response is better. Ignore the order in which they are shown and
their length as such. Reply with one JSON object and nothing else:
{{"rationale": "<one or two sentences>", "preference": "A" | "B" | "tie"}}"""

QUESTION_SYSTEM = """You check one response to a prompt against a yes/no question.
Reply with one JSON object and nothing else:
{"rationale": "<one sentence>", "answer": "yes" | "no"}"""


class OpenAIJudge(PairwiseJudge):
    """A chat model behind an OpenAI-compatible endpoint, asked in both orders."""

    def __init__(
        self,
        config: EndpointConfig,
        task: str = "",
        rubric: Sequence[tuple[str, str]] = (),
        name: str | None = None,
    ):
        self.config = config
        self.name = name or f"openai:{config.model}"
        rubric_text = "".join(f"- {n}: {d}\n" for n, d in rubric)
        self.system = PAIRWISE_SYSTEM.format(
            task=f"The task: {task.strip()}\n" if task else "",
            rubric=f"The rubric, most important first:\n{rubric_text}" if rubric else "",
        )
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0, "unreadable": 0}

    # one pair, both orders
    def judge(self, prompt: Any, response_a: str, response_b: str) -> Judgement:
        first = self._pairwise(prompt, response_a, response_b)
        second = swapped(self._pairwise(prompt, response_b, response_a))
        return combine_orders(first, second)

    def _pairwise(self, prompt: Any, a: str, b: str) -> Judgement:
        user = (
            f"[Prompt]\n{_prompt_text(prompt)}\n\n[Response A]\n{a}\n\n[Response B]\n{b}\n\n"
            "Which response is better?"
        )
        answer = self.chat(_messages(self.system, user))
        pref, rationale = parse_preference(answer)
        if pref is None:
            self.stats["unreadable"] += 1
            return Judgement("tie", f"unreadable judge answer, counted as a tie: {answer[:200]!r}")
        return Judgement(pref, rationale)

    def ask(self, question: str, prompt: Any, response: str) -> bool:
        """A yes/no question about one response (the `judge` success-criterion detector);
        an unreadable answer counts as 'no'."""
        user = (
            f"[Prompt]\n{_prompt_text(prompt)}\n\n[Response]\n{response}\n\n[Question]\n{question}"
        )
        answer = self.chat(_messages(QUESTION_SYSTEM, user))
        verdict = parse_yes_no(answer)
        if verdict is None:
            self.stats["unreadable"] += 1
        return bool(verdict)

    # the endpoint
    def chat(self, messages: list[dict[str, str]]) -> str:
        """The assistant's reply to `messages` at temperature 0, from the cache if asked
        before with the same endpoint, model and settings."""
        c = self.config
        body = {
            "model": c.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": c.max_tokens,
        }
        key = hashlib.sha256(
            strict_json.dumps([c.base_url.rstrip("/"), body], sort_keys=True).encode()
        ).hexdigest()
        cached = c.cache_dir / f"{key}.json" if c.cache_dir else None
        if cached is not None and cached.exists():
            try:
                content = json.loads(cached.read_text())["content"]
                self.stats["cache_hits"] += 1
                return content
            except (json.JSONDecodeError, KeyError, TypeError):
                pass  # a damaged cache entry is asked again and overwritten
        content = self._post(body)
        if cached is not None:
            with atomic_open(cached) as f:
                strict_json.dump({"content": content, "model": c.model}, f)
        return content

    def _post(self, body: dict[str, Any]) -> str:
        c = self.config
        url = c.base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        if c.api_key:
            headers["Authorization"] = f"Bearer {c.api_key}"
        data = strict_json.dumps(body).encode()
        last = ""
        for attempt in range(c.retries + 1):
            if attempt:
                self.stats["retries"] += 1
                time.sleep(c.backoff * 2 ** (attempt - 1))
            self.stats["requests"] += 1
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=c.timeout) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                return str(payload["choices"][0]["message"]["content"])
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:300]
                last = f"HTTP {e.code}: {detail}"
                if e.code != 429 and e.code < 500:  # our request is wrong: retrying won't help
                    raise UserError(f"judge endpoint {url}: {last}") from None
            except urllib.error.URLError as e:
                last = f"cannot connect: {e.reason}"
            except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
                last = f"{type(e).__name__}: {e or 'timed out'}"
            except (json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
                last = f"not an OpenAI chat completion ({type(e).__name__}: {e})"
        raise UserError(
            f"judge endpoint {url}: failed {c.retries + 1} times; last: {last}",
            hint="check RLHFKIT_JUDGE_BASE_URL and that the server is up",
        )


def _messages(system: str, user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def _json_object(text: str) -> dict[str, Any] | None:
    """The last {...} in the text that parses as a JSON object."""
    for match in reversed(list(re.finditer(r"\{[^{}]*\}", text, re.DOTALL))):
        try:
            value = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def parse_preference(answer: str) -> tuple[Preference | None, str]:
    """'a' / 'b' / 'tie' and the rationale from a judge's answer (JSON, or 'Preference: A')."""
    obj = _json_object(answer)
    if obj is not None and isinstance(obj.get("preference"), str):
        raw, rationale = obj["preference"], str(obj.get("rationale", ""))
    else:
        m = re.search(r"preference\W{0,4}(A|B|tie)\b", answer, re.IGNORECASE)
        if m is None:
            return None, answer
        raw, rationale = m.group(1), answer
    value = raw.strip().strip('"').lower()
    if value in ("a", "response a"):
        return "a", rationale
    if value in ("b", "response b"):
        return "b", rationale
    if value in ("tie", "equal", "both"):
        return "tie", rationale
    return None, rationale


def parse_yes_no(answer: str) -> bool | None:
    obj = _json_object(answer)
    raw = str(obj.get("answer", "")) if obj is not None else answer
    m = re.match(r"\W*(yes|no)\b", raw.strip(), re.IGNORECASE)
    return None if m is None else m.group(1).lower() == "yes"


# --- from the command line ---------------------------------------------------------------------

PANEL_JUDGE = "rlhfkit.demo.panel:rubric_judge"
"""`--judge panel`: the demo's simulated panel's verdict, a pairwise function named by its
path so that the library does not import the demo."""


@dataclass
class JudgeChoice:
    """A parsed --judge value."""

    kind: Literal["rm", "panel", "callable", "openai"]
    target: str = ""
    options: dict[str, Any] = field(default_factory=dict)


def parse_judge(value: str) -> JudgeChoice:
    """`rm:DIR`, `panel`, `callable:module:function` or `openai`."""
    kind, _, target = value.partition(":")
    if kind == "rm" and target:
        return JudgeChoice("rm", target)
    if kind == "panel" and not target:
        return JudgeChoice("panel")
    if kind == "callable" and re.fullmatch(r"[\w.]+:\w+", target):
        return JudgeChoice("callable", target)
    if kind == "openai" and not target:
        return JudgeChoice("openai")
    raise UserError(
        f"--judge {value}: give rm:DIR (a reward model), panel (the demo's simulated panel), "
        "callable:module:function (a pairwise function) or openai (an OpenAI-compatible "
        "endpoint from RLHFKIT_JUDGE_BASE_URL / RLHFKIT_JUDGE_MODEL)"
    )


def make_judge(choice: JudgeChoice, task: str = "", rubric: Sequence[tuple[str, str]] = ()):
    """The judge a --judge value names."""
    if choice.kind == "rm":
        return RewardModelJudge(choice.target, name=f"rm:{Path(choice.target).name or 'rm'}")
    if choice.kind == "panel":
        fn = load_callable(PANEL_JUDGE, "--judge panel")
        return CallableJudge(fn, name="panel (simulated)")
    if choice.kind == "callable":
        fn = load_callable(choice.target, f"--judge callable:{choice.target}")
        return CallableJudge(fn, name=choice.target.rpartition(":")[2], both_orders=True)
    return OpenAIJudge(EndpointConfig.from_env(**choice.options), task, rubric)


__all__ = [
    "CallableJudge",
    "EndpointConfig",
    "Judgement",
    "OpenAIJudge",
    "PairwiseJudge",
    "RewardModelJudge",
    "RubricJudge",
    "make_judge",
    "parse_judge",
]
