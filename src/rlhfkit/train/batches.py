"""Turning tokenized examples into model inputs, and saying which positions matter.

Two layouts, one `Batch` type:

- `separate`: each completion is its own row, ``prompt + completion``, right-padded. Works with
  every attention kernel.
- `shared_prompt`: one row per example, ``prompt + chosen + rejected``; a block mask stops each
  completion from seeing the other, and position ids restart after the prompt, so each
  completion is computed exactly as if it were alone — but the prompt goes through the
  model once instead of twice. On preference data that is a third fewer tokens.

Either way a `Batch` names, as flat indices into the ``[rows * width]`` hidden states, the
position that predicts every scored token (for log-probs) and each sequence's last real token
(for a reward head). Sequences are numbered completion-major: all first completions
(chosen), then all second ones (rejected); a prompt's group of K replies (`group_by_prompt`)
takes part in the rounds up to its K (`sequence_numbers`), and `comparison_index` says which
sequences each of its pairs compares.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from rlhfkit.train.tokenize import Example

# Attention kernels that accept an arbitrary [B, 1, T, T] mask (flash-attention does not).
BLOCK_MASK_KERNELS = ("sdpa", "eager")


@dataclass
class Batch:
    input_ids: torch.Tensor  # [R, T]
    attention_mask: torch.Tensor  # [R, T] padding mask, or [R, T, T] bool: query may see key
    position_ids: torch.Tensor | None  # [R, T]; None: 0, 1, 2, ... along each row
    predict_from: torch.Tensor  # [N] flat position whose hidden state predicts scored token n
    targets: torch.Tensor  # [N] the scored token ids
    seq_index: torch.Tensor  # [N] which sequence scored token n belongs to
    last_index: torch.Tensor  # [S] flat position of each sequence's last non-pad token
    n_scored: torch.Tensor  # [S] scored tokens per sequence
    tokens: int  # positions the model computes that are not padding

    @property
    def n_sequences(self) -> int:
        return self.n_scored.shape[0]

    def to(self, device) -> Batch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return Batch(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in moved.items()})


def pad_right(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B] lists -> input_ids [B, T], attention_mask [B, T] (right padding)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def _scored(ex: Example, k: int) -> list[bool]:
    return ex.masks[k] if ex.masks is not None else [True] * len(ex.completions[k])


def _last_real(tokens: list[int], pad_id: int) -> int:
    """Index of the last token that is not the pad id (how HF's sequence classifiers pool)."""
    for i in range(len(tokens) - 1, -1, -1):
        if tokens[i] != pad_id:
            return i
    return 0


def sequence_order(examples: list[Example]) -> list[tuple[int, int]]:
    """(example, completion) of every sequence, completion-major: each example's first
    completion, then each one's second, ... (an example with fewer sits the later rounds out)."""
    most = max(len(ex.completions) for ex in examples)
    return [
        (r, k) for k in range(most) for r, ex in enumerate(examples) if k < len(ex.completions)
    ]


def sequence_numbers(examples: list[Example]) -> list[list[int]]:
    """numbers[r][k]: the sequence number of example r's completion k in either layout."""
    numbers = [[0] * len(ex.completions) for ex in examples]
    for s, (r, k) in enumerate(sequence_order(examples)):
        numbers[r][k] = s
    return numbers


def comparison_index(examples: list[Example]):
    """Every comparison of the batch: (chosen [P], rejected [P]) sequence numbers and the
    margins [P] (None when no pair has one; a pair without a margin then counts 0)."""
    numbers = sequence_numbers(examples)
    chosen, rejected, margins = [], [], []
    for r, ex in enumerate(examples):
        for c, j, margin in ex.comparisons():
            chosen.append(numbers[r][c])
            rejected.append(numbers[r][j])
            margins.append(margin)
    has_margin = any(m is not None for m in margins)
    return (
        torch.tensor(chosen, dtype=torch.long),
        torch.tensor(rejected, dtype=torch.long),
        torch.tensor([m or 0.0 for m in margins]) if has_margin else None,
    )


def separate(examples: list[Example], pad_id: int) -> Batch:
    """One right-padded row per completion: ``prompt + completion``."""
    order = [(k, examples[r]) for r, k in sequence_order(examples)]
    rows = [ex.prompt + ex.completions[k] for k, ex in order]
    ids, mask = pad_right(rows, pad_id)
    width = ids.shape[1]
    predict_from, targets, seq_index, last_index, n_scored = [], [], [], [], []
    for s, (k, ex) in enumerate(order):
        start = s * width + len(ex.prompt)
        scored = [j for j, keep in enumerate(_scored(ex, k)) if keep]
        predict_from += [start + j - 1 for j in scored]
        targets += [ex.completions[k][j] for j in scored]
        seq_index += [s] * len(scored)
        n_scored.append(len(scored))
        last_index.append(s * width + _last_real(rows[s], pad_id))
    as_tensors = (
        torch.tensor(v, dtype=torch.long)
        for v in (predict_from, targets, seq_index, last_index, n_scored)
    )
    return Batch(ids, mask, None, *as_tensors, tokens=sum(len(r) for r in rows))


def shared_prompt(examples: list[Example], pad_id: int) -> Batch:
    """One row per example: ``prompt + completion_1 + completion_2 + ...`` with a block mask
    (an example may have any number of completions: a prompt's group of replies).

    A completion token sees the prompt and the earlier tokens of its own completion, at the
    positions it would have alone; padding sees only itself (a row of nothing gives NaN).
    """
    numbers = sequence_numbers(examples)
    n_sequences = sum(len(ex.completions) for ex in examples)
    lengths = [len(ex.prompt) + sum(len(c) for c in ex.completions) for ex in examples]
    width = max(lengths)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(examples), width), dtype=torch.long)
    allowed = torch.eye(width, dtype=torch.bool).repeat(len(examples), 1, 1)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    # per sequence number: its scored positions and targets, its last token, its count
    predict_from = [[] for _ in range(n_sequences)]
    targets = [[] for _ in range(n_sequences)]
    last_index = [0] * n_sequences
    n_scored = [0] * n_sequences
    for r, ex in enumerate(examples):
        p = len(ex.prompt)
        ids[r, :p] = torch.tensor(ex.prompt)
        positions[r, :p] = torch.arange(p)
        allowed[r, :p, :p] = causal[:p, :p]
        start = p
        for k, completion in enumerate(ex.completions):
            n = len(completion)
            end = start + n
            ids[r, start:end] = torch.tensor(completion)
            positions[r, start:end] = torch.arange(p, p + n)
            allowed[r, start:end, :p] = True
            allowed[r, start:end, start:end] = causal[:n, :n]
            base, s = r * width, numbers[r][k]
            scored = [j for j, keep in enumerate(_scored(ex, k)) if keep]
            # token j of the completion is predicted from the one before it: the prompt's
            # last token for j = 0, which every completion shares
            predict_from[s] = [base + (start + j - 1 if j else p - 1) for j in scored]
            targets[s] = [completion[j] for j in scored]
            n_scored[s] = len(scored)
            last = _last_real(ex.prompt + completion, pad_id)
            last_index[s] = base + (last if last < p else start + last - p)
            start = end

    def flat(parts: list[list[int]]) -> torch.Tensor:
        return torch.tensor([x for part in parts for x in part], dtype=torch.long)

    seq_index = [[s] * n for s, n in enumerate(n_scored)]
    return Batch(
        ids,
        allowed,
        positions,
        flat(predict_from),
        flat(targets),
        flat(seq_index),
        torch.tensor(last_index, dtype=torch.long),
        torch.tensor(n_scored, dtype=torch.long),
        tokens=sum(lengths),
    )


def supports_block_mask(model: torch.nn.Module) -> bool:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) in BLOCK_MASK_KERNELS


def attention_input(mask: torch.Tensor, attn_implementation: str) -> torch.Tensor:
    """A padding mask as is; a [R, T, T] block mask in the form the kernel expects."""
    if mask.dim() == 2:
        return mask
    if attn_implementation == "sdpa":
        return mask[:, None]
    if attn_implementation == "eager":  # eager adds the mask to the scores
        blocked = torch.finfo(torch.float32).min
        return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill(
            ~mask, blocked
        )[:, None]
    raise ValueError(f"attention kernel {attn_implementation!r} takes no block mask")
