"""Log-probs and rewards, computed only where they are needed.

A causal LM's head turns every hidden state into a vocabulary-sized row of logits (49,152
for SmolLM2). Training needs log-probs of the completion tokens only, so `CompletionScorer`
runs the decoder, keeps the hidden states that predict completion tokens, and applies the
head to those alone: prompt and padding positions never reach the head, let alone the loss.
`RewardScorer` does the same for a reward model's one-output head and each sequence's last
token. Both take a `batches.Batch`, in either layout.
"""

from __future__ import annotations

import torch

from rlhfkit.train.batches import Batch, attention_input
from rlhfkit.train.losses import sum_per_sequence, token_logps


def unwrap_peft(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a possible peft wrapper (LoRA layers stay injected)."""
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


class ModelScorer(torch.nn.Module):
    """A transformers model (maybe LoRA-wrapped) as `.model`, run up to its last hidden state.

    Trainers hand the scorer, not the model, to Accelerate, so DDP's hooks see the forward
    that training actually runs; `.model` is what gets saved.
    """

    def __init__(self, model: torch.nn.Module, temperature: float = 1.0):
        super().__init__()
        self.model = model
        self.temperature = temperature
        """Logits are divided by this: log-probs of the distribution a sampler at this
        temperature draws from (stage 3 scores what it sampled)."""

    def hidden(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        """Last hidden states, flattened to [rows * width, hidden]."""
        lm = unwrap_peft(self.model)
        mask = attention_input(attention_mask, lm.config._attn_implementation)
        out = lm.base_model(
            input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False
        )
        return out.last_hidden_state.flatten(0, 1)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head on some hidden states [N, H] -> [N, V], as the model would apply it."""
        lm = unwrap_peft(self.model)
        logits = lm.get_output_embeddings()(hidden)
        # Models that transform logits after the head (Gemma 2's soft-capping) need it here too.
        if cap := getattr(lm.config, "final_logit_softcapping", None):
            logits = torch.tanh(logits / cap) * cap
        return logits / self.temperature if self.temperature != 1.0 else logits


class CompletionScorer(ModelScorer):
    """forward(input_ids, attention_mask, position_ids, predict_from, targets) -> logps [N]."""

    def forward(self, input_ids, attention_mask, position_ids, predict_from, targets):
        hidden = self.hidden(input_ids, attention_mask, position_ids)
        return token_logps(self.logits(hidden[predict_from]), targets)


class RewardScorer(ModelScorer):
    """forward(input_ids, attention_mask, position_ids, last_index) -> rewards [S].

    The score head reads each sequence's last non-pad token, as HF's sequence classifiers do,
    so the saved model scores exactly as it trained.
    """

    def forward(self, input_ids, attention_mask, position_ids, last_index):
        hidden = self.hidden(input_ids, attention_mask, position_ids)
        return unwrap_peft(self.model).score(hidden[last_index]).squeeze(-1)


def token_logps_of(scorer, batch: Batch) -> torch.Tensor:
    """Log-prob of every scored token: [N]."""
    return scorer(
        batch.input_ids, batch.attention_mask, batch.position_ids, batch.predict_from, batch.targets
    )


def sequence_logps(scorer, batch: Batch) -> torch.Tensor:
    """Sum of scored-token log-probs per sequence: [S]."""
    return sum_per_sequence(token_logps_of(scorer, batch), batch.seq_index, batch.n_sequences)


def rewards_of(scorer, batch: Batch) -> torch.Tensor:
    """The reward of every sequence: [S]."""
    return scorer(batch.input_ids, batch.attention_mask, batch.position_ids, batch.last_index)
