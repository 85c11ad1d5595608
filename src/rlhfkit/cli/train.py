"""`rlhfkit train sft|rm|ppo|dpo`."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from rlhfkit import strict_json
from rlhfkit.callables import load_callable
from rlhfkit.cli.common import StepProgress, console
from rlhfkit.cli.configs import config_options
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


def _command(
    stage: str, config_cls: type, target: str, required: tuple[str, ...] = ("data",)
) -> Callable[..., None]:
    """`rlhfkit train STAGE`: options from the config class. With --project, what the options
    leave out comes from the spec's [train.*] table (composed as `rlhfkit run` composes it),
    then from the class's defaults."""
    run = _train(stage, _lazy(target))
    own = (*required, "project", "model", "output_dir", "resume")  # never in [train.*]
    from_spec = tuple(f.name for f in dataclasses.fields(config_cls) if f.name not in own)

    def command(settings: dict[str, Any]) -> None:
        given = {k: v for k, v in settings.items() if v is not None}
        if given.get("project") is not None:
            # lazy: pydantic and the project spec
            from rlhfkit.pipeline.compose import train_config
            from rlhfkit.project import load_project

            run(train_config(stage, load_project(given["project"]), **given))
        else:
            run(config_cls(**given))

    return config_options(config_cls, required, from_spec=from_spec)(command)


def _register() -> None:
    sft = _command("sft", SFTConfig, "rlhfkit.train.sft:train_sft")
    sft.__doc__ = """Stage 1: supervised fine-tuning on (prompt, ideal response) data.

    The loss is the likelihood of completion tokens only (the prompt is masked); chat
    templates are applied to conversational data. Data: prompt/completion or messages rows.
    With --project, settings not given as options come from the spec's [train.sft].
    """
    rm = _command("rm", RewardConfig, "rlhfkit.train.reward:train_reward")
    rm.__doc__ = """Stage 2: a reward model (scalar head, Bradley–Terry loss) on preference pairs.

    Check it on held-out pairs with `rlhfkit eval rm` before trusting it. With --project,
    settings not given as options come from the spec's [train.reward].
    """
    dpo = _command("dpo", DPOConfig, "rlhfkit.train.dpo:train_dpo")
    dpo.__doc__ = """Direct preference optimisation: learn from preference pairs without a reward
    model or an RL loop. Reference log-probs are computed once and cached on disk. With
    --project, settings not given as options come from the spec's [train.dpo].
    """
    ppo = _command("ppo", PPOConfig, "rlhfkit.train.ppo:train_ppo", ("data", "reward"))
    ppo.__doc__ = """Stage 3: optimise the policy against a reward with a KL penalty to where it
    started — PPO with a critic, or the critic-free RLOO / GRPO (--algorithm).

    Rewards: a reward model from `train rm` and/or FILE.py:FUNCTION rules, weighted with @W.
    Watch kl and response_length as well as reward: a reward that climbs while the responses
    grow or stop changing in the way you wanted is the classic sign of reward hacking. With
    --project, settings not given as options come from the spec's [train.ppo].
    """
    app.command("sft")(sft)
    app.command("rm")(rm)
    app.command("ppo")(ppo)
    app.command("dpo")(dpo)


_register()
