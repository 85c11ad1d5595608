"""`rlhfkit train sft|rm|ppo|dpo`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from rlhfkit import strict_json
from rlhfkit.callables import load_callable
from rlhfkit.cli.common import StepProgress, console
from rlhfkit.cli.configs import command_from_config
from rlhfkit.errors import display_path

# Config classes import only the standard library, so --help stays fast.
from rlhfkit.train.configs import DPOConfig, LoopConfig, PPOConfig, RewardConfig, SFTConfig

app = typer.Typer(
    help="Train: SFT (stage 1), a reward model (stage 2), PPO/RLOO/GRPO (stage 3), or DPO.",
    no_args_is_help=True,
)


def _train(label: str, train: Callable[[Any, Any], Any]) -> Callable[[LoopConfig], None]:
    def run(cfg: LoopConfig) -> None:
        # lazy: evaluate/criteria.py pulls in torch (reward-model detectors)
        from rlhfkit.evaluate.criteria import freeze_for_training

        freeze_for_training(cfg)  # a project's first training stage freezes its criteria
        started = time.time()
        with StepProgress(label, "loading model and data") as progress:
            result = train(cfg, progress)
        if int(os.environ.get("RANK", "0")) != 0:
            return  # under `accelerate launch`, the main process reports
        console.print(
            f"{label}: {result.examples} examples, {time.time() - started:.0f} s; "
            f"model in {display_path(result.final)}; metrics in "
            f"{display_path(Path(cfg.output_dir) / 'metrics.jsonl')}"
        )
        if result.stopped_early:
            console.print(f"[yellow]stopped early:[/yellow] {result.stopped_early}")
        if result.truncated:
            console.print(f"note: {result.truncated} completions were cut at --max-length")
        if result.last:
            console.print(
                "last step: "
                + strict_json.dumps(
                    strict_json.nulled({k: round(v, 4) for k, v in result.last.items()})
                )
            )

    return run


def _lazy(target: str) -> Callable[[Any, Any], Any]:
    """A trainer named `module:function`, imported when it runs: torch stays out of --help."""

    def call(cfg, progress):
        return load_callable(target, "trainer")(cfg, progress)

    return call


def _register() -> None:
    sft = command_from_config(
        SFTConfig, _train("sft", _lazy("rlhfkit.train.sft:train_sft")), required=("data",)
    )
    sft.__doc__ = """Stage 1: supervised fine-tuning on (prompt, ideal response) data.

    The loss is the likelihood of completion tokens only (the prompt is masked); chat
    templates are applied to conversational data. Data: prompt/completion or messages rows.
    """
    rm = command_from_config(
        RewardConfig,
        _train("rm", _lazy("rlhfkit.train.reward:train_reward")),
        required=("data",),
    )
    rm.__doc__ = """Stage 2: a reward model (scalar head, Bradley–Terry loss) on preference pairs.

    Check it on held-out pairs with `rlhfkit eval rm` before trusting it.
    """
    dpo = command_from_config(
        DPOConfig, _train("dpo", _lazy("rlhfkit.train.dpo:train_dpo")), required=("data",)
    )
    dpo.__doc__ = """Direct preference optimisation: learn from preference pairs without a reward
    model or an RL loop. Reference log-probs are computed once and cached on disk.
    """
    ppo = command_from_config(
        PPOConfig,
        _train("ppo", _lazy("rlhfkit.train.ppo:train_ppo")),
        required=("data", "reward"),
    )
    ppo.__doc__ = """Stage 3: optimise the policy against a reward with a KL penalty to where it
    started — PPO with a critic, or the critic-free RLOO / GRPO (--algorithm).

    Rewards: a reward model from `train rm` and/or FILE.py:FUNCTION rules, weighted with @W.
    Watch kl and response_length as well as reward: a reward that climbs while the responses
    grow or stop changing in the way you wanted is the classic sign of reward hacking.
    """
    app.command("sft")(sft)
    app.command("rm")(rm)
    app.command("ppo")(ppo)
    app.command("dpo")(dpo)


_register()
