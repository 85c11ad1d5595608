"""Does a short DPO run on SmolLM2 move a behavior? Measured, not assumed.

The preference is synthetic and clear: for customer emails from the bundled example
project, `chosen` is the ideal reply ending with the team's sign-off and `rejected` is the
same reply without it. After a short LoRA DPO run, replies to *held-out* emails are sampled
from the model before and after, and the sign-off rate (the example project's `signs_off`
success criterion) is compared with a two-proportion z-test.

    .venv/bin/python bench/dpo_behavior.py            # ~10 minutes on 2 CPU cores
    .venv/bin/python bench/dpo_behavior.py --steps 10 --eval 16

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path


def two_proportion_p(hits_a: int, n_a: int, hits_b: int, n_b: int) -> float:
    """Two-sided p-value of H0: equal rates (pooled two-proportion z-test)."""
    pooled = (hits_a + hits_b) / (n_a + n_b)
    if pooled in (0.0, 1.0):
        return 1.0
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z = (hits_b / n_b - hits_a / n_a) / se
    return math.erfc(abs(z) / math.sqrt(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=96, help="training pairs")
    parser.add_argument("--steps", type=int, default=24, help="DPO optimizer steps")
    parser.add_argument("--eval", type=int, default=48, help="held-out emails to sample")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()

    from rlhfkit.criteria import RegexDetector
    from rlhfkit.generate import SamplingConfig, generate_candidates
    from rlhfkit.templates.support_replies import SIGN_OFF, build
    from rlhfkit.train.configs import DPOConfig
    from rlhfkit.train.dpo import train_dpo

    _, eval_prompts, sft = build()
    detector = RegexDetector(
        kind="regex",
        pattern=r"(regards|sincerely|best wishes|thank you|thanks),?\s*(\n[^\n]{0,60})?\s*$",
    )
    pairs = []
    for row in sft[: args.pairs]:
        ideal = row["completion"][0]["content"]
        bare = ideal.removesuffix("\n\n" + SIGN_OFF)
        pairs.append(
            {
                "prompt": row["prompt"],
                "chosen": [{"role": "assistant", "content": ideal}],
                "rejected": [{"role": "assistant", "content": bare}],
            }
        )

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
        (work / "eval.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in eval_prompts[: args.eval])
        )
        # n=2 samples per held-out email, at the project's temperature.
        sampling = SamplingConfig(
            n=2, temperature=0.9, top_p=0.95, max_new_tokens=args.max_new_tokens, seed=1
        )

        def rates(model: str, name: str) -> dict:
            started = time.time()
            result = generate_candidates(
                model, work / "eval.jsonl", work / f"{name}.jsonl", sampling
            )
            replies = [t for group in result.responses for t in group]
            hits = sum(detector.matches(t) for t in replies)
            words = sum(len(t.split()) for t in replies) / len(replies)
            print(
                f"{name}: sign-off {hits}/{len(replies)}, {words:.0f} words, "
                f"{time.time() - started:.0f} s",
                file=sys.stderr,
            )
            return {
                "hits": hits,
                "n": len(replies),
                "rate": hits / len(replies),
                "mean_words": words,
                "example": replies[0],
            }

        before = rates("smollm2-135m-instruct", "before")
        started = time.time()
        result = train_dpo(
            DPOConfig(
                model="smollm2-135m-instruct",
                data=work / "pairs.jsonl",
                output_dir=work / "dpo",
                max_steps=args.steps,
                batch_size=8,
                learning_rate=2e-4,
                beta=0.1,
                lora=True,
                save_every=0,
            ),
            lambda s, t, m: print(
                f"step {s}/{t} loss {m['loss']:.3f} acc {m['rewards/accuracy']:.2f}",
                file=sys.stderr,
            ),
        )
        train_seconds = time.time() - started
        after = rates(str(result.final), "after")

    print(
        json.dumps(
            {
                "criterion": "signs_off",
                "before": before,
                "after": after,
                "p_value": two_proportion_p(before["hits"], before["n"], after["hits"], after["n"]),
                "train_seconds": train_seconds,
                "steps": args.steps,
                "pairs": args.pairs,
                "last_step": result.last,
            }
        )
    )


if __name__ == "__main__":
    main()
