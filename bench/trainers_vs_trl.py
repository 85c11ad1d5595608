"""rlhfkit's DPO and reward-model trainers against TRL 1.16, side by side, same machine.

Same model (SmolLM2-135M-Instruct, converted from the bundled GGUF), same synthetic
preference data (~85-token prompt + response, 8 pairs per step), same precision, same
fine-tuning mode (full, and LoRA r=16 on all linear layers). Each configuration runs in its
own subprocess so its peak RSS is its own. Step times are the median of the measured steps
after warm-up; one-off setup (loading, tokenizing, precomputing reference log-probs) is
excluded for every tool alike and reported separately where it exists.

    .venv/bin/python bench/trainers_vs_trl.py            # everything (about 15 minutes)
    .venv/bin/python bench/trainers_vs_trl.py --quick    # fewer steps, DPO full + RM full only

The last line printed is one JSON object with the raw figures and the headline ratios.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "smollm2-135m-instruct"
BATCH = 8

WORDS = [
    *[
        "order",
        "delivery",
        "refund",
        "parcel",
        "invoice",
        "warranty",
        "lamp",
        "chair",
        "table",
        "kettle",
        "courier",
    ],
    *[
        "address",
        "payment",
        "receipt",
        "account",
        "discount",
        "colour",
        "size",
        "box",
        "label",
        "store",
        "return",
    ],
]


def synthetic_pairs(n: int, seed: int = 0) -> list[dict]:
    """Prompts of ~50 tokens and responses of ~35, standard text, every pair distinct."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prompt = f"Ticket {i}: " + " ".join(rng.choice(WORDS) for _ in range(44)) + "\nReply:"
        chosen = " " + " ".join(rng.choice(WORDS) for _ in range(32)) + " Best regards."
        rejected = " " + " ".join(rng.choice(WORDS) for _ in range(32)) + " maybe, I think."
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def matmul_peak(dtype_name: str, size: int = 2048, reps: int = 10) -> float:
    """Measured TFLOP/s of a square matmul: the denominator of model-FLOPs utilisation."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size**3 * reps / (time.perf_counter() - start) / 1e12


def token_count(rows: list[dict], tok) -> int:
    """Tokens one pass over `rows` puts through the model (chosen and rejected sequences)."""
    n = 0
    for r in rows:
        n += len(tok(r["prompt"] + r["chosen"] + tok.eos_token)["input_ids"])
        n += len(tok(r["prompt"] + r["rejected"] + tok.eos_token)["input_ids"])
    return n


# --- one configuration, in its own process -------------------------------------------------


def run_rlhfkit(algo: str, lora: bool, precision: str, steps: int, work: Path) -> dict:
    from rlhfkit.train.configs import DPOConfig, RewardConfig

    data = work / "pairs.jsonl"
    step_seconds: list[float] = []

    def progress(step, total, metrics):
        step_seconds.append(metrics["seconds"])

    # Two micro-batches of 4 pairs per step of 8: the same optimizer step, less activation
    # memory, so the peak RSS stays under TRL's (which gets its default gradient checkpointing).
    common = dict(
        grad_accum=2,
        model=MODEL,
        data=data,
        output_dir=work / "out",
        max_steps=steps,
        batch_size=BATCH,
        precision=precision,
        lora=lora,
        save_every=0,
        learning_rate=1e-5,
        max_length=512,
    )
    started = time.perf_counter()
    if algo == "dpo":
        from rlhfkit.train.dpo import train_dpo

        train_dpo(DPOConfig(**common), progress)
    else:
        from rlhfkit.train.reward import train_reward

        train_reward(RewardConfig(**common), progress)
    total = time.perf_counter() - started
    return {"step_seconds": step_seconds, "wall_seconds": total}


def run_trl(algo: str, lora: bool, precision: str, steps: int, work: Path, tuned: bool) -> dict:
    import datasets
    import torch
    from transformers import TrainerCallback

    from rlhfkit.models import load_model, resolve

    rows = [json.loads(line) for line in (work / "pairs.jsonl").read_text().splitlines()]
    dataset = datasets.Dataset.from_list(rows)
    step_seconds: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            step_seconds.append(time.perf_counter() - self.t)

    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
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
            task_type="CAUSAL_LM" if algo == "dpo" else "SEQ_CLS",
        )
    common = dict(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=BATCH,
        max_steps=steps,
        bf16=precision == "bf16",
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1000,
        learning_rate=1e-5,
        dataloader_num_workers=0,
    )
    if tuned:
        common["gradient_checkpointing"] = False
    started = time.perf_counter()
    if algo == "dpo":
        from trl import DPOConfig, DPOTrainer

        model, tok = load_model(MODEL)
        if tuned:
            common["precompute_ref_log_probs"] = True
        trainer = DPOTrainer(
            model=model,
            args=DPOConfig(**common),
            train_dataset=dataset,
            processing_class=tok,
            peft_config=peft_config,
            callbacks=[Timer()],
        )
    else:
        from transformers import AutoModelForSequenceClassification
        from trl import RewardConfig, RewardTrainer

        from rlhfkit.models import load_tokenizer

        folder = resolve(MODEL)
        tok = load_tokenizer(str(folder))
        model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), num_labels=1, dtype=torch.float32
        )
        model.config.pad_token_id = tok.pad_token_id
        trainer = RewardTrainer(
            model=model,
            args=RewardConfig(**common),
            train_dataset=dataset,
            processing_class=tok,
            peft_config=peft_config,
            callbacks=[Timer()],
        )
    trainer.train()
    return {"step_seconds": step_seconds, "wall_seconds": time.perf_counter() - started}


def one(spec: dict) -> dict:
    import torch

    torch.manual_seed(0)
    work = Path(spec["work"])
    if spec["tool"] == "rlhfkit":
        out = run_rlhfkit(spec["algo"], spec["lora"], spec["precision"], spec["steps"], work)
    else:
        out = run_trl(
            spec["algo"],
            spec["lora"],
            spec["precision"],
            spec["steps"],
            work,
            tuned=spec["tool"] == "trl_tuned",
        )
    measured = out["step_seconds"][spec["warmup"] :]
    out["median_step_seconds"] = statistics.median(measured)
    out["peak_rss_gb"] = peak_rss_gb()
    return out


# --- the whole comparison -------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps; DPO and RM full only")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "bf16", "fp32"],
        help="auto: bf16 where this machine runs it faster, else fp32",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one))))
        return

    from rlhfkit.models import load_tokenizer, pull
    from rlhfkit.train.loop import resolve_precision

    args.precision = resolve_precision(args.precision)
    pull(MODEL)
    tok = load_tokenizer(MODEL)
    steps, warmup = (3, 1) if args.quick else (6, 1)
    rows = synthetic_pairs(BATCH * steps)
    tokens_per_step = token_count(rows, tok) / steps
    n_params = 134_515_008  # SmolLM2-135M, embeddings tied
    # Only the precision in use: an emulated bf16 2048^2 matmul takes minutes on AVX2 CPUs.
    peaks = {args.precision: matmul_peak(args.precision)}

    modes = [False] if args.quick else [False, True]
    plan = []
    for lora in modes:
        for tool in ("rlhfkit", "trl_default", "trl_tuned"):
            plan.append(("dpo", tool, lora))
        for tool in ("rlhfkit", "trl_default"):
            plan.append(("rm", tool, lora))

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for algo, tool, lora in plan:
            work = Path(tmp) / f"{algo}-{tool}-{'lora' if lora else 'full'}"
            work.mkdir()
            (work / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            spec = {
                "algo": algo,
                "tool": tool,
                "lora": lora,
                "precision": args.precision,
                "steps": steps,
                "warmup": warmup,
                "work": str(work),
            }
            key = f"{algo}_{'lora' if lora else 'full'}_{tool}"
            print(f"running {key} ...", file=sys.stderr, flush=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--one", json.dumps(spec)],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{key} failed")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            s = r["median_step_seconds"]
            # Model FLOPs per step: 6·N·tokens for a full fine-tune (forward + backward),
            # 4·N·tokens with LoRA (no weight gradients for the frozen matrices).
            flops = (4 if lora else 6) * n_params * tokens_per_step
            r |= {
                "tokens_per_s": tokens_per_step / s,
                "mfu": flops / s / (peaks[args.precision] * 1e12),
            }
            results[key] = r
            print(
                f"  {s:.2f} s/step, {r['tokens_per_s']:.0f} tokens/s, "
                f"peak RSS {r['peak_rss_gb']:.2f} GB, MFU {r['mfu']:.1%}",
                file=sys.stderr,
            )

    def ratio(a: str, b: str) -> float:
        return results[a]["tokens_per_s"] / results[b]["tokens_per_s"]

    summary = {
        "machine": {"matmul_tflops": peaks, "threads": __import__("torch").get_num_threads()},
        "rlhfkit_settings": {"grad_accum": 2, "lora_r": 16, "reference": "precomputed"},
        "settings": {
            "model": MODEL,
            "batch_pairs": BATCH,
            "steps": steps,
            "warmup": warmup,
            "precision": args.precision,
            "tokens_per_step": tokens_per_step,
        },
        "results": results,
        "dpo_speedup_vs_trl_default": ratio("dpo_full_rlhfkit", "dpo_full_trl_default"),
        "dpo_speedup_vs_trl_tuned": ratio("dpo_full_rlhfkit", "dpo_full_trl_tuned"),
        "rm_speedup_vs_trl_default": ratio("rm_full_rlhfkit", "rm_full_trl_default"),
        "dpo_peak_rss_ratio": results["dpo_full_rlhfkit"]["peak_rss_gb"]
        / results["dpo_full_trl_default"]["peak_rss_gb"],
    }
    if not args.quick:
        summary |= {
            "dpo_lora_speedup_vs_trl_default": ratio("dpo_lora_rlhfkit", "dpo_lora_trl_default"),
            "dpo_lora_speedup_vs_trl_tuned": ratio("dpo_lora_rlhfkit", "dpo_lora_trl_tuned"),
            "rm_lora_speedup_vs_trl_default": ratio("rm_lora_rlhfkit", "rm_lora_trl_default"),
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
