"""The demo's stages, each a plain function of the run folder's paths and the preset.

Every stage calls the same Python function as the CLI command it stands for (`train_sft`,
`generate_candidates`, the annotation store and server, `evaluate_reward_model`,
`train_ppo`, `train_dpo`, `evaluate_policy`, `write_report`), so the demo exercises exactly
what a team would run by hand. Training stages resume from their last checkpoint.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhfkit import strict_json
from rlhfkit.agreement import read_gold, read_labels, summarise
from rlhfkit.annotate import Policy, add_annotator, export, import_items, open_store, status
from rlhfkit.annotate.server import serve_in_background
from rlhfkit.data import load, write_jsonl
from rlhfkit.data.io import atomic_open
from rlhfkit.demo.example import init_project
from rlhfkit.demo.panel import default_panel
from rlhfkit.demo.panel_api import run_panel
from rlhfkit.demo.pipeline import Paths, Preset
from rlhfkit.demo.summary import summary
from rlhfkit.demo.support_replies import anchor_items
from rlhfkit.evaluate.configs import PolicyEvalConfig
from rlhfkit.evaluate.criteria import freeze_for_training
from rlhfkit.evaluate.policy import evaluate_policy
from rlhfkit.evaluate.rm import evaluate_reward_model
from rlhfkit.generate import SamplingConfig, generate_candidates
from rlhfkit.lineage import config_hash, sha256_file
from rlhfkit.project import SPEC_FILE, load_project
from rlhfkit.report.html import write_report
from rlhfkit.report.inputs import load_run
from rlhfkit.train.configs import DPOConfig, PPOConfig, RewardConfig, SFTConfig
from rlhfkit.train.dpo import train_dpo
from rlhfkit.train.ppo import train_ppo
from rlhfkit.train.reward import train_reward
from rlhfkit.train.sft import train_sft

# (step, total, metrics) for training; (done, total) for sampling; (what, done, total) for eval
Progress = Callable[..., None]
PANEL_SIZE = 5


CANDIDATE_BATCH = 24
"""Prompts per sampling batch for the candidates (x3 SFT replies in the default preset: 72
sequences, then x1 from the starting model: 24; on 2 cores, 72 sequences decoded about 1.3x
faster per token than 32)."""


DPO_REFERENCE = "adapter-off"
"""The SFT model with DPO's new adapter switched off scores each batch as it comes: under
one epoch, precomputing would first score pairs the run never trains on."""


def code_hash(*files: str) -> str:
    """A hash of files of this package (the example's template, the panel's code), for stage
    fingerprints: a new version of them reruns the stages they feed."""
    return config_hash({name: sha256_file(Path(__file__).parent / name) for name in files})


def project_spec(paths: Paths, preset: Preset) -> None:
    """Scaffold the example project; a smaller preset shortens its calibration round."""
    spec = paths.project / SPEC_FILE
    if not spec.exists():
        init_project(paths.project)
    text = spec.read_text()
    sized = re.sub(
        r"^calibration_size = \d+",
        f"calibration_size = {preset.calibration_size}",
        text,
        flags=re.M,
    )
    if sized != text:
        spec.write_text(sized)


def sft(paths: Paths, preset: Preset, model: str, progress: Progress | None) -> None:

    cfg = SFTConfig(
        model=model,
        data=paths.project / "data" / "sft.jsonl",
        output_dir=paths.sft,
        max_steps=preset.sft_steps,
        batch_size=8,
        learning_rate=preset.sft_learning_rate,
        lora_layers=preset.sft_lora_layers,
        max_length=256,
        save_every=10,
        resume=True,
        project=paths.project,
        precision=preset.precision,
        seed=preset.seed,
    )
    freeze_for_training(cfg)  # the first stage freezes the criteria
    train_sft(cfg, progress)


def candidates(paths: Paths, preset: Preset, start: str, progress: Progress | None) -> None:
    """The SFT model's replies and the starting model's, every pair of a prompt's compared."""
    spec = load_project(paths.project).spec
    sampling = SamplingConfig.from_spec(
        spec.generate,
        n=preset.candidate_samples,
        max_new_tokens=preset.max_new_tokens,
        batch_size=CANDIDATE_BATCH,
        precision=preset.precision,
        seed=spec.generate.seed + preset.seed,
    )
    generate_candidates(
        str(paths.final("sft")),
        paths.project / spec.data.prompts,
        paths.candidates,
        sampling,
        limit=preset.candidate_prompts,
        all_pairs=True,
        on_progress=progress,
        compare_with=start if preset.start_samples else None,
        compare_n=max(preset.start_samples, 1),
    )


def annotation(paths: Paths, preset: Preset) -> dict[str, Any]:
    """A fresh store; the panel labels through the real app over HTTP; export; statistics."""
    seed = preset.seed
    folder = paths.annotation
    db = folder / "annotations.sqlite"
    for stale in folder.glob("annotations.sqlite*"):  # a half-labelled store starts over
        stale.unlink()
    anchors = folder / "anchors.jsonl"
    write_jsonl(anchors, anchor_items(preset.anchors, seed=seed + 1))
    project = load_project(paths.project)
    policy = Policy.from_project(project)
    store = open_store(f"sqlite:///{db}", create=True)
    try:
        import_items(store, policy, items=paths.candidates, anchors=anchors, seed=seed)
        panel = default_panel(PANEL_SIZE, seed=seed, drift_after=_drift_after(policy))
        tokens = {a.name: add_annotator(store, a.name) for a in panel}
        with serve_in_background(store.url, paths.project, seed=seed) as base_url:
            run = run_panel(base_url, tokens, panel, seed=seed)
        state = status(store, policy)
        result = export(
            store,
            policy,
            paths.prefs,
            labels_out=folder / "labels.jsonl",
            gold_out=folder / "gold.jsonl",
        )
    finally:
        store.close()
    _write_json(folder / "status.json", state)
    agreement = _agreement(folder, policy)
    _write_json(folder / "agreement.json", agreement)
    train, heldout = _split(paths.prefs, preset.heldout_share)
    gold = _gold_pairs(anchors)
    write_jsonl(paths.prefs_train, train + gold)
    write_jsonl(paths.prefs_heldout, heldout)
    # DPO learns from the policy's own replies: against the starting model's it would push
    # down replies the SFT model hardly writes (measured: signs_off 53% -> 56%, n.s.; from
    # the SFT pairs and anchors alone, 53% -> 89%, p 0.0002)
    write_jsonl(paths.prefs_dpo, [r for r in train if r.get("pairing") != "across models"] + gold)
    panel_info = {
        "simulated": True,
        "annotators": [
            {
                "name": a.name,
                "noise": a.noise,
                "position_bias": a.position_bias,
                "length_bias": a.length_bias,
                "drift_after": a.drift_after,
                "drift_noise": a.drift_noise if a.drift_after is not None else None,
            }
            for a in panel
        ],
        "labels": run.labels,
        "seconds": round(run.seconds, 2),
        "exported": result.rows,
        "ties": result.ties,
        "both_bad": result.both_bad,
        "no_majority": result.no_majority,
        "excluded_annotators": result.excluded_annotators,
        "train_pairs": len(train),
        "anchor_pairs": len(gold),
        "heldout_pairs": len(heldout),
    }
    _write_json(folder / "panel.json", panel_info)
    return panel_info


def _gold_pairs(anchors: Path) -> list[dict[str, Any]]:
    """The anchor items as preference rows: the team wrote their answers down, so they are
    training data too. They teach what the panel's pairs rarely show side by side: a reply
    that acts against one that only apologises, echoes or hedges."""
    rows = []
    for item in load(anchors).rows:
        a, b = item["response_a"], item["response_b"]
        chosen, rejected = (a, b) if item["label"] == "A" else (b, a)
        rows.append(  # margin 1: as sure as a unanimous panel vote
            {
                "id": item["id"],
                "prompt": item["prompt"],
                "chosen": chosen,
                "rejected": rejected,
                "margin": 1.0,
            }
        )
    return rows


def _drift_after(policy) -> int:
    # The drifter turns careless once calibration is behind it, so that the gate passes
    # and the drift shows in the anchors of the main round.
    return policy.calibration_size + 10


def _agreement(folder: Path, policy) -> dict[str, Any]:

    labels = read_labels(folder / "labels.jsonl")
    gold = read_gold(folder / "gold.jsonl", labels)
    return summarise(
        labels,
        "nominal",
        gold,
        policy.agreement_threshold,
        1000,
        policy.anchor_accuracy_threshold,
        20,
    )


def _split(prefs: Path, share: float) -> tuple[list[dict], list[dict]]:
    """A held-out share of the prompts, with all their preference pairs, by a hash of the
    prompt: stable across reruns, independent of row order, and no held-out pair shares a
    prompt (or a reply) with a training pair."""
    train, heldout = [], []
    for row in load(prefs).rows:
        prompt = strict_json.dumps(row.get("prompt"), sort_keys=True)
        h = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) / 16**8
        (heldout if h < share else train).append(row)
    return train, heldout


def reward_model(paths: Paths, preset: Preset, progress: Progress | None) -> dict[str, Any]:

    cfg = RewardConfig(
        model=str(paths.final("sft")),
        data=paths.prefs_train,
        output_dir=paths.rm,
        epochs=preset.rm_epochs,
        batch_size=8,
        learning_rate=preset.rm_learning_rate,
        lora_layers=preset.rm_lora_layers,
        max_length=384,
        save_every=10,
        resume=True,
        project=paths.project,
        precision=preset.precision,
        seed=preset.seed,
    )
    freeze_for_training(cfg)  # the first stage freezes the criteria
    train_reward(cfg, progress)

    rows = load(paths.prefs_heldout).rows
    slices = tuple(c for c in ("pairing", "topic") if any(c in r for r in rows))
    found = evaluate_reward_model(str(paths.final("rm")), paths.prefs_heldout, slices=slices)
    found = found.to_json()  # the record as eval_rm.json holds it
    _write_json(paths.rm / "eval_rm.json", found)
    return found


def ppo(paths: Paths, preset: Preset, progress: Progress | None) -> None:

    spec = load_project(paths.project).spec
    cfg = PPOConfig(
        model=str(paths.final("sft")),
        data=paths.project / spec.data.prompts,
        output_dir=paths.policy("ppo"),
        reward=[str(paths.final("rm"))],
        algorithm="ppo",
        max_steps=preset.ppo_steps,
        batch_size=preset.ppo_batch,
        learning_rate=preset.ppo_learning_rate,
        lora_layers=preset.ppo_lora_layers,
        lr_schedule="constant",
        warmup_ratio=0.0,
        max_new_tokens=preset.max_new_tokens,
        temperature=spec.generate.temperature,
        missing_eos_penalty=1.0,
        kl_coef=spec.train.ppo.kl_coef,
        whiten_rewards=True,
        center_rewards=True,  # the reward model's offset would teach "never stop"
        save_every=4,
        resume=True,
        project=paths.project,
        precision=preset.precision,
        seed=preset.seed,
    )
    freeze_for_training(cfg)  # the first stage freezes the criteria
    train_ppo(cfg, progress)


def dpo(paths: Paths, preset: Preset, progress: Progress | None) -> None:

    spec = load_project(paths.project).spec
    cfg = DPOConfig(
        model=str(paths.final("sft")),
        data=paths.prefs_dpo,
        output_dir=paths.policy("dpo"),
        epochs=preset.dpo_epochs,
        batch_size=8,
        learning_rate=preset.dpo_learning_rate,
        lora_layers=preset.dpo_lora_layers,
        beta=spec.train.dpo.beta,
        reference=DPO_REFERENCE,
        max_length=384,
        save_every=10,
        resume=True,
        project=paths.project,
        precision=preset.precision,
        seed=preset.seed,
    )
    freeze_for_training(cfg)  # the first stage freezes the criteria
    train_dpo(cfg, progress)


def evaluate(paths: Paths, preset: Preset, policy: str, progress: Progress | None) -> dict:

    spec = load_project(paths.project).spec
    rm = str(paths.final("rm"))
    cfg = PolicyEvalConfig(
        project=paths.project,
        before=str(paths.final("sft")),
        after=str(paths.final(policy)),
        out=paths.eval(policy),
        limit=preset.eval_prompts,
        samples=preset.eval_samples,
        max_new_tokens=preset.max_new_tokens,
        judges=("panel",),  # the reward model's own win rate comes with reward_model
        reward_model=rm,
        batch_size=preset.eval_batch,
        sample_cache=paths.root / "eval" / "cache",
        seed=spec.generate.seed + preset.seed,
    )
    return evaluate_policy(cfg, progress).to_json()


def report(paths: Paths, seconds: dict[str, float]) -> tuple[Path, dict[str, Any]]:

    written = write_report(load_run(paths.root), paths.root / "report.html")
    found = summary(paths, seconds)
    _write_json(paths.root / "summary.json", found)
    return written.html, found


def clear(path: Path) -> None:
    """Remove a stage's output folder before it reruns with other inputs (a resumed run
    with other settings would be refused, rightly)."""
    if path.exists():
        shutil.rmtree(path)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        strict_json.dump(strict_json.nulled(data), f, indent=2, default=str)
