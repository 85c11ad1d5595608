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
from rlhfkit.train.checkpoint import MetricsLog, TrainResult, save_final
from rlhfkit.train.configs import PPOConfig
from rlhfkit.train.loop import add_lora, begin, data_inputs, prepare_model
from rlhfkit.train.reward_model import RewardModelFn
from rlhfkit.train.reward_sources import load_rewards, total_reward
from rlhfkit.train.rollout import MergedCopy, Rollout, rollout_batch, sample_rollout, to_padded
from rlhfkit.train.run import ProgressFn, make_accelerator, start_run
from rlhfkit.train.scoring import CompletionScorer, ModelScorer, unwrap_peft

# Called on the main process after each step with (step, prompts, responses, metrics);
# returns None to go on, or a reason to stop the run early (the model so far is saved).
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
    # 1. settings, prompts, policy, reward sources, critic, reference
    cfg = begin(cfg)
    from rlhfkit.models import load_model
    from rlhfkit.train.tokenize import token_ids

    data = load(cfg.data, expect=[Format.PROMPT_ONLY, Format.PROMPT_COMPLETION, Format.PREFERENCE])
    prompts = [row["prompt"] for row in data.rows]
    model, tok = load_model(cfg.model)
    prompt_ids = [token_ids(tok, p, generation_prompt=isinstance(p, list)) for p in prompts]
    room = cfg.max_length - cfg.max_new_tokens
    for i, ids in enumerate(prompt_ids):
        if len(ids) > room:
            raise UserError(
                f"{data.path}:{data.lines[i]}: prompt is {len(ids)} tokens; with "
                f"--max-new-tokens {cfg.max_new_tokens} it must be at most {room} "
                f"(--max-length {cfg.max_length})"
            )
    accelerator = make_accelerator(cfg)
    _check_layout(cfg, accelerator)
    sources = load_rewards(cfg.reward, accelerator.device)
    criteria = _success_criteria(cfg.project)
    monitor = _live_monitor(cfg, criteria)
    flagged_before: set[str] = set()
    reference = None
    if not cfg.lora:
        frozen = copy.deepcopy(model).eval().requires_grad_(False)
        reference = CompletionScorer(frozen, cfg.temperature).to(accelerator.device)
    sampler = None
    if cfg.lora and cfg.merged_rollouts:
        # Under bf16 the copy keeps bf16 weights: decoding's skinny matmuls gain the most from
        # them (2.6x per step on AVX512-BF16 cores), and step 4 scores what was sampled anew.
        plain = copy.deepcopy(model).to(accelerator.device)
        sampler = MergedCopy(plain.to(torch.bfloat16) if cfg.precision == "bf16" else plain)
    critic = None
    if cfg.algorithm == "ppo" and cfg.critic == "reward-model":
        critic = _critic_from_reward_model(sources, tok, cfg)
    policy = ActorCritic(
        prepare_model(model, cfg), cfg.temperature, value_head=cfg.algorithm == "ppo", critic=critic
    )
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
    # the flags' log: step-keyed JSON lines, cut back on resume like metrics.jsonl (the
    # monitors' history starts afresh: the first resumed step is the new reference)
    flag_log = MetricsLog(Path(cfg.output_dir) / "monitors.jsonl")
    if monitor is not None and accelerator.is_main_process:
        flag_log.truncate_after(run.start)
    kl_ctl = AdaptiveKL(run.state.get("kl_coef", cfg.kl_coef), cfg.kl_target, cfg.kl_horizon)
    last_record: dict[str, float] = {}
    stopped_early = None
    # One update per step and no critic: the update is on-policy, so the sampler's own
    # log-probs serve as the old ones (the ratio is 1 by construction) and the separate
    # no-grad pass over the policy is skipped. PPO needs that pass for its values.
    # Under bf16 autocast the sampler (fp32) and the scored passes would differ by rounding,
    # and the KL would mix the two: there the shortcut is off.
    on_policy = cfg.algorithm != "ppo" and updates == 1 and accelerator.mixed_precision == "no"

    for step in range(run.start, run.total):
        t0 = time.time()
        idx = [j for micro in run.micro_batches(step) for j in micro]
        actor = accelerator.unwrap_model(run.module)
        # 2. sample k responses per prompt from the current policy (seeded by step)
        seed = (cfg.seed * 1_000_003 + step * 7919 + accelerator.process_index) % 2**63
        rollout = sample_rollout(
            sampler.refresh(actor.model) if sampler is not None else actor.model,
            tok,
            [prompt_ids[j] for j in idx],
            cfg.k,
            cfg.max_new_tokens,
            cfg.temperature,
            cfg.top_p,
            seed,
            logprobs=on_policy,
        )
        mask = rollout.response_mask
        t_generate = time.time() - t0

        # 3. score the responses: weighted reward sources, minus the missing-EOS penalty
        asked = [prompts[idx[i]] for i in rollout.prompt_index.tolist()]
        raw, parts = total_reward(sources, asked, rollout.texts)
        raw = raw.to(device)
        scores = raw - cfg.missing_eos_penalty * (~rollout.finished).float()
        t_score = time.time() - t0 - t_generate

        # 4. log-probs of the sampling policy and of the reference, values, entropy; in
        # grad-accum chunks of rows, so the [tokens, vocab] logits never exceed an update's
        old_logps, ref_logps, old_values, entropy = _score_rollout(
            actor, reference, rollout, cfg.grad_accum, accelerator
        )

        # 5. per-token KL penalty; the score lands on the last response token
        kl = L.kl_estimate(old_logps, ref_logps, cfg.kl_estimator) * mask
        seq_kl = kl.sum(dim=1)
        last = (mask.sum(dim=1) - 1).long()
        if cfg.whiten_rewards or cfg.center_rewards:
            ones = torch.ones_like(scores)
            if cfg.whiten_rewards:
                scores = _whiten(scores, ones, accelerator, shift_mean=cfg.center_rewards)
            else:
                scores = scores - _global_means(accelerator, {"score": scores})["score"]

        # 6. advantages: GAE over the critic's values (PPO), or per-prompt baselines
        if cfg.algorithm == "ppo":
            rewards = -kl_ctl.coef * kl
            rewards[torch.arange(len(last)), last] += scores
            advantages, returns = L.gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
            advantages = _whiten(advantages, mask, accelerator)
        else:
            # the KL penalty joins the sequence's score; its advantage applies to every token
            penalised = scores - kl_ctl.coef * seq_kl
            baseline = L.rloo_advantages if cfg.algorithm == "rloo" else L.group_advantages
            advantages = baseline(penalised, cfg.k)[:, None] * mask
            returns = None
        t_prep = time.time() - t0 - t_generate - t_score

        # 7. PPO epochs x minibatches of clipped-surrogate updates
        lr_used = run.scheduler.get_last_lr()[0]
        sums: dict[str, float] = defaultdict(float)
        n_updates, stop = 0, False
        order_gen = torch.Generator().manual_seed(seed)
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(len(rollout.texts), generator=order_gen)
            for mb in order.chunk(cfg.minibatches):
                old = None if on_policy else old_logps
                found = _update(run, rollout, mb, old, old_values, advantages, returns, cfg)
                for k, v in found.items():
                    sums[k] += v
                n_updates += 1
                if cfg.max_approx_kl:  # every process must make the same call
                    approx = torch.tensor(found["approx_kl"], device=device)
                    stop = float(accelerator.reduce(approx, "mean")) > cfg.max_approx_kl
                    if stop:
                        break
            if stop:
                break
        for _ in range(updates - n_updates):  # keep the schedule's pace after an early stop
            run.scheduler.step()
        t_train = time.time() - t0 - t_generate - t_score - t_prep

        # 8. the KL controller, metrics (over all processes), the samples hook, checkpoint
        lengths = mask.sum(dim=1)
        totals = _global_means(
            accelerator,
            {
                "reward": raw,
                "score": scores,
                "reward_penalised": scores - kl_ctl.coef * seq_kl,
                "kl": seq_kl,
                "response_length": lengths.float(),
                "truncated_rate": (~rollout.finished).float(),
                **{f"reward/{name}": v.to(device) for name, v in parts.items()},
                **{
                    f"criteria/{c.name}": torch.tensor(
                        [float(c.detector.matches(t)) for t in rollout.texts], device=device
                    )
                    for c in criteria
                },
            },
        )
        kl_used = kl_ctl.coef
        kl_ctl.update(totals["kl"], len(rollout.texts) * accelerator.num_processes)
        run.state["kl_coef"] = kl_ctl.coef
        record = totals | {
            "kl_coef": kl_used,
            "entropy": entropy,
            "updates": float(n_updates),
            "train_tokens": float(rollout.attention_mask.sum()),
            "seconds_generate": t_generate,
            "seconds_score": t_score,
            "seconds_train": t_train + t_prep,
        }
        if returns is not None:
            record["explained_variance"] = _explained_variance(old_values, returns, mask)
        record |= {k: v / max(n_updates, 1) for k, v in sums.items() if k != "grad_norm"}
        grad_norm = sums.get("grad_norm", math.nan) / max(n_updates, 1)
        fired = []
        if monitor is not None:  # every process computes them; only the main one writes,
            flags = monitor.step(  # before the checkpoint, so that a kill loses no line
                asked,
                rollout.texts,
                raw.tolist(),
                kl=totals["kl"],
                entropy=entropy,
                criteria={c.name: totals[f"criteria/{c.name}"] for c in criteria},
            )
            record["monitor_flags"] = float(sum(f.flagged for f in flags))
            fired = _record_flags(flag_log, accelerator, step + 1, flags, flagged_before)
        last_record = run.end_step(step + 1, {}, (grad_norm, lr_used), extra=record)
        if monitor is not None:
            stop = torch.tensor(float(bool(fired) and cfg.stop_on_flag), device=device)
            if float(accelerator.reduce(stop, "sum")) > 0:  # every process stops together
                stopped_early = "reward-hacking monitor: " + (
                    "; ".join(f"{f.name} ({f.explanation})" for f in fired)
                    or "fired on another process"
                )
                break
        if on_samples is not None:
            reason = on_samples(step + 1, asked, rollout.texts, last_record)
            flag = torch.tensor(float(bool(reason)), device=device)
            if float(accelerator.reduce(flag, "sum")) > 0:  # the main process decides
                stopped_early = reason or "stopped by the monitor on the main process"
                break

    final = save_final(
        Path(cfg.output_dir),
        run.module,
        tok,
        cfg,
        cfg.algorithm,
        accelerator,
        examples=len(prompts),
        stopped_early=stopped_early,
    )
    _save_critic(accelerator.unwrap_model(run.module), final, accelerator, cfg)
    return TrainResult(final, last_record, 0, len(prompts), stopped_early)


def _score_rollout(actor: ActorCritic, reference, rollout: Rollout, chunks: int, accelerator):
    """Sampling-policy log-probs, reference log-probs, values [B, R] and the mean entropy.

    A rollout that carries the sampler's log-probs and entropies needs only the reference."""
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
                entropy_sum += float(L.entropy_from_logits(logits).sum())
                del logits
                logps[part] = to_padded(lp.float(), m)
                if v is not None:
                    values[part] = to_padded(v, m)
            refs[part] = to_padded(_reference_logps(actor, reference, sub).float(), m)
    entropy = torch.tensor([entropy_sum, float(mask.sum())], device=accelerator.device)
    entropy = accelerator.reduce(entropy, "sum")
    return logps, refs, values, float(entropy[0] / entropy[1].clamp(min=1))


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


def _whiten(x: torch.Tensor, mask: torch.Tensor, accelerator, shift_mean: bool = True):
    """Whitening with statistics over every process's entries (one process: L.masked_whiten)."""
    if accelerator.num_processes == 1:
        return L.masked_whiten(x, mask, shift_mean)
    stats = torch.stack([(x * mask).sum(), (x * x * mask).sum(), mask.sum()])
    s, sq, n = accelerator.reduce(stats.to(accelerator.device), "sum").to(x.device)
    mean = s / n
    var = (sq / n - mean**2) * n / (n - 1).clamp(min=1)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return (out if shift_mean else out + mean) * mask


def _global_means(accelerator, values: dict[str, torch.Tensor]) -> dict[str, float]:
    """The mean of each per-response tensor over every process's responses."""
    names = list(values)
    device = accelerator.device
    sums = torch.stack([values[n].float().sum().to(device) for n in names])
    count = torch.tensor([float(len(next(iter(values.values()))))], device=device)
    total = accelerator.reduce(torch.cat([sums, count]), "sum").cpu()
    return {n: float(total[i] / total[-1]) for i, n in enumerate(names)}


def _explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns): how much of the return the critic predicts."""
    var = L.masked_mean((returns - L.masked_mean(returns, mask)) ** 2, mask)
    resid = returns - values
    var_resid = L.masked_mean((resid - L.masked_mean(resid, mask)) ** 2, mask)
    return float(1 - var_resid / var) if var > 0 else float("nan")


def _check_layout(cfg: PPOConfig, accelerator) -> None:
    from accelerate.utils import DistributedType

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
    from safetensors.torch import save_file

    from rlhfkit.data.io import atomic_dir

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


def _live_monitor(cfg: PPOConfig, criteria: list):
    """The reward-hacking monitors over this run's steps (evaluate/monitors.py), with the
    thresholds of the project's [monitors]; the first step's samples are the reference."""
    if cfg.project is None or not cfg.monitor:
        return None
    from rlhfkit.evaluate.monitors import LiveMonitor
    from rlhfkit.project import load_project

    thresholds = load_project(cfg.project).spec.monitors
    return LiveMonitor(thresholds, {c.name: c.direction for c in criteria})


def _record_flags(log: MetricsLog, accelerator, step: int, flags: list, seen: set[str]) -> list:
    """Log the step's raised flags; return those newly fired (a flag that stays up is
    reported once, when it first fires)."""
    fired = [f for f in flags if f.flagged and f.name not in seen]
    seen.update(f.name for f in flags if f.flagged)
    if accelerator.is_main_process:
        log.write({"step": step, "flags": [f.to_json() for f in flags if f.flagged]})
    return fired


def _success_criteria(project: Path | None) -> list:
    if project is None:
        return []
    from rlhfkit.project import load_project

    # those decidable from the text alone: a reward-model or judge criterion would need a
    # model call per response per step (`eval policy` measures them)
    return [c for c in load_project(project).spec.success_criteria if c.text_only]
