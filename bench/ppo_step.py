"""rlhfkit's stage 3 on SmolLM2-135M-Instruct: a PPO step's time and where it goes, rollout
speed against plain `model.generate`, training-phase MFU, and RLOO against TRL 1.16's
`RLOOTrainer` with matched settings — same machine, one run.

Settings: a fixed batch of support-reply prompts (the demo's), a rule reward (signs off with
the team's sign-off, minus hedging), LoRA r=16 on all linear layers, fp32 (or --precision).
Each training configuration runs in its own subprocess; step times are medians after one
warm-up step.

    .venv/bin/python bench/ppo_step.py            # about 15 minutes on 2 CPU cores
    .venv/bin/python bench/ppo_step.py --quick    # fewer steps, shorter responses

The last line printed is one JSON object with the raw figures and the headline ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainers_vs_trl import matmul_peak  # bench/ is the script's folder, on sys.path

MODEL = "smollm2-135m-instruct"
N_PARAMS = 134_515_008  # SmolLM2-135M, embeddings tied
HEDGES = ("i think", "maybe", "perhaps", "possibly", "might")


def reward(prompts, responses) -> list[float]:
    """The rule reward both tools get: +1 for the sign-off, -0.5 per hedging phrase."""
    out = []
    for r in responses:
        text = r if isinstance(r, str) else r[-1]["content"]  # TRL passes chat messages
        low = text.lower()
        out.append(float("Best regards" in text) - 0.5 * sum(low.count(h) for h in HEDGES))
    return out


def trl_reward(completions, **kwargs) -> list[float]:
    return reward(kwargs.get("prompts"), completions)


def prompts(n: int) -> list[dict]:
    from rlhfkit.templates.support_replies import build

    return [{"prompt": row["prompt"]} for row in build()[0][:n]]


# --- one configuration, in its own process --------------------------------------------------


def run_rlhfkit(spec: dict) -> dict:
    from rlhfkit.train.configs import PPOConfig
    from rlhfkit.train.ppo import train_ppo

    work = Path(spec["work"])
    records: list[dict] = []
    cfg = PPOConfig(
        model=MODEL,
        data=work / "prompts.jsonl",
        output_dir=work / "out",
        reward=[f"{Path(__file__).resolve()}:reward"],
        algorithm=spec["algorithm"],
        batch_size=spec["prompts"],
        k=spec["k"],
        max_new_tokens=spec["max_new_tokens"],
        max_steps=spec["steps"],
        ppo_epochs=spec["ppo_epochs"],
        learning_rate=1e-5,
        precision=spec["precision"],
        lora=True,
        save_every=0,
        kl_coef=0.05,
    )
    started = time.perf_counter()
    train_ppo(cfg, lambda step, total, m: records.append(m))
    return {"records": records, "wall_seconds": time.perf_counter() - started}


def run_trl_rloo(spec: dict) -> dict:
    import warnings

    import datasets
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import RLOOConfig, RLOOTrainer

    from rlhfkit.models import load_model

    work = Path(spec["work"])
    rows = [json.loads(line) for line in (work / "prompts.jsonl").read_text().splitlines()]
    step_seconds: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            step_seconds.append(time.perf_counter() - self.t)

    model, tok = load_model(MODEL)
    completions = spec["prompts"] * spec["k"]
    args = dict(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=completions,
        num_generations=spec["k"],
        max_completion_length=spec["max_new_tokens"],
        max_steps=spec["steps"],
        learning_rate=1e-5,
        beta=0.05,
        temperature=0.9,
        top_p=1.0,
        top_k=0,
        bf16=spec["precision"] == "bf16",
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1000,
        dataloader_num_workers=0,
    )
    if spec["tool"] == "trl_tuned":
        args["gradient_checkpointing"] = False
    lora = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        task_type="CAUSAL_LM",
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = RLOOTrainer(
            model=model,
            reward_funcs=trl_reward,
            args=RLOOConfig(**args),
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tok,
            peft_config=lora,
            callbacks=[Timer()],
        )
        trainer.train()
    return {"step_seconds": step_seconds, "wall_seconds": time.perf_counter() - started}


def run_rollout_vs_generate(spec: dict) -> dict:
    """The same batch through rlhfkit's rollout (as `train ppo` runs it with LoRA: refresh the
    merged copy, then sample) and through plain `generate` on the same LoRA policy; plain
    `generate` on the bare base model is reported too, as the floor."""
    import copy

    import torch

    from rlhfkit.models import load_model
    from rlhfkit.train.configs import PPOConfig
    from rlhfkit.train.loop import prepare_model
    from rlhfkit.train.rollout import MergedCopy, left_pad, sample_rollout
    from rlhfkit.train.tokenize import token_ids

    model, tok = load_model(MODEL)
    base = copy.deepcopy(model).eval()
    merged = MergedCopy(copy.deepcopy(model))
    policy = prepare_model(model, PPOConfig(lora=True))  # as train ppo holds it
    with torch.no_grad():  # a trained adapter, not the all-zero one LoRA starts with
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 1e-3)
    policy.eval()
    rows = prompts(spec["prompts"])
    ids = [token_ids(tok, r["prompt"], generation_prompt=True) for r in rows]
    n, k = spec["max_new_tokens"], spec["k"]

    def plain(model) -> int:
        x, mask = left_pad(ids, tok.pad_token_id)
        torch.manual_seed(0)
        with torch.no_grad():
            out = model.generate(
                input_ids=x,
                attention_mask=mask,
                do_sample=True,
                temperature=0.9,
                top_p=1.0,
                top_k=None,
                max_new_tokens=n,
                num_return_sequences=k,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        new = out[:, x.shape[1] :]
        is_eos = new == tok.eos_token_id  # counted as rollouts count: up to and including EOS
        return int(((torch.cumsum(is_eos.long(), 1) - is_eos.long()) == 0).sum())

    def ours() -> int:
        r = sample_rollout(merged.refresh(policy), tok, ids, k, n, 0.9, 1.0, 0)
        return int(r.response_mask.sum())

    runs = {"plain": lambda: plain(policy), "ours": ours, "plain_base_model": lambda: plain(base)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    tokens: dict[str, int] = {}
    for _ in range(spec["repeats"]):
        for name, fn in runs.items():  # interleaved: fair to all
            start = time.perf_counter()
            tokens[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {
        name: {
            "seconds": statistics.median(t),
            "tokens": tokens[name],
            "tokens_per_s": tokens[name] / statistics.median(t),
        }
        for name, t in times.items()
    }


def one(spec: dict) -> dict:
    import torch

    torch.manual_seed(0)
    if spec["tool"] == "rlhfkit":
        return run_rlhfkit(spec)
    if spec["tool"] == "rollout":
        return run_rollout_vs_generate(spec)
    return run_trl_rloo(spec)


# --- the whole benchmark --------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, shorter responses")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one))))
        return

    from rlhfkit.models import pull
    from rlhfkit.train.loop import resolve_precision

    precision = resolve_precision(args.precision)
    pull(MODEL)
    peak = matmul_peak(precision)
    steps, new_tokens = (3, 32) if args.quick else (4, 48)
    base = {"precision": precision, "steps": steps, "max_new_tokens": new_tokens}
    plan = {
        "rollout": base | {"tool": "rollout", "prompts": 8, "k": 1, "repeats": 3},
        "ppo": base
        | {"tool": "rlhfkit", "algorithm": "ppo", "prompts": 8, "k": 1, "ppo_epochs": 2},
        "rloo_rlhfkit": base
        | {"tool": "rlhfkit", "algorithm": "rloo", "prompts": 4, "k": 4, "ppo_epochs": 1},
        "rloo_trl_default": base | {"tool": "trl_default", "prompts": 4, "k": 4},
    }
    if not args.quick:
        plan["rloo_trl_tuned"] = base | {"tool": "trl_tuned", "prompts": 4, "k": 4}

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in plan.items():
            work = Path(tmp) / name
            work.mkdir()
            n_rows = spec["prompts"] * (spec["steps"] + 1)
            (work / "prompts.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in prompts(n_rows))
            )
            spec = spec | {"work": str(work)}
            print(f"running {name} ...", file=sys.stderr, flush=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--one", json.dumps(spec)],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{name} failed")
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"  {json.dumps(summarise(name, results[name]))[:300]}", file=sys.stderr)

    ppo = results["ppo"]["records"][1:]  # after the warm-up step
    seconds = {
        k: statistics.median(r[k] for r in ppo)
        for k in ("seconds", "seconds_generate", "seconds_score", "seconds_train")
    }
    # Training phase: the no-grad passes (policy + reference) over the rollout, then
    # ppo_epochs x (forward + backward); with LoRA the frozen weights need no weight
    # gradient, so a training pass is 4·N·tokens rather than 6·N·tokens.
    train_tokens = statistics.median(r["train_tokens"] for r in ppo)
    epochs = plan["ppo"]["ppo_epochs"]
    flops = (2 + 2) * N_PARAMS * train_tokens + epochs * 4 * N_PARAMS * train_tokens
    train_mfu = flops / seconds["seconds_train"] / (peak * 1e12)

    rollout = results["rollout"]
    rloo = statistics.median(r["seconds"] for r in results["rloo_rlhfkit"]["records"][1:])
    trl_default = statistics.median(results["rloo_trl_default"]["step_seconds"][1:])
    summary = {
        "machine": {"matmul_tflops": {precision: peak}},
        "settings": {
            "model": MODEL,
            "lora_r": 16,
            **base,
            "ppo_prompts": 8,
            "rloo_prompts": 4,
            "rloo_k": 4,
        },
        "results": results,
        "ppo_step_seconds": seconds,
        "ppo_train_tokens": train_tokens,
        "rollout_tokens_per_s": rollout["ours"]["tokens_per_s"],
        "generate_tokens_per_s": rollout["plain"]["tokens_per_s"],
        "generate_base_model_tokens_per_s": rollout["plain_base_model"]["tokens_per_s"],
        "rollout_speed_vs_generate": rollout["ours"]["tokens_per_s"]
        / rollout["plain"]["tokens_per_s"],
        "train_mfu": train_mfu,
        "rloo_step_seconds": rloo,
        "trl_rloo_step_seconds": trl_default,
        "rloo_speedup_vs_trl": trl_default / rloo,
    }
    if "rloo_trl_tuned" in results:
        tuned = statistics.median(results["rloo_trl_tuned"]["step_seconds"][1:])
        summary |= {"trl_tuned_rloo_step_seconds": tuned, "rloo_speedup_vs_trl_tuned": tuned / rloo}
    print(json.dumps(summary))


def summarise(name: str, r: dict) -> dict:
    if "records" in r:
        return {"step_seconds": [round(x["seconds"], 2) for x in r["records"]]}
    if "step_seconds" in r:
        return {"step_seconds": [round(x, 2) for x in r["step_seconds"]]}
    return r


if __name__ == "__main__":
    main()
