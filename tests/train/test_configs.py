"""The training configs: which settings a resumed run must share, and their value lists."""

from __future__ import annotations

import typing

import pytest

from rlhfkit.train import configs

LOOP = {
    "batch_size", "grad_accum", "seed", "epochs", "max_steps", "learning_rate", "lr_schedule",
    "warmup_ratio", "lora", "lora_r", "lora_layers", "max_length", "precision",
}  # fmt: skip
PPO = {
    "reward", "algorithm", "k", "max_new_tokens", "temperature", "top_p", "missing_eos_penalty",
    "kl_coef", "kl_estimator", "kl_target", "kl_horizon", "whiten_rewards", "center_rewards",
    "gamma", "lam", "ppo_epochs", "minibatches", "cliprange", "cliprange_value", "vf_coef",
    "max_approx_kl", "critic", "merged_rollouts",
}  # fmt: skip


@pytest.mark.parametrize(
    ("config_cls", "keys"),
    [
        (configs.SFTConfig, LOOP),
        (configs.RewardConfig, LOOP | {"group_by_prompt", "center_coef"}),
        # not `reference`: both sources give the same log-probs (tested to 1e-5)
        (configs.DPOConfig, LOOP | {"group_by_prompt", "beta", "loss_type", "label_smoothing"}),
        (configs.PPOConfig, LOOP | PPO),
    ],
)
def test_resume_keys_are_the_marked_fields(config_cls, keys):
    # the lists the configs wrote out by hand before the fields carried the mark; a subclass
    # that only changes a default (PPO's batch_size, each stage's learning_rate) keeps it
    assert set(config_cls().resume_keys()) == keys
    assert len(config_cls().resume_keys()) == len(keys)


def test_each_literal_field_is_checked_against_its_own_values():
    hints = typing.get_type_hints(configs.PPOConfig)
    assert typing.get_args(hints["algorithm"]) == configs.RL_ALGORITHMS == ("ppo", "rloo", "grpo")
    assert typing.get_args(hints["precision"]) == configs.PRECISIONS == ("auto", "bf16", "fp32")
    dpo = typing.get_type_hints(configs.DPOConfig)
    assert typing.get_args(dpo["loss_type"]) == configs.DPO_LOSS_TYPES
