"""Stage 3: PPO with a KL penalty to the starting policy (Ziegler et al. 2019; Ouyang et al.
2022), and the critic-free RLOO and GRPO on the same rollouts. Written out.

Roles, without a second policy in memory where LoRA allows:
- actor: the policy (LoRA or full);
- critic (PPO only): a value head reading the actor's hidden states (`--critic head`), or a
  separate model initialised from the reward model (`--critic reward-model`);
- reference: the starting policy — with LoRA, the same weights with the adapter switched off;
  in a full fine-tune, a frozen copy;
- reward: reward models and/or Python functions (`reward_sources.py`).

Each step: sample, score, penalise KL per token, estimate advantages, then a few epochs of
clipped-surrogate updates over minibatches (the numbered comments below). Log-probs are
taken at the sampling temperature, so the ratios and the KL refer to the distribution the
responses were drawn from.
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhfkit.criteria import prompt_columns
from rlhfkit.data import Format, load
from rlhfkit.data.io import atomic_dir
from rlhfkit.decode import entropy
from rlhfkit.errors import UserError
from rlhfkit.models import load_model
from rlhfkit.train import losses as L
from rlhfkit.train.batches import Batch
from rlhfkit.train.checkpoint import TrainResult, save_final
from rlhfkit.train.configs import PPOConfig
from rlhfkit.train.distributed import mean_over_processes, response_means, token_mean, whiten
from rlhfkit.train.loop import add_lora, begin, data_inputs, prepare_model
from rlhfkit.train.monitoring import RunWatch, SampleHook, subset_rates
from rlhfkit.train.reward_model import RewardModelFn
from rlhfkit.train.reward_sources import load_rewards, total_reward
from rlhfkit.train.rollout import (
    MergedCopy,
    Rollout,
    batch_seed,
    rollout_batch,
    sample_rollout,
    to_padded,
)
from rlhfkit.train.run import ProgressFn, make_accelerator, start_run
from rlhfkit.train.scoring import CompletionScorer, ModelScorer, unwrap_peft
from rlhfkit.train.tokenize import prompt_ids


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
    -> (logps [N], values [N] or None, logits [N, V]) at the response positions.

    `.model` is the policy (what gets saved). PPO's critic is a value head on the policy's
    hidden states — detached, so a value loss scaled by large rewards or KL penalties cannot
    swamp the policy's own gradient in the shared trunk — or a separate `critic` model read
    at the same positions. RLOO and GRPO have no critic.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        temperature: float,
        value_head: bool,
        critic: ModelScorer | None = None,
    ):
        super().__init__(model, temperature)
        self.critic = critic
        self.value_head = None
        if value_head and critic is None:
            self.value_head = torch.nn.Linear(unwrap_peft(model).config.hidden_size, 1)
            torch.nn.init.zeros_(self.value_head.weight)  # V = 0 at the start: no false signal
            torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask, position_ids, predict_from, targets):
        hidden = self.hidden(input_ids, attention_mask, position_ids)[predict_from]
        logits = self.logits(hidden)
        values = None
        if self.value_head is not None:
            values = self.value_head(hidden.detach()).squeeze(-1).float()
        elif self.critic is not None:
            critic_hidden = self.critic.hidden(input_ids, attention_mask, position_ids)
            score = unwrap_peft(self.critic.model).score
            values = score(critic_hidden[predict_from]).squeeze(-1).float()
        return L.token_logps(logits, targets), values, logits


def _call(module, batch: Batch):
    return module(
        batch.input_ids, batch.attention_mask, batch.position_ids, batch.predict_from, batch.targets
    )


def train_ppo(
    cfg: PPOConfig, progress: ProgressFn | None = None, on_samples: SampleHook | None = None
) -> TrainResult:
    """Train a policy by PPO, RLOO or GRPO against `cfg.reward`; `on_samples` may stop it."""
    cfg = begin(cfg)
    data = load(cfg.data, expect=[Format.PROMPT_ONLY, Format.PROMPT_COMPLETION, Format.PREFERENCE])
    prompts = [row["prompt"] for row in data.rows]
    model, tok = load_model(cfg.model)
    prompt_tokens = _prompt_tokens(data, prompts, tok, cfg)
    accelerator = make_accelerator(cfg)
    _check_layout(cfg, accelerator)
    sources = load_rewards(cfg.reward, accelerator.device)
    watch = RunWatch(cfg, accelerator, on_samples)
    policy, reference, sampler = _roles(model, tok, sources, cfg, accelerator)
    lengths = [len(p) for p in prompt_tokens]
    updates = cfg.ppo_epochs * cfg.minibatches  # optimizer steps per training step
    run = start_run(cfg, accelerator, policy, lengths, progress, data_inputs(data), updates)
    watch.resume_at(run.start)
    kl_ctl = AdaptiveKL(run.state.get("kl_coef", cfg.kl_coef), cfg.kl_target, cfg.kl_horizon)
    on_policy = _on_policy(cfg, accelerator)
    last_record: dict[str, float] = {}
    stopped_early = None

    for step in range(run.start, run.total):
        clock = _Stopwatch()
        idx = [j for micro in run.micro_batches(step) for j in micro]
        actor = accelerator.unwrap_model(run.module)
        # 1. sample k responses per prompt from the current policy (seeded by step)
        seed = batch_seed(cfg.seed, step * 7919 + accelerator.process_index)
        chosen = [prompt_tokens[j] for j in idx]
        rollout = _sample(sampler, actor, tok, chosen, seed, on_policy, cfg)
        mask = rollout.response_mask
        clock.lap("generate")
        # 2. score the responses: weighted reward sources, minus the missing-EOS penalty
        asked = [prompts[idx[i]] for i in rollout.prompt_index.tolist()]
        cols = [prompt_columns(data.rows[idx[i]]) for i in rollout.prompt_index.tolist()]
        raw, parts = total_reward(sources, asked, rollout.texts)
        raw = raw.to(accelerator.device)
        scores = raw - cfg.missing_eos_penalty * (~rollout.finished).float()
        clock.lap("score")
        # 3. log-probs of the sampling policy and of the reference, values, entropy
        old_logps, ref_logps, old_values, entropy = _score_rollout(
            actor, reference, rollout, cfg.grad_accum, accelerator
        )
        # 4. per-token KL penalty to the reference
        kl = L.kl_estimate(old_logps, ref_logps, cfg.kl_estimator) * mask
        scores = _normalise_scores(scores, cfg, accelerator)
        # 5. advantages: GAE over the critic's values (PPO), or per-prompt baselines
        advantages, returns = _advantages(
            scores, kl, old_values, mask, kl_ctl.coef, cfg, accelerator
        )
        clock.lap("prepare")
        # 6. PPO epochs x minibatches of clipped-surrogate updates
        lr_used = run.scheduler.get_last_lr()[0]
        old = None if on_policy else old_logps
        found, n_updates = _optimise(run, rollout, old, old_values, advantages, returns, seed, cfg)
        clock.lap("train")
        # 7. metrics over every process, the KL controller, the monitors, checkpoint, stop?
        hits = watch.criteria_hits(rollout.texts, asked, cols)
        means = _response_means(rollout, raw, scores, parts, kl, kl_ctl.coef, hits, accelerator)
        record = means | {
            "kl_coef": kl_ctl.coef,
            "entropy": entropy,
            "updates": float(n_updates),
            "train_tokens": float(rollout.attention_mask.sum()),
            **clock.seconds(),
        }
        kl_ctl.update(means["kl"], len(rollout.texts) * accelerator.num_processes)
        run.state["kl_coef"] = kl_ctl.coef
        if returns is not None:
            record["explained_variance"] = _explained_variance(old_values, returns, mask)
        record |= {k: v for k, v in found.items() if k != "grad_norm"}
        record |= watch.check(step + 1, asked, rollout.texts, raw.tolist(), means, entropy, cols)
        last_record = run.end_step(step + 1, {}, (found["grad_norm"], lr_used), extra=record)
        stopped_early = watch.stop_reason(step + 1, asked, rollout.texts, last_record)
        if stopped_early:
            break

    final = _save(run, tok, cfg, len(prompts), stopped_early)
    return TrainResult(final, last_record, 0, len(prompts), stopped_early)


def _on_policy(cfg: PPOConfig, accelerator) -> bool:
    """One update per step and no critic: the update is on-policy, so the sampler's own
    log-probs serve as the old ones (the ratio is 1 by construction) and the separate
    no-grad pass over the policy is skipped. PPO needs that pass for its values.
    Under bf16 autocast the sampler (fp32) and the scored passes would differ by rounding,
    and the KL would mix the two: there the shortcut is off."""
    updates = cfg.ppo_epochs * cfg.minibatches
    return cfg.algorithm != "ppo" and updates == 1 and accelerator.mixed_precision == "no"


class _Stopwatch:
    """A step's phases, timed one after the other."""

    def __init__(self):
        self.last = time.time()
        self.laps: dict[str, float] = {}

    def lap(self, phase: str) -> None:
        """`phase` ran from the last lap (or the stopwatch's start) until now."""
        now = time.time()
        self.laps[phase], self.last = now - self.last, now

    def seconds(self) -> dict[str, float]:
        """The metrics' timings: preparing the update counts as training."""
        return {
            "seconds_generate": self.laps["generate"],
            "seconds_score": self.laps["score"],
            "seconds_train": self.laps["train"] + self.laps["prepare"],
        }


def _prompt_tokens(data, prompts: list, tok, cfg: PPOConfig) -> list[list[int]]:
    """Each prompt's token ids; a prompt must leave room for `max_new_tokens`."""
    ids_per_prompt = [prompt_ids(tok, p) for p in prompts]
    room = cfg.max_length - cfg.max_new_tokens
    for i, ids in enumerate(ids_per_prompt):
        if len(ids) > room:
            raise UserError(
                f"{data.path}:{data.lines[i]}: prompt is {len(ids)} tokens; with "
                f"--max-new-tokens {cfg.max_new_tokens} it must be at most {room} "
                f"(--max-length {cfg.max_length})"
            )
    return ids_per_prompt


def _roles(model, tok, sources, cfg: PPOConfig, accelerator):
    """The actor(-critic) to train, the frozen reference (None under LoRA: the actor with its
    adapter off) and the sampler's merged copy (None: sample from the actor itself)."""
    reference = None
    if not cfg.lora:
        frozen = copy.deepcopy(model).eval().requires_grad_(False)
        reference = CompletionScorer(frozen, cfg.temperature).to(accelerator.device)
    sampler = None
    if cfg.lora and cfg.merged_rollouts:
        # Under bf16 the copy keeps bf16 weights: decoding's skinny matmuls gain the most from
        # them (2.6x per step on AVX512-BF16 cores), and step 3 scores what was sampled anew.
        plain = copy.deepcopy(model).to(accelerator.device)
        sampler = MergedCopy(plain.to(torch.bfloat16) if cfg.precision == "bf16" else plain)
    critic = None
    if cfg.algorithm == "ppo" and cfg.critic == "reward-model":
        critic = _critic_from_reward_model(sources, tok, cfg)
    policy = ActorCritic(
        prepare_model(model, cfg), cfg.temperature, value_head=cfg.algorithm == "ppo", critic=critic
    )
    return policy, reference, sampler


def _sample(sampler, actor, tok, prompt_tokens, seed: int, logprobs: bool, cfg: PPOConfig):
    """k responses per prompt from the actor's policy (through the merged copy, if any); with
    `logprobs`, the sampler's log-probs and entropies too."""
    return sample_rollout(
        sampler.refresh(actor.model) if sampler is not None else actor.model,
        tok,
        prompt_tokens,
        cfg.k,
        cfg.max_new_tokens,
        cfg.temperature,
        cfg.top_p,
        seed,
        logprobs=logprobs,
    )


def _normalise_scores(scores: torch.Tensor, cfg: PPOConfig, accelerator) -> torch.Tensor:
    """`--whiten-rewards` (keeping the mean unless `--center-rewards`) or `--center-rewards`
    alone, with statistics over every process's responses."""
    if cfg.whiten_rewards:
        return whiten(scores, torch.ones_like(scores), accelerator, shift_mean=cfg.center_rewards)
    if cfg.center_rewards:
        return scores - response_means(accelerator, {"score": scores})["score"]
    return scores


def _advantages(scores, kl, values, mask, kl_coef: float, cfg: PPOConfig, accelerator):
    """Per-token advantages [B, R] and, for PPO's critic, returns [B, R] (None otherwise).

    PPO: the KL penalty on every token and the score on the last, then GAE over the critic's
    values, whitened. RLOO and GRPO: the KL penalty joins the sequence's score, and its
    advantage against the other samples of the same prompt applies to every token."""
    if cfg.algorithm == "ppo":
        last = (mask.sum(dim=1) - 1).long()
        rewards = -kl_coef * kl
        rewards[torch.arange(len(last)), last] += scores
        advantages, returns = L.gae(rewards, values, mask, cfg.gamma, cfg.lam)
        return whiten(advantages, mask, accelerator), returns
    penalised = scores - kl_coef * kl.sum(dim=1)
    baseline = L.rloo_advantages if cfg.algorithm == "rloo" else L.group_advantages
    return baseline(penalised, cfg.k)[:, None] * mask, None


def _optimise(run, rollout: Rollout, old_logps, old_values, advantages, returns, seed, cfg):
    """`ppo_epochs` passes over the rollout in `minibatches` shuffled minibatches, one
    optimizer step each; `--max-approx-kl` ends the step early once the policy has moved that
    far. Returns the updates' mean metrics (and `grad_norm`) and their count."""
    sums: dict[str, float] = defaultdict(float)
    n_updates = 0
    for mb in _minibatches(len(rollout.texts), seed, cfg):
        found = _update(run, rollout, mb, old_logps, old_values, advantages, returns, cfg)
        for k, v in found.items():
            sums[k] += v
        n_updates += 1
        if _moved_too_far(run, found, cfg):
            break
    for _ in range(cfg.ppo_epochs * cfg.minibatches - n_updates):
        run.scheduler.step()  # keep the schedule's pace after an early stop
    return {k: v / max(n_updates, 1) for k, v in sums.items()}, n_updates


def _minibatches(n: int, seed: int, cfg: PPOConfig):
    """Response indices: `ppo_epochs` passes in a seeded random order, each cut into
    `minibatches` parts."""
    order_gen = torch.Generator().manual_seed(seed)
    for _ in range(cfg.ppo_epochs):
        yield from torch.randperm(n, generator=order_gen).chunk(cfg.minibatches)


def _moved_too_far(run, found: dict[str, float], cfg: PPOConfig) -> bool:
    """The mean approximate KL of the last update over every process exceeds
    `--max-approx-kl` (every process makes the same call)."""
    if not cfg.max_approx_kl:
        return False
    return mean_over_processes(run.accelerator, found["approx_kl"]) > cfg.max_approx_kl


def _response_means(rollout, raw, scores, parts, kl, kl_coef, hits, accelerator):
    """The step's per-response figures, each averaged over every process's responses (a
    criterion's rate over the responses it applies to: `subset_rates`)."""
    seq_kl = kl.sum(dim=1)
    device = accelerator.device
    means = response_means(
        accelerator,
        {
            "reward": raw,
            "score": scores,
            "reward_penalised": scores - kl_coef * seq_kl,
            "kl": seq_kl,
            "response_length": rollout.response_mask.sum(dim=1).float(),
            "truncated_rate": (~rollout.finished).float(),
            **{f"reward/{name}": v.to(device) for name, v in parts.items()},
            **hits,
        },
    )
    return subset_rates(means)


def _score_rollout(actor: ActorCritic, reference, rollout: Rollout, chunks: int, accelerator):
    """Sampling-policy log-probs, reference log-probs, values [B, R] and the mean entropy.

    In `chunks` parts of rows (grad-accum's), so the [tokens, vocab] logits never exceed an
    update's. A rollout that carries the sampler's log-probs and entropies needs only the
    reference."""
    mask = rollout.response_mask
    rows = torch.arange(len(rollout.texts))
    logps, refs, values = torch.zeros_like(mask), torch.zeros_like(mask), torch.zeros_like(mask)
    entropy_sum = 0.0
    if rollout.logps is not None:
        logps, entropy_sum = rollout.logps.to(mask.device), float(rollout.entropy.sum())
    with torch.no_grad(), accelerator.autocast():
        for part in rows.chunk(chunks):
            sub = _select(rollout, part)
            m = mask[part]
            if rollout.logps is None:
                lp, v, logits = _call(actor, sub)
                entropy_sum += float(entropy(torch.log_softmax(logits.float(), dim=-1)).sum())
                del logits
                logps[part] = to_padded(lp.float(), m)
                if v is not None:
                    values[part] = to_padded(v, m)
            refs[part] = to_padded(_reference_logps(actor, reference, sub).float(), m)
    return logps, refs, values, token_mean(accelerator, entropy_sum, float(mask.sum()))


def _reference_logps(actor: ActorCritic, reference, batch: Batch) -> torch.Tensor:
    if reference is not None:
        return _call(reference, batch)
    with actor.model.disable_adapter():  # LoRA off: exactly the starting policy
        return _call(CompletionScorer(actor.model, actor.temperature), batch)


def _update(run, rollout: Rollout, mb, old_logps, old_values, advantages, returns, cfg):
    """One optimizer step on minibatch `mb` (response indices), split into `grad_accum` parts.

    Each part's loss is weighted by its share of the minibatch's tokens, so the accumulated
    gradient is that of one token-mean over the whole minibatch. `old_logps` None: the update
    is on-policy, and the old log-probs are the current ones (ratio 1, the REINFORCE
    gradient with the given advantages)."""
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
            old = logps.detach() if old_logps is None else old_logps[part]
            loss, found = L.ppo_policy_loss(logps, old, advantages[part], m, cfg.cliprange)
            found["policy_loss"] = loss.detach()
            if returns is not None:
                values = to_padded(values_flat, m)
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
    )  # the sampler's log-probs stay behind: a part is only scored, never re-sampled
    return rollout_batch(part)


def _save(run, tok, cfg: PPOConfig, examples: int, stopped_early: str | None) -> Path:
    """The final policy (and, for PPO, its critic beside it); returns the folder."""
    accelerator = run.accelerator
    final = save_final(
        Path(cfg.output_dir),
        run.module,
        tok,
        cfg,
        cfg.algorithm,
        accelerator,
        examples=examples,
        stopped_early=stopped_early,
    )
    _save_critic(accelerator.unwrap_model(run.module), final, accelerator, cfg)
    return final


def _explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns): how much of the return the critic predicts."""
    var = L.masked_mean((returns - L.masked_mean(returns, mask)) ** 2, mask)
    resid = returns - values
    var_resid = L.masked_mean((resid - L.masked_mean(resid, mask)) ** 2, mask)
    return float(1 - var_resid / var) if var > 0 else float("nan")


def _check_layout(cfg: PPOConfig, accelerator) -> None:
    from accelerate.utils import DistributedType  # lazy: as make_accelerator's accelerate

    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise UserError(
            "train ppo runs on one process or under DDP; FSDP and DeepSpeed are not supported "
            "for it yet (sampling needs the whole model on each process)"
        )
    per_process = cfg.batch_size // accelerator.num_processes * cfg.k
    if per_process % (cfg.minibatches * cfg.grad_accum):
        raise UserError(
            f"each process samples {per_process} responses per step (--batch-size "
            f"{cfg.batch_size} / {accelerator.num_processes} processes x --k {cfg.k}); that "
            f"must split evenly into --minibatches {cfg.minibatches} x --grad-accum "
            f"{cfg.grad_accum}"
        )


def _critic_from_reward_model(sources, tok, cfg: PPOConfig) -> ModelScorer:
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


def _save_critic(actor: ActorCritic, final: Path, accelerator, cfg: PPOConfig) -> None:
    """The trained critic beside the policy: final/critic/ (a value head or a whole model)."""
    if not accelerator.is_main_process or cfg.algorithm != "ppo":
        return
    from safetensors.torch import save_file  # lazy: only a PPO run's end needs it

    with atomic_dir(final / "critic") as tmp:
        if actor.value_head is not None:
            head = actor.value_head.state_dict()
            weights = {k: v.detach().cpu().contiguous() for k, v in head.items()}
            save_file(weights, str(tmp / "value_head.safetensors"))
        else:
            critic = actor.critic.model
            if cfg.lora:
                critic = copy.deepcopy(critic).merge_and_unload()
            critic.save_pretrained(str(tmp), safe_serialization=True)
