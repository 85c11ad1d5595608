"""Log-probabilities of completions, computed only where they are needed.

A causal LM's head turns every hidden state into a vocabulary-sized row of logits (49,152
for SmolLM2). Training needs log-probs of the completion tokens only, so `CompletionScorer`
runs the decoder, keeps the hidden states that predict completion tokens, and applies the
head to those alone: prompt and padding positions never reach the head, let alone the loss.
"""

from __future__ import annotations

import torch

from rlhfkit.train.losses import sum_per_sequence, token_logps


def _causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a possible peft wrapper (LoRA layers stay injected)."""
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


class CompletionScorer(torch.nn.Module):
    """forward(input_ids [S, T], attention_mask [S, T], score_mask [S, T]) -> logps [N].

    Position t of `score_mask` marks a token to score; it is predicted from position t-1.
    The N scored tokens come out in row-major order (sequence by sequence).
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, score_mask) -> torch.Tensor:
        lm = _causal_lm(self.model)
        hidden = lm.base_model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        predicts = score_mask[:, 1:]
        logits = lm.get_output_embeddings()(hidden[:, :-1][predicts])
        # Models that transform logits after the head (Gemma 2's soft-capping) need it here too.
        if cap := getattr(lm.config, "final_logit_softcapping", None):
            logits = torch.tanh(logits / cap) * cap
        return token_logps(logits, input_ids[:, 1:][predicts])


def sequence_logps(scorer, input_ids, attention_mask, score_mask) -> torch.Tensor:
    """Sum of scored-token log-probs per sequence: [S]."""
    logps = scorer(input_ids, attention_mask, score_mask)
    seq_index = score_mask[:, 1:].nonzero()[:, 0]
    return sum_per_sequence(logps, seq_index, input_ids.shape[0])
