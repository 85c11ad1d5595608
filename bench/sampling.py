"""rlhfkit's decoder (`rlhfkit.decode`) against plain `model.generate` on the same batch: the
demo's candidate sampling at one batch of 24 support emails x 4 replies (the demo itself
samples 72 rows from the SFT model, then 24 from the starting model; up to 80 new tokens,
temperature 0.9, top-p 0.95) on SmolLM2-135M-Instruct, in fp32 and with bf16 weights, same
machine, one run, interleaved repeats.

    .venv/bin/python bench/sampling.py             # about 6 minutes on 2 CPU cores
    .venv/bin/python bench/sampling.py --quick     # 8 emails, 32 tokens, one repeat

Tokens are counted as the rollouts count them: up to and including each reply's EOS. Both
sample the same distribution with different random streams, so their replies (and lengths)
differ; the figure compared is generated tokens per second. The last line printed is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    n_prompts, max_new, repeats = (8, 32, 1) if args.quick else (24, 80, args.repeats)

    import torch

    from rlhfkit.decode import decode
    from rlhfkit.models import load_model
    from rlhfkit.templates.support_replies import build
    from rlhfkit.train.rollout import left_pad
    from rlhfkit.train.tokenize import token_ids

    model, tok = load_model("smollm2-135m-instruct")
    model.eval()
    prompts = [r["prompt"] for r in build()[0][:n_prompts]]
    x, mask = left_pad(
        [token_ids(tok, p, generation_prompt=True) for p in prompts], tok.pad_token_id
    )
    k, temperature, top_p = 4, 0.9, 0.95

    def counted(new: torch.Tensor) -> int:
        is_eos = new == tok.eos_token_id
        return int(((torch.cumsum(is_eos.long(), 1) - is_eos.long()) == 0).sum())

    def plain(m) -> int:
        torch.manual_seed(0)
        with torch.no_grad():
            out = m.generate(
                input_ids=x,
                attention_mask=mask,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=None,
                max_new_tokens=max_new,
                num_return_sequences=k,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        return counted(out[:, x.shape[1] :])

    def ours(m) -> int:
        out = decode(
            m, x, mask, k=k, max_new_tokens=max_new, temperature=temperature, top_p=top_p,
            eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, seed=0,
        )  # fmt: skip
        return counted(out.tokens)

    results = {}
    for dtype in ("fp32", "bf16"):
        m = model if dtype == "fp32" else model.to(torch.bfloat16)
        runs = {"generate": plain, "rlhfkit": ours}
        times: dict[str, list[float]] = {name: [] for name in runs}
        tokens: dict[str, int] = {}
        for _ in range(repeats):
            for name, fn in runs.items():  # interleaved: a busy moment hits both alike
                start = time.perf_counter()
                tokens[name] = fn(m)
                times[name].append(time.perf_counter() - start)
        found = {
            name: {
                "seconds": statistics.median(t),
                "tokens": tokens[name],
                "tokens_per_s": tokens[name] / statistics.median(t),
            }
            for name, t in times.items()
        }
        found["speedup"] = found["rlhfkit"]["tokens_per_s"] / found["generate"]["tokens_per_s"]
        results[dtype] = found
        print(f"{dtype}: {json.dumps(found)}", flush=True)
    print(
        json.dumps(
            {
                "settings": {
                    "model": "smollm2-135m-instruct",
                    "prompts": n_prompts,
                    "k": k,
                    "max_new_tokens": max_new,
                    "temperature": temperature,
                    "top_p": top_p,
                    "repeats": repeats,
                    "threads": torch.get_num_threads(),
                    "native_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
                },
                **results,
            }
        )
    )


if __name__ == "__main__":
    main()
