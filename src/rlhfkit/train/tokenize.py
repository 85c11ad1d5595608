"""Turning validated rows into token ids, exactly as TRL 1.16 does.

Conversational rows go through the chat template: the prompt alone with the generation
prompt, then prompt + completion; the completion is what follows their common prefix.
Standard (text) rows are tokenized as they are, and a preference's chosen and rejected texts
get the EOS token appended, as TRL does. Matching TRL here is what lets its trainers serve as
the oracle for rlhfkit's losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlhfkit.data import Dataset, Format, to_explicit_prompt
from rlhfkit.errors import Problem, UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Example:
    """One tokenized example. For SFT `completions` has one entry, for a preference pair two
    (chosen, rejected), for a prompt's group of compared replies (`group_by_prompt`) as many
    as it has. The model sees ``prompt + completion``; only completion tokens are scored."""

    prompt: list[int]
    completions: tuple[list[int], ...]
    margin: float | None = None
    masks: tuple[list[bool], ...] | None = None
    """Which completion tokens are scored (None: all). Multi-turn SFT scores the assistant
    turns only, not the user turns between them."""
    pairs: tuple[tuple[int, int, float | None], ...] | None = None
    """A group's comparisons: (chosen completion, rejected completion, margin). None: the
    one pair (0, 1, margin) of a preference row."""

    def comparisons(self) -> tuple[tuple[int, int, float | None], ...]:
        return self.pairs if self.pairs is not None else ((0, 1, self.margin),)

    def lengths(self) -> list[int]:
        return [len(self.prompt) + len(c) for c in self.completions]

    def scored(self) -> list[int]:
        """Scored tokens per completion."""
        if self.masks is None:
            return [len(c) for c in self.completions]
        return [sum(m) for m in self.masks]

    def cut(self, room: int) -> Example:
        """The example with every completion (and mask) cut to `room` tokens."""
        masks = tuple(m[:room] for m in self.masks) if self.masks is not None else None
        cut = tuple(c[:room] for c in self.completions)
        return Example(self.prompt, cut, self.margin, masks, self.pairs)


def group_by_prompt(examples: list[Example]) -> list[Example]:
    """Preference pairs that share a prompt, as one example per prompt: its distinct replies
    once each, and every comparison among them. With K replies compared pairwise, the model
    then reads the prompt once and each reply once instead of K(K-1)/2 pairs' worth of both
    (InstructGPT's batching of a prompt's comparisons, Ouyang et al. 2022, §3.5). The pairs
    and their margins are unchanged; groups keep the order in which prompts first appear."""
    groups: dict[tuple[int, ...], tuple[list[tuple[int, ...]], list]] = {}
    for ex in examples:
        if ex.masks is not None or len(ex.completions) != 2:
            raise ValueError("only preference pairs with every completion token scored group")
        replies, pairs = groups.setdefault(tuple(ex.prompt), ([], []))
        index = []
        for completion in ex.completions:
            key = tuple(completion)
            if key not in replies:
                replies.append(key)
            index.append(replies.index(key))
        pairs.append((index[0], index[1], ex.margin))
    return [
        Example(
            list(prompt),
            tuple(list(r) for r in replies),
            pairs=tuple(pairs),
        )
        for prompt, (replies, pairs) in groups.items()
    ]


def token_ids(
    tok: PreTrainedTokenizerBase, value: Any, generation_prompt: bool = False
) -> list[int]:
    if isinstance(value, list):
        out = tok.apply_chat_template(
            value, tokenize=True, return_dict=True, add_generation_prompt=generation_prompt
        )
        return list(out["input_ids"])
    return list(tok(value)["input_ids"])


def prompt_ids(tok: PreTrainedTokenizerBase, prompt: Any) -> list[int]:
    """The token ids a sampler continues, one rule for candidates, PPO and evaluation: a
    conversation through the chat template with the generation prompt (the template writes
    its own special tokens), a text as the tokenizer encodes it by default, with the BOS token
    a tokenizer adds, as training's text examples begin (`token_ids`, TRL's tokenisation)."""
    return token_ids(tok, prompt, generation_prompt=isinstance(prompt, list))


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def split_prompt_completion(
    tok: PreTrainedTokenizerBase, prompt: Any, completion: Any
) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the completion that follows it."""
    prompt_ids = token_ids(tok, prompt, generation_prompt=isinstance(prompt, list))
    full = token_ids(tok, prompt + completion)
    cut = _common_prefix(prompt_ids, full)
    return prompt_ids[:cut], full[cut:]


def tokenize_sft(tok: PreTrainedTokenizerBase, row: dict[str, Any], fmt: Format) -> Example:
    """Prompt/completion rows score the completion; message rows score the assistant turns
    (as one completion after the first assistant turn begins); text rows score everything."""
    if fmt is Format.PROMPT_COMPLETION:
        completion = row["completion"]
        if isinstance(completion, str) and not completion.endswith(tok.eos_token):
            completion += tok.eos_token  # as TRL: a text completion learns to stop
        prompt, completion = split_prompt_completion(tok, row["prompt"], completion)
        return Example(prompt, (completion,))
    if "messages" in row:
        return _assistant_turns(tok, row["messages"])
    ids = [*token_ids(tok, row["text"]), tok.eos_token_id]
    return Example(ids[:1], (ids[1:],))


def _assistant_turns(tok: PreTrainedTokenizerBase, messages: list[dict]) -> Example:
    """A conversation whose assistant turns are scored and everything else is context.

    Each assistant turn's tokens are found by templating the conversation up to the turn
    (with the generation prompt) and up to its end; what lies between is that turn.
    """
    full = token_ids(tok, messages)
    scored = [False] * len(full)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = _common_prefix(token_ids(tok, messages[:i], generation_prompt=True), full)
        end = _common_prefix(token_ids(tok, messages[: i + 1]), full)
        for t in range(start, end):
            scored[t] = True
    first = scored.index(True)
    return Example(full[:first], (full[first:],), masks=(scored[first:],))


def tokenize_preference(tok: PreTrainedTokenizerBase, row: dict[str, Any]) -> Example:
    """Explicit-prompt preference row -> prompt, chosen and rejected token ids."""
    prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
    if isinstance(prompt, str):
        eos = tok.eos_token
        chosen = chosen if chosen.endswith(eos) else chosen + eos
        rejected = rejected if rejected.endswith(eos) else rejected + eos
    prompt_ids = token_ids(tok, prompt, generation_prompt=isinstance(prompt, list))
    full_c, full_r = token_ids(tok, prompt + chosen), token_ids(tok, prompt + rejected)
    cut = min(_common_prefix(prompt_ids, full_c), _common_prefix(prompt_ids, full_r))
    return Example(prompt_ids[:cut], (full_c[cut:], full_r[cut:]), row.get("margin"))


def tokenize_dataset(
    tok: PreTrainedTokenizerBase, dataset: Dataset, max_length: int, kind: str
) -> tuple[list[Example], int]:
    """Tokenize every row; return the examples and how many completions were truncated.

    A prompt that leaves no room for its completion within `max_length` is the user's to fix
    (``FILE:LINE: reason``); a completion that runs past it is cut at `max_length`.
    """
    problems, examples, truncated = [], [], 0
    for row, line in zip(dataset.rows, dataset.lines, strict=True):
        if kind == "sft":
            ex = tokenize_sft(tok, row, dataset.kind.format)
        else:
            if dataset.kind.format is Format.PREFERENCE_IMPLICIT:
                row = to_explicit_prompt(row, dataset.kind.conversational)
            ex = tokenize_preference(tok, row)
        if len(ex.prompt) >= max_length:
            problems.append(
                Problem(
                    str(dataset.path),
                    line,
                    f"prompt is {len(ex.prompt)} tokens, no room for a completion within "
                    f"max length {max_length}",
                )
            )
            continue
        room = max_length - len(ex.prompt)
        if any(len(c) > room for c in ex.completions):
            truncated += 1
            ex = ex.cut(room)
        if not ex.prompt:
            problems.append(
                Problem(
                    str(dataset.path),
                    line,
                    "the prompt has no tokens of its own (its "
                    "text merges into the completion's first token)",
                )
            )
            continue
        if any(n == 0 for n in ex.scored()):
            problems.append(Problem(str(dataset.path), line, "a completion has no tokens"))
            continue
        examples.append(ex)
    if problems:
        raise UserError(problems[:50], hint="raise --max-length or shorten these prompts")
    return examples, truncated
