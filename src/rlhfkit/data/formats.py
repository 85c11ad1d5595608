"""TRL's dataset formats, detected and validated one row at a time.

A row's *format* is told by its keys, and whether it is *conversational* by its values (a list
of ``{"role", "content"}`` messages instead of a string), exactly as TRL defines them:

| format               | keys                                        |
|----------------------|---------------------------------------------|
| language_modeling    | ``text`` or ``messages``                    |
| prompt_only          | ``prompt``                                  |
| prompt_completion    | ``prompt``, ``completion``                  |
| preference           | ``prompt``, ``chosen``, ``rejected``        |
| preference_implicit  | ``chosen``, ``rejected`` (prompt = their shared beginning) |
| comparison           | ``prompt``, ``response_a``, ``response_b``  |

*comparison* is rlhfkit's own: an unlabelled pair of responses waiting for annotation.

Preference and comparison rows may carry annotation metadata (see `METADATA_FIELDS`). Other
keys pass through untouched, as TRL passes extra columns through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Format(StrEnum):
    LANGUAGE_MODELING = "language_modeling"
    PROMPT_ONLY = "prompt_only"
    PROMPT_COMPLETION = "prompt_completion"
    PREFERENCE = "preference"
    PREFERENCE_IMPLICIT = "preference_implicit"
    COMPARISON = "comparison"


@dataclass(frozen=True)
class Kind:
    """What a dataset is: its format and whether its texts are chat messages."""

    format: Format
    conversational: bool

    def __str__(self) -> str:
        style = "conversational" if self.conversational else "standard"
        return f"{self.format.value} ({style})"


ROLES = ("system", "user", "assistant", "tool")
VOTE_VALUES = ("chosen", "rejected", "tie", "both_bad")

# Optional annotation metadata on preference and comparison rows.
METADATA_FIELDS = {
    "id": "a string or integer identifying the row",
    "annotator_ids": "the ids of the annotators who labelled the pair",
    "votes": 'each annotator\'s vote: {"annotator": "chosen" | "rejected" | "tie" | "both_bad"}',
    "tie": "true when the annotators judged the two responses equally good",
    "both_bad": "true when the annotators judged both responses unacceptable",
    "rubric_version": "the version of the rubric the labels were collected under",
    "margin": "how strongly `chosen` is preferred (a number; used by the reward model)",
}

DEFAULT_MAX_CHARS = 50_000


class RowError(ValueError):
    """One reason a row is invalid; the caller adds the file and line."""


def detect_format(row: dict[str, Any]) -> Format:
    keys = row.keys()
    if "completions" in keys or ("completion" in keys and "label" in keys):
        kind = "stepwise supervision" if "completions" in keys else "unpaired preference"
        raise RowError(f"TRL's {kind} format is not supported; use preference pairs")
    if "chosen" in keys or "rejected" in keys:
        return Format.PREFERENCE if "prompt" in keys else Format.PREFERENCE_IMPLICIT
    if "response_a" in keys or "response_b" in keys:
        return Format.COMPARISON
    if "completion" in keys:
        return Format.PROMPT_COMPLETION
    if "prompt" in keys:
        return Format.PROMPT_ONLY
    if "text" in keys or "messages" in keys:
        return Format.LANGUAGE_MODELING
    raise RowError(
        "cannot tell the format: a row needs 'text' or 'messages', 'prompt' (with optional "
        "'completion'), 'prompt'/'chosen'/'rejected', or 'prompt'/'response_a'/'response_b'"
        f"; this row has {_keys(row)}"
    )


def required_fields(fmt: Format, row: dict[str, Any]) -> tuple[str, ...]:
    """The fields a row of this format must have (language modeling: whichever it uses)."""
    if fmt is Format.LANGUAGE_MODELING:
        return ("messages",) if "messages" in row else ("text",)
    return {
        Format.PROMPT_ONLY: ("prompt",),
        Format.PROMPT_COMPLETION: ("prompt", "completion"),
        Format.PREFERENCE: ("prompt", "chosen", "rejected"),
        Format.PREFERENCE_IMPLICIT: ("chosen", "rejected"),
        Format.COMPARISON: ("prompt", "response_a", "response_b"),
    }[fmt]


def check_row(row: Any, max_chars: int = DEFAULT_MAX_CHARS) -> Kind:
    """Validate one row and return its kind, or raise `RowError` with the first reason."""
    if not isinstance(row, dict):
        raise RowError(f"a row must be a JSON object, not {type(row).__name__}")
    fmt = detect_format(row)
    fields = required_fields(fmt, row)
    missing = [f for f in fields if f not in row]
    if missing:
        raise RowError(f"{fmt.value} row is missing {_join(missing)}")
    if fmt is Format.LANGUAGE_MODELING and "text" in row and "messages" in row:
        raise RowError("a language-modeling row has either 'text' or 'messages', not both")

    styles = {f: isinstance(row[f], list) for f in fields}
    conversational = styles[fields[0]]
    for f in fields:
        if styles[f] != conversational:
            raise RowError(
                f"'{fields[0]}' is {_style(conversational)} but '{f}' is {_style(styles[f])}; "
                "a row is all text or all messages"
            )

    chars = 0
    for f in fields:
        chars += _check_text_or_messages(f, row[f], conversational)
    if chars > max_chars:
        raise RowError(f"row is oversized: {chars} characters of text (limit {max_chars})")

    if conversational:
        _check_conversation_roles(fmt, row)
    is_pair = fmt in (Format.PREFERENCE, Format.PREFERENCE_IMPLICIT)
    if is_pair and row["chosen"] == row["rejected"]:
        raise RowError("'chosen' and 'rejected' are identical; the pair teaches nothing")
    if fmt is Format.PREFERENCE_IMPLICIT:
        _check_implicit_split(row, conversational)
    if fmt is Format.COMPARISON and row["response_a"] == row["response_b"]:
        raise RowError("'response_a' and 'response_b' are identical; there is nothing to compare")
    if fmt in (Format.PREFERENCE, Format.PREFERENCE_IMPLICIT, Format.COMPARISON):
        _check_metadata(row)
    return Kind(fmt, conversational)


def _check_text_or_messages(field: str, value: Any, conversational: bool) -> int:
    if not conversational:
        if not isinstance(value, str):
            raise RowError(f"'{field}' must be a string or a list of messages, not {_json(value)}")
        if not value.strip():
            raise RowError(f"'{field}' is empty")
        return len(value)
    if not value:
        raise RowError(f"'{field}' is an empty list of messages")
    chars = 0
    for i, message in enumerate(value):
        where = f"'{field}' message {i + 1}"
        if not isinstance(message, dict):
            raise RowError(f"{where} must be an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise RowError(f"{where} has role {role!r}; roles are {_join(ROLES)}")
        if not isinstance(content, str):
            raise RowError(f"{where} needs 'content' as a string, not {_json(content)}")
        if not content.strip():
            raise RowError(f"{where} has empty content")
        chars += len(content)
    return chars


def _check_conversation_roles(fmt: Format, row: dict[str, Any]) -> None:
    def roles(field: str) -> list[str]:
        return [m["role"] for m in row[field]]

    def system_only_first(field: str) -> None:
        if "system" in roles(field)[1:]:
            raise RowError(f"'{field}' has a system message after the first message")

    if fmt is Format.LANGUAGE_MODELING:
        system_only_first("messages")
        if "assistant" not in roles("messages"):
            raise RowError("'messages' has no assistant message, so there is nothing to learn")
        return
    if fmt is Format.PREFERENCE_IMPLICIT:
        for f in ("chosen", "rejected"):
            system_only_first(f)
            if roles(f)[-1] != "assistant":
                raise RowError(f"'{f}' must end with an assistant message")
        return
    system_only_first("prompt")
    if roles("prompt")[-1] not in ("user", "tool"):
        raise RowError(
            f"'prompt' ends with a {roles('prompt')[-1]} message; it must end with the user's turn"
        )
    for f in required_fields(fmt, row)[1:]:
        wrong = [r for r in roles(f) if r != "assistant"]
        if wrong:
            raise RowError(f"'{f}' must hold assistant messages only, found role {wrong[0]!r}")


def _check_metadata(row: dict[str, Any]) -> None:
    if "id" in row and (isinstance(row["id"], bool) or not isinstance(row["id"], str | int)):
        raise RowError(f"'id' must be a string or an integer, not {_json(row['id'])}")
    for flag in ("tie", "both_bad"):
        if flag in row and not isinstance(row[flag], bool):
            raise RowError(f"'{flag}' must be true or false, not {_json(row[flag])}")
    if row.get("tie") and row.get("both_bad"):
        raise RowError("a pair cannot be both a tie and both-bad")
    ids = row.get("annotator_ids")
    if ids is not None and (
        not isinstance(ids, list) or not all(isinstance(a, str) and a for a in ids)
    ):
        raise RowError("'annotator_ids' must be a list of non-empty strings")
    if ids is not None and len(set(ids)) != len(ids):
        raise RowError("'annotator_ids' lists an annotator twice")
    votes = row.get("votes")
    if votes is not None:
        if not isinstance(votes, dict):
            raise RowError('\'votes\' must be an object like {"ann1": "chosen"}')
        for annotator, vote in votes.items():
            if vote not in VOTE_VALUES:
                raise RowError(f"vote of {annotator!r} is {vote!r}; votes are {_join(VOTE_VALUES)}")
        if ids is not None and set(votes) != set(ids):
            raise RowError("'votes' and 'annotator_ids' name different annotators")
    version = row.get("rubric_version")
    if version is not None and (not isinstance(version, str | int) or isinstance(version, bool)):
        raise RowError("'rubric_version' must be a string or a number")
    if "margin" in row:
        margin = row["margin"]
        if (
            isinstance(margin, bool)
            or not isinstance(margin, int | float)
            or not math.isfinite(margin)
        ):
            shown = margin if isinstance(margin, float) else _json(margin)
            raise RowError(f"'margin' must be a finite number, not {shown}")


def split_implicit_prompt(row: dict[str, Any], conversational: bool) -> dict[str, Any]:
    """``{chosen, rejected}`` -> ``{prompt, chosen, rejected, ...}``: the prompt is their shared
    beginning, as TRL's ``extract_prompt`` defines it (for text, a space just before the split
    stays with the answers). Other keys are kept."""
    chosen, rejected = row["chosen"], row["rejected"]
    split = 0
    for a, b in zip(chosen, rejected, strict=False):
        if a != b:
            break
        split += 1
    if not conversational and split > 0 and chosen[split - 1] == " ":
        split -= 1
    rest = {k: v for k, v in row.items() if k not in ("chosen", "rejected")}
    pieces = {"prompt": chosen[:split], "chosen": chosen[split:], "rejected": rejected[split:]}
    return {**pieces, **rest}


def _check_implicit_split(row: dict[str, Any], conversational: bool) -> None:
    """The implicit prompt must make a valid explicit row: a real prompt, two real answers."""
    explicit = split_implicit_prompt(row, conversational)
    empty = [k for k in ("prompt", "chosen", "rejected") if not _nonblank(explicit[k])]
    if "prompt" in empty:
        raise RowError(
            "'chosen' and 'rejected' share no beginning, so there is no implicit prompt; "
            "add an explicit 'prompt'"
        )
    if empty:
        raise RowError(
            f"after the shared beginning (the implicit prompt), '{empty[0]}' is empty: "
            "one answer is the start of the other; add an explicit 'prompt'"
        )
    if conversational:
        try:
            _check_conversation_roles(Format.PREFERENCE, explicit)
        except RowError as e:
            raise RowError(f"the implicit prompt split gives an invalid row: {e}") from None


def _nonblank(value: Any) -> bool:
    return bool(value) if isinstance(value, list) else bool(value.strip())


def _keys(row: dict[str, Any]) -> str:
    return _join(list(row)) if row else "no fields"


def _join(items: Any) -> str:
    return ", ".join(f"'{i}'" for i in items)


def _style(conversational: bool) -> str:
    return "messages" if conversational else "text"


def _json(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
