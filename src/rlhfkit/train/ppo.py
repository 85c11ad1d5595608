"""Stage 3: PPO with a KL penalty to the starting policy (Ziegler et al. 2019; Ouyang et al.
2022), and the critic-free RLOO and GRPO on the same rollouts. Written out.

Roles, without a second policy in memory where LoRA allows:
- actor: the policy (LoRA or full);
- critic: a value head on the actor's backbone (`--critic head`), or a separate model
  initialised from the reward model (`--critic reward-model`); none for RLOO/GRPO;
- reference: the starting policy — with LoRA, the same weights with the adapter switched off;
  in a full fine-tune, a frozen copy;
- reward: reward models and/or Python functions (`rewards.py`).

Each step: sample, score, penalise KL per token, estimate advantages, then a few epochs of
clipped-surrogate updates over minibatches (the numbered comments below).
"""

from __future__ import annotations

import copy
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhfkit.data import Format, load
from rlhfkit.errors import UserError
from rlhfkit.train import losses as L
from rlhfkit.train.batches import Batch
from rlhfkit.train.checkpoint import save_final
from rlhfkit.train.configs import PPOConfig
from rlhfkit.train.dpo import TrainResult
from rlhfkit.train.loop import begin, data_inputs, prepare_model
from rlhfkit.train.rewards import RewardModelFn, load_rewards, total_reward
from rlhfkit.train.rollout import Rollout, rollout_batch, sample_rollout, to_padded
from rlhfkit.train.run import ProgressFn, make_accelerator, start_run
from rlhfkit.train.scoring import ModelScorer, _unwrapped

# Called with (step, prompts, responses, metrics) after each step; may return a reason to stop.
SampleHook = Callable[[int, list[Any], list[str], dict[str, float]], str | None]


@dataclass
class AdaptiveKL:
    """The KL controller of Ziegler et al. 2019 (section 2.2): nudge the coefficient so the
    measured KL tracks a target. `target` 0 keeps the coefficient fixed."""

    coef: float
    target: float = 0.0
    horizon: int = 10000

    def update(self, kl: float, n_samples: int) -> None:
        if self.target <= 0:
            return
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.coef *= 1.0 + error * n_samples / self.horizon


class ActorCritic(ModelScorer):
    """forward(input_ids, attention_mask, position_ids, predict_from, targets)
    -> (logps [N], values [N], logits [N, V]) at the response positions.

    `.model` is the policy (what gets saved as the result); the critic is a value head on its
    hidden states, or a separate `critic` model read at the same positions.
    """

    def __init__(self, model: torch.nn.Module, critic: torch.nn.Module | None = None):
        super().__init__(model)
        self.critic = critic
        if critic is None:
            self.value_head = torch.nn.Linear(_unwrapped(model).config.hidden_size, 1)
            torch.nn.init.zeros_(self.value_head.weight)  # V = 0 at the start: no false signal
            torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask, position_ids, predict_from, targets):
        lm = _unwrapped(self.model)
        hidden = self.hidden(input_ids, attention_mask, position_ids)[predict_from]
        logits = lm.get_output_embeddings()(hidden)
        if cap := getattr(lm.config, "final_logit_softcapping", None):
            logits = torch.tanh(logits / cap) * cap
        if self.critic is None:
            # The head reads the policy's features but does not train them: a value loss
            # scaled by large rewards or KL penalties would otherwise swamp the policy's own
            # gradient in the shared trunk (and scramble it).
            values = self.value_head(hidden.detach()).squeeze(-1)
        else:
            critic_hidden = self.critic.hidden(input_ids, attention_mask, position_ids)
            values = _unwrapped(self.critic.model).score(critic_hidden[predict_from]).squeeze(-1)
        return L.token_logps(logits, targets), values.float(), logits


class Scored(torch.nn.Module):
    """Log-probs of a frozen reference policy at the response positions."""

    def __init__(self, model):
        super().__init__()
        self.scorer = ModelScorer(model)

    @torch.no_grad()
    def forward(self, batch: Batch) -> torch.Tensor:
        lm = _unwrapped(self.scorer.model)
        hidden = self.scorer.hidden(batch.input_ids, batch.attention_mask, batch.position_ids)
        logits = lm.get_output_embeddings()(hidden[batch.predict_from])
        return L.token_logps(logits, batch.targets)


def _call(module, batch: Batch):
    return module(
        batch.input_ids, batch.attention_mask, batch.position_ids, batch.predict_from, batch.targets
    )


def train_ppo(
    cfg: PPOConfig, progress: ProgressFn | None = None, on_samples: SampleHook | None = None
) -> TrainResult:
    # 1. settings, prompts, policy, reward sources, critic, reference
    cfg = begin(cfg)
    from rlhfkit.models import load_model
    from rlhfkit.train.tokenize import _ids

    data = load(cfg.data, expect=[Format.PROMPT_ONLY, Format.PROMPT_COMPLETION, Format.PREFERENCE])
    prompts = [row["prompt"] for row in data.rows]
    model, tok = load_model(cfg.model)
    prompt_ids = [_ids(tok, p, generation_prompt=isinstance(p, list)) for p in prompts]
    room = cfg.max_length - cfg.max_new_tokens
    for i, ids in enumerate(prompt_ids):
        if len(ids) > room:
            raise UserError(
                f"{data.path}:{data.lines[i]}: prompt is {len(ids)} tokens; with "
                f"--max-new-tokens {cfg.max_new_tokens} it must be at most {room} "
                f"(--max-length {cfg.max_length})"
            )
    sources = load_rewards(cfg.reward)
    criteria = _success_criteria(cfg.project)
    reference = None if cfg.lora else Scored(copy.deepcopy(model).eval().requires_grad_(False))
    critic = None
    if cfg.algorithm == "ppo" and cfg.critic == "reward-model":
        critic = _critic_from_reward_model(sources, tok, cfg)
    policy = ActorCritic(prepare_model(model, cfg), critic)
    accelerator = make_accelerator(cfg)
    updates = cfg.ppo_epochs * cfg.minibatches
    run = start_run(
        cfg,
        accelerator,
        policy,
        [len(p) for p in prompt_ids],
        progress,
        data_inputs(data),
        optimizer_steps_per_step=updates,
    )
    device = accelerator.device
    kl_ctl = AdaptiveKL(run.state.get("kl_coef", cfg.kl_coef), cfg.kl_target, cfg.kl_horizon)
    if reference is not None:
        reference.to(device)

    for step in range(run.start, run.total):
        t0 = time.time()
        idx = [j for micro in run.micro_batches(step) for j in micro]
        actor = accelerator.unwrap_model(run.module)
        # 2. sample k responses per prompt from the current policy (seeded by step)
        seed = (cfg.seed * 1_000_003 + step * 7919 + accelerator.process_index) % 2**63
        rollout = sample_rollout(
            actor.model,
            tok,
            [prompt_ids[j] for j in idx],
            cfg.k,
            cfg.max_new_tokens,
            cfg.temperature,
            cfg.top_p,
            seed,
        )
        batch = rollout_batch(rollout)
        mask = rollout.response_mask
        t_generate = time.time() - t0

        # 3. score the responses: weighted reward sources, minus the missing-EOS penalty
        asked = [prompts[idx[i]] for i in rollout.prompt_index.tolist()]
        scores, parts = total_reward(sources, asked, rollout.texts)
        scores = scores.to(device)
        scores = scores - cfg.missing_eos_penalty * (~rollout.finished).float()
        t_score = time.time() - t0 - t_generate

        # 4. log-probs of the sampling policy and of the reference, values, entropy
        with torch.no_grad(), accelerator.autocast():
            old_flat, values_flat, logits = _call(actor, batch)
            entropy = L.masked_mean(to_padded(L.entropy_from_logits(logits), mask), mask)
            del logits
            ref_flat = _reference_logps(actor, reference, batch)
        old_logps, ref_logps = to_padded(old_flat.float(), mask), to_padded(ref_flat.float(), mask)
        old_values = to_padded(values_flat.float(), mask)

        # 5. per-token KL penalty; the score lands on the last response token
        kl = L.kl_estimate(old_logps, ref_logps, cfg.kl_estimator) * mask
        seq_kl = kl.sum(dim=1)
        last = (mask.sum(dim=1) - 1).long()
        if cfg.whiten_rewards:
            scores = L.masked_whiten(scores, torch.ones_like(scores), shift_mean=False)

        # 6. advantages: GAE over the critic's values (PPO), or per-prompt baselines
        if cfg.algorithm == "ppo":
            rewards = -kl_ctl.coef * kl
            rewards[torch.arange(len(last)), last] += scores
            advantages, returns = L.gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
            advantages = L.masked_whiten(advantages, mask)
        else:
            # the KL penalty joins the sequence's score; its advantage applies to every token
            penalised = scores - kl_ctl.coef * seq_kl
            baseline = L.rloo_advantages if cfg.algorithm == "rloo" else L.group_advantages
            advantages = baseline(penalised, cfg.k)[:, None] * mask
            returns = old_values
        t_prep = time.time() - t0 - t_generate - t_score

        # 7. PPO epochs x minibatches of clipped-surrogate updates
        lr_used = run.scheduler.get_last_lr()[0]
        sums: dict[str, float] = defaultdict(float)
        n_updates, stopped = 0, False
        order_gen = torch.Generator().manual_seed(seed)
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(len(rollout.texts), generator=order_gen)
            for mb in order.chunk(cfg.minibatches):
                mb_metrics = _update(
                    run, batch, rollout, mb, old_logps, old_values, advantages, returns, cfg
                )
                for k, v in mb_metrics.items():
                    sums[k] += v
                n_updates += 1
                if cfg.max_approx_kl and mb_metrics["approx_kl"] > cfg.max_approx_kl:
                    stopped = True
                    break
            if stopped:
                break
        for _ in range(updates - n_updates):  # keep the schedule's pace after an early stop
            run.scheduler.step()
        t_train = time.time() - t0 - t_generate - t_score - t_prep

        # 8. the KL controller, metrics, the samples hook, checkpoint
        mean_kl = float(seq_kl.mean())
        kl_used = kl_ctl.coef
        kl_ctl.update(mean_kl, len(rollout.texts))
        run.state["kl_coef"] = kl_ctl.coef
        lengths = mask.sum(dim=1)
        record = {
            "reward": float(scores.mean()),
            "reward_penalised": float((scores - kl_used * seq_kl).mean()),
            "kl": mean_kl,
            "kl_coef": kl_used,
            "entropy": float(entropy),
            "response_length": float(lengths.float().mean()),
            "truncated_rate": float((~rollout.finished).float().mean()),
            "explained_variance": _explained_variance(old_values, returns, mask),
            "updates": float(n_updates),
            "train_tokens": float(batch.tokens),
            "seconds_generate": t_generate,
            "seconds_score": t_score,
            "seconds_train": t_train + t_prep,
        }
        record |= {k: v / max(n_updates, 1) for k, v in sums.items()}
        record |= {f"reward/{name}": float(v.mean()) for name, v in parts.items()}
        record |= {
            f"criteria/{c.name}": sum(c.detector.matches(t) for t in rollout.texts)
            / len(rollout.texts)
            for c in criteria
        }
        grad_norm = record.pop("grad_norm", math.nan)
        last_record = run.end_step(step + 1, {}, (grad_norm, lr_used), extra=record)
        if on_samples is not None and accelerator.is_main_process:
            reason = on_samples(step + 1, asked, rollout.texts, last_record)
            if reason:
                raise UserError(f"stopped at step {step + 1}: {reason}")

    final = save_final(
        Path(cfg.output_dir),
        run.module,
        tok,
        cfg,
        cfg.algorithm,
        accelerator,
        examples=len(prompts),
    )
    _save_critic(accelerator.unwrap_model(run.module), final, accelerator)
    result_last = last_record if run.total > run.start else {}
    return TrainResult(final, result_last, 0, len(prompts))


def _update(run, batch, rollout: Rollout, mb, old_logps, old_values, advantages, returns, cfg):
    """One optimizer step on minibatch `mb` (response indices), split into `grad_accum` parts.

    Each part's loss is weighted by its share of the minibatch's tokens, so the accumulated
    gradient is that of one token-mean over the whole minibatch."""
    metrics: dict[str, float] = defaultdict(float)
    parts = mb.chunk(cfg.grad_accum)
    mb_tokens = rollout.response_mask[mb].sum()
    for i, part in enumerate(parts):
        sub = _select(rollout, part)
        m = rollout.response_mask[part]
        share = m.sum() / mb_tokens
        with run.sync(i == len(parts) - 1), run.accelerator.autocast():
            logps_flat, values_flat, _ = _call(run.module, sub)
            logps = to_padded(logps_flat.float(), m)
            loss, found = L.ppo_policy_loss(
                logps, old_logps[part], advantages[part], m, cfg.cliprange
            )
            found["policy_loss"] = loss.detach()
            if cfg.algorithm == "ppo":
                values = to_padded(values_flat.float(), m)
                vf_loss, vf_metrics = L.ppo_value_loss(
                    values, old_values[part], returns[part], m, cfg.cliprange_value
                )
                loss = loss + cfg.vf_coef * vf_loss
                found |= vf_metrics | {"value_loss": vf_loss.detach()}
            run.backward(loss * share, sub.tokens)
        for k, v in found.items():
            metrics[k] += float(v) * float(share)
    grad_norm, _ = run.optimizer_step()
    metrics["grad_norm"] = grad_norm
    return metrics


def _select(rollout: Rollout, rows: torch.Tensor) -> Batch:
    part = Rollout(
        rollout.input_ids[rows],
        rollout.attention_mask[rows],
        rollout.response_mask[rows],
        rollout.finished[rows],
        rollout.prompt_index[rows],
        [rollout.texts[i] for i in rows.tolist()],
    )
    return rollout_batch(part)


def _reference_logps(actor: ActorCritic, reference: Scored | None, batch: Batch) -> torch.Tensor:
    if reference is not None:
        return reference(batch)
    with actor.model.disable_adapter():  # LoRA off: exactly the starting policy
        return Scored(actor.model)(batch)


def _explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns): how much of the return the critic predicts."""
    var = L.masked_mean((returns - L.masked_mean(returns, mask)) ** 2, mask)
    resid = returns - values
    var_resid = L.masked_mean((resid - L.masked_mean(resid, mask)) ** 2, mask)
    return float(1 - var_resid / var) if var > 0 else float("nan")


def _critic_from_reward_model(sources, tok, cfg: PPOConfig) -> ModelScorer:
    from rlhfkit.train.loop import add_lora

    rm = next((s.fn for s in sources if isinstance(s.fn, RewardModelFn)), None)
    if rm is None:
        raise UserError("--critic reward-model needs a reward model among the --reward sources")
    if rm.tokenizer.get_vocab() != tok.get_vocab():
        raise UserError(
            "--critic reward-model: the reward model's tokenizer differs from the policy's, "
            "and the critic reads the policy's tokens; use --critic head"
        )
    critic = copy.deepcopy(rm.model).train()
    if cfg.lora:
        critic = add_lora(critic, cfg, task_type="SEQ_CLS")
    else:
        critic.requires_grad_(True)
    return ModelScorer(critic)


def _save_critic(actor: ActorCritic, final: Path, accelerator) -> None:
    """The trained critic beside the policy: final/critic/ (a value head or a whole model)."""
    if not accelerator.is_main_process or not isinstance(actor, ActorCritic):
        return
    from safetensors.torch import save_file

    from rlhfkit.data.io import atomic_dir

    with atomic_dir(final / "critic") as tmp:
        if actor.critic is None:
            state = {
                k: v.detach().cpu().contiguous() for k, v in actor.value_head.state_dict().items()
            }
            save_file(state, str(tmp / "value_head.safetensors"))
        else:
            critic = actor.critic.model
            if hasattr(critic, "merge_and_unload"):
                critic = copy.deepcopy(critic).merge_and_unload()
            critic.save_pretrained(str(tmp), safe_serialization=True)


def _success_criteria(project: Path | None) -> list:
    if project is None:
        return []
    from rlhfkit.project import load_project

    return list(load_project(project).spec.success_criteria)
