"""`rlhfkit demo`: the bundled example through the whole governed RLHF loop."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rlhfkit.choices import PRECISIONS, one_of
from rlhfkit.cli.common import console, err_console
from rlhfkit.errors import UserError, display_path
from rlhfkit.lineage import sha256_file

STAGES = (
    ("project", "scaffold the example project"),
    ("model", "provision the base model"),
    ("sft", "stage 1: supervised fine-tuning (LoRA)"),
    ("candidates", "sample candidate reply pairs"),
    ("annotation", "simulated panel labels through the annotation app"),
    ("rm", "stage 2: reward model + eval rm"),
    ("ppo", "stage 3: PPO with a KL penalty"),
    ("dpo", "DPO on the same preferences"),
    ("eval_ppo", "eval policy: PPO vs the SFT model"),
    ("eval_dpo", "eval policy: DPO vs the SFT model"),
    ("report", "the report and summary.json"),
)


def demo(
    directory: Path = typer.Option(
        None, "--dir", help="Run folder (default: runs/demo, or runs/demo-quick with --quick)."
    ),
    quick: bool = typer.Option(False, help="Smaller everything, same stages (2 to 5 minutes)."),
    seed: int = typer.Option(
        0, help="Added to every seed of the run: another seed is another run of the experiment."
    ),
    precision: str = typer.Option(
        "auto",
        help="Training and candidate sampling in bf16, fp32, or auto: bf16 where this machine "
        "runs it faster (CPUs with AVX512-BF16 or AMX, GPUs). fp32 gives the same numbers on "
        "every machine, slower. The evaluations always run in fp32.",
    ),
    model: str = typer.Option(
        None, hidden=True, help="Base model instead of the project's (tests: tiny-random)."
    ),
) -> None:
    """Run the whole loop on the bundled support-replies project with SmolLM2-135M-Instruct.

    SFT on the team's past replies, sampling candidate pairs, a SIMULATED annotator panel
    labelling them through the real annotation app (calibration round, agreement gate,
    anchors, overlap), a reward model checked on held-out pairs, PPO with a KL penalty and
    DPO on the same preferences, a before/after evaluation of both against the SFT model
    on held-out prompts, and the HTML report with summary.json beside it.

    Interrupted? Run it again: finished stages are skipped, a stage cut off midway resumes
    from its last checkpoint, and a stage whose inputs changed runs again.
    """
    # lazy: the demo package and rlhfkit.models (importlib.metadata) add ~0.1 s to --help
    from rlhfkit.demo.pipeline import DemoConfig

    if precision not in PRECISIONS:
        raise UserError(f"--precision is {one_of(PRECISIONS)}, not '{precision}'")
    root = directory or Path("runs/demo-quick" if quick else "runs/demo")
    cfg = DemoConfig(root=root, quick=quick, precision=precision, seed=seed)
    started = time.time()
    ran, summary, report = _run(cfg, model)
    _show(cfg, summary, ran, report, time.time() - started)


class _Stages:
    """Runs the demo's stages in order under one progress display: a stage whose inputs are
    unchanged and whose outputs exist is skipped (see StageLog)."""

    def __init__(self, bar: Progress, log: Any) -> None:
        self.bar, self.log = bar, log
        self.ran: dict[str, bool] = {}
        self.overall = bar.add_task("demo", total=len(STAGES), info="")
        self.inner = bar.add_task("", total=None, info="", visible=False)

    def progress(self, *args: Any) -> None:
        """The progress callback every stage's library call takes, whatever its shape."""
        bar, inner = self.bar, self.inner
        if len(args) == 3 and isinstance(args[0], str):  # eval: (what, done, total)
            what, done, total = args
            bar.update(inner, completed=done, total=total, info=what, visible=True)
        elif len(args) == 3:  # training: (step, total, metrics)
            step, total, m = args
            shown = "  ".join(
                f"{k}={m[k]:.3g}" for k in ("loss", "reward", "kl", "accuracy") if k in m
            )
            bar.update(inner, completed=step, total=total, info=shown, visible=True)
        else:  # sampling: (done, total)
            done, total = args
            bar.update(inner, completed=done, total=total, info="", visible=True)

    def run(self, name: str, inputs: dict[str, Any], fn, outputs=(), clear=()) -> None:
        from rlhfkit.demo import stages as S  # lazy: see demo()

        index = [s for s, _ in STAGES].index(name)
        self.bar.update(self.overall, completed=index, description=f"{name}: {dict(STAGES)[name]}")
        self.bar.update(self.inner, completed=0, total=None, info="", visible=False)
        if self.log.changed(name, inputs):
            for path in clear:  # other inputs than the last run's: start that stage over
                S.clear(path)
        self.ran[name] = self.log.run(name, inputs, fn, outputs)
        self.bar.update(self.overall, completed=index + 1)


def _run(cfg, model_override: str | None) -> tuple[dict[str, bool], dict[str, Any], Path]:
    from rlhfkit.demo import stages as S  # lazy: see demo()
    from rlhfkit.demo.pipeline import StageLog

    paths = S.Paths(cfg.root)
    cfg.root.mkdir(parents=True, exist_ok=True)
    log = StageLog.open(cfg.root / "stages.json")
    report_path = cfg.root / "report.html"
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=err_console,
    ) as bar:
        stages = _Stages(bar, log)
        spec, base = _scaffold(stages, paths, cfg.preset, model_override)
        _collect(stages, paths, cfg.preset, spec, base)
        _train(stages, paths, cfg.preset, spec)
        _evaluate(stages, paths, cfg.preset, spec)
        stages.run(
            "report",
            {"after": [log.output_key(s) for s, _ in STAGES[:-1]], "settings": cfg.settings()},
            lambda: S.report(paths, log.seconds()),
            outputs=(report_path, cfg.root / "summary.json"),
        )
    summary = json.loads((cfg.root / "summary.json").read_text())
    summary["stage_seconds"] = log.seconds()
    return stages.ran, summary, report_path


def _scaffold(stages: _Stages, paths, preset, model_override: str | None) -> tuple[Any, str]:
    """The project and the base model: the spec, and the model the run starts from."""
    from rlhfkit.demo import stages as S  # lazy: see demo()
    from rlhfkit.models import pull
    from rlhfkit.project import load_project  # lazy: pydantic and the criteria slow --help

    stages.run(
        "project",
        {
            "example": "support-replies",
            "template": S.code_hash("support_replies.toml", "support_replies.py"),
            "calibration": preset.calibration_size,
        },
        lambda: S.project_spec(paths, preset),
        outputs=(paths.project / "rlhfkit.toml",),
        clear=(paths.project,),  # a new version of the example: scaffold it again
    )
    spec = load_project(paths.project).spec
    base = model_override or spec.base_model

    def provision() -> None:
        if base == spec.base_model:
            pull(base)

    stages.run("model", {"model": base}, provision)
    return spec, base


def _collect(stages: _Stages, paths, preset, spec, base: str) -> None:
    """SFT, candidate pairs from the SFT model, and the simulated panel's labels."""
    from rlhfkit.demo import stages as S  # lazy: see demo()

    fingerprint = stages.log.output_key  # what a downstream stage keys on
    stages.run(
        "sft",
        {
            "model": base,
            "data": sha256_file(paths.project / "data" / "sft.jsonl"),
            "steps": preset.sft_steps,
            "lr": preset.sft_learning_rate,
            "lora_layers": preset.sft_lora_layers,
            "precision": preset.precision,
            "seed": preset.seed,
        },
        lambda: S.sft(paths, preset, base, stages.progress),
        outputs=(paths.final("sft"),),
        clear=(paths.sft,),
    )
    stages.run(
        "candidates",
        {
            "sft": fingerprint("sft"),
            "prompts": sha256_file(paths.project / spec.data.prompts),
            "generate": spec.generate.model_dump(),
            "n": preset.candidate_prompts,
            "samples": preset.candidate_samples,
            "start": [base, preset.start_samples],
            "batch": S.CANDIDATE_BATCH,  # the seeds go by batch
            "max_new_tokens": preset.max_new_tokens,
            "precision": preset.precision,
            "seed": preset.seed,
        },
        lambda: S.candidates(paths, preset, base, stages.progress),
        outputs=(paths.candidates,),
        clear=(paths.candidates, paths.candidates.with_name(".candidates.jsonl.partial")),
    )
    stages.run(
        "annotation",
        {
            "candidates": fingerprint("candidates"),
            "rubric": spec.rubric.model_dump(),
            "annotation": spec.annotation.model_dump(),
            "anchors": preset.anchors,
            "heldout": preset.heldout_share,
            "seed": preset.seed,
            "dpo_pairs": "same model + anchors",
            "panel": S.code_hash("panel.py", "panel_api.py"),  # the simulated annotators
        },
        lambda: S.annotation(paths, preset),
        outputs=(
            paths.prefs_train,
            paths.prefs_heldout,
            paths.prefs_dpo,
            paths.annotation / "status.json",
        ),
    )


def _train(stages: _Stages, paths, preset, spec) -> None:
    """The reward model, then PPO against it and DPO on the same preferences."""
    from rlhfkit.demo import stages as S  # lazy: see demo()

    fingerprint = stages.log.output_key
    stages.run(
        "rm",
        {
            "prefs": fingerprint("annotation"),
            "epochs": preset.rm_epochs,
            "lr": preset.rm_learning_rate,
            "lora_layers": preset.rm_lora_layers,
            "precision": preset.precision,
            "seed": preset.seed,
        },
        lambda: S.reward_model(paths, preset, stages.progress),
        outputs=(paths.rm / "eval_rm.json",),
        clear=(paths.rm,),
    )
    stages.run(
        "ppo",
        {
            "rm": fingerprint("rm"),
            "steps": preset.ppo_steps,
            "batch": preset.ppo_batch,
            "lr": preset.ppo_learning_rate,
            "lora_layers": preset.ppo_lora_layers,
            "max_new_tokens": preset.max_new_tokens,
            "ppo": spec.train.ppo.model_dump(),
            "precision": preset.precision,
            "seed": preset.seed,
            "centered": True,
        },
        lambda: S.ppo(paths, preset, stages.progress),
        outputs=(paths.final("ppo"),),
        clear=(paths.policy("ppo"),),
    )
    stages.run(
        "dpo",
        {
            "prefs": fingerprint("annotation"),
            "sft": fingerprint("sft"),
            "epochs": preset.dpo_epochs,
            "lr": preset.dpo_learning_rate,
            "lora_layers": preset.dpo_lora_layers,
            "reference": S.DPO_REFERENCE,
            "dpo": spec.train.dpo.model_dump(),
            "precision": preset.precision,
            "seed": preset.seed,
        },
        lambda: S.dpo(paths, preset, stages.progress),
        outputs=(paths.final("dpo"),),
        clear=(paths.policy("dpo"),),
    )


def _evaluate(stages: _Stages, paths, preset, spec) -> None:
    """Each trained policy against the SFT model on held-out prompts."""
    from rlhfkit.demo import stages as S  # lazy: see demo()

    fingerprint = stages.log.output_key
    for policy in ("ppo", "dpo"):
        stages.run(
            f"eval_{policy}",
            {
                "policy": fingerprint(policy),
                "rm": fingerprint("rm"),
                "criteria": spec.criteria_hash(),
                "monitors": spec.monitors.model_dump(),
                "eval_prompts": sha256_file(paths.project / spec.data.eval_prompts),
                "prompts": preset.eval_prompts,
                "samples": preset.eval_samples,
                "batch": preset.eval_batch,
                "max_new_tokens": preset.max_new_tokens,
                "seed": preset.seed,
            },
            lambda policy=policy: S.evaluate(paths, preset, policy, stages.progress),
            outputs=(paths.eval(policy) / "eval.json",),
        )


def _show(cfg, s: dict[str, Any], ran: dict[str, bool], report: Path, wall: float) -> None:
    console.rule("rlhfkit demo: support replies (annotators are a SIMULATED panel)")
    _show_annotation(s)
    _show_reward_model(s)
    _show_policies(s)
    stages = Table(title="stages")
    stages.add_column("stage")
    stages.add_column("status")
    stages.add_column("seconds", justify="right")
    for name, _ in STAGES:
        secs = s["stage_seconds"].get(name)
        status = "ran" if ran.get(name) else "skipped (done)"
        stages.add_row(name, status, "" if secs is None else f"{secs:.1f}")
    console.print(stages)
    console.print(f"Done in {wall:.0f} s. Report: {display_path(report)}")
    console.print(f"Summary: {display_path(cfg.root / 'summary.json')}")


def _show_annotation(s: dict[str, Any]) -> None:
    """The calibration gate, the panel's agreement and the annotators it flagged."""
    gate = s.get("calibration_gate") or {}
    if gate:
        verdict = "passed" if gate["passed"] else "FAILED: the main queue stayed closed"
        value = "n/a" if gate["value"] is None else f"{gate['value']:.2f}"
        console.print(
            f"calibration gate: {gate['statistic']} {value} vs threshold "
            f"{gate['threshold']:.2f}: {verdict}" + (" (overridden)" if gate["overridden"] else "")
        )
    agreement, panel = s.get("agreement") or {}, s.get("panel") or {}
    if agreement.get("percent_agreement") is not None:
        alpha = agreement.get("krippendorff_alpha")
        console.print(
            f"panel agreement: {agreement['percent_agreement']:.2f} percent agreement, "
            f"Krippendorff's alpha {'n/a' if alpha is None else f'{alpha:.2f}'}; exported "
            f"{panel.get('exported', 0)} majority pairs ({panel.get('ties', 0)} ties, "
            f"{panel.get('both_bad', 0)} both-bad and {panel.get('no_majority', 0)} without a "
            "majority left out)"
        )
    for f in s.get("flagged_annotators", []):
        console.print(f"flagged annotator: {f['annotator']}: {'; '.join(f['reasons'])}")


def _show_reward_model(s: dict[str, Any]) -> None:
    if s.get("rm_heldout_accuracy") is None:
        return
    panel = s.get("panel") or {}
    by = s.get("rm_heldout_by_pairing") or {}
    parts = [
        f"{by[k]['accuracy']:.2f} on {by[k]['pairs']} {what}"
        for k, what in (("same model", "pairs of two SFT replies"),
                        ("across models", "SFT vs starting model"))
        if k in by and by[k]["accuracy"] is not None
    ]  # fmt: skip
    console.print(
        f"reward model: held-out accuracy {s['rm_heldout_accuracy']:.2f} on "
        f"{s['rm_heldout_pairs']} pairs of held-out emails (against the panel's majority"
        + (f"; {', '.join(parts)}" if parts else "")
        + f"); trained on {panel.get('train_pairs', '?')} panel pairs + "
        f"{panel.get('anchor_pairs', 0)} anchor pairs"
    )


def _show_policies(s: dict[str, Any]) -> None:
    """The success criteria of PPO and DPO against the SFT model, then their KL and length."""
    table = Table(title="success criteria on held-out prompts, against the SFT model")
    for col in ("policy", "criterion", "should", "before", "after", "p", "verdict"):
        table.add_column(col)
    for policy in ("ppo", "dpo"):
        ev = s.get(policy)
        if not ev:
            continue
        for name, c in ev["criteria"].items():
            table.add_row(
                policy,
                name,
                c["direction"],
                f"{c['before']:.0%}",
                f"{c['after']:.0%}",
                f"{c['p_value']:.3g}",
                c["verdict"],
            )
    console.print(table)
    for policy in ("ppo", "dpo"):
        ev = s.get(policy)
        if ev:
            flags = ", ".join(f["name"] for f in ev["hacking_flags"]) or "none"
            kl = "n/a" if ev["kl"] is None else f"{ev['kl']:.2f} nats"
            console.print(
                f"{policy}: KL to the SFT model {kl}; length {ev['length']['before']:.0f} -> "
                f"{ev['length']['after']:.0f} words; hacking flags: {flags}"
            )
