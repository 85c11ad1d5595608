"""Pilot the rubric before people label: a SIMULATED panel labels a pilot round of pairs
through the real annotation app, so the team sees what its rubric gives before paying anyone.

The steps (`run_pilot`):

1. the judge the panel shares (`pilot_judges`: the rubric in code, an LLM prompted with the
   rubric, or the rule judge from the success criteria), tried on the rubric's borderline
   examples first: does it answer the hard cases as the team did?
2. N pairs drawn (seeded) from the candidates or a given file;
3. a store of the pilot's own (PILOT/annotations.sqlite, never the team's), the pairs and
   the project's anchors imported, a calibration round of the spec's calibration_size or
   fewer (at most half the pairs, so that the main queue has work too);
4. K simulated annotators (``sim-1`` ...) label through the app's HTTP API, each with the
   demo panel's failings as set (noise, position and length bias, drift);
5. the numbers people's labels would give: the calibration gate (pass or fail, with its one
   number), agreement (percent, Cohen's kappa, Krippendorff's alpha), anchor accuracy, tie
   and both-bad rates, each annotator's agreement with the majority;
6. optionally, a tiny reward model trained on the pilot's majority labels (`train rm`, then
   `eval rm` on held-out prompts): can a model learn the rubric from such labels?

Everything is marked simulated: the annotators' names (``sim-``), every label's rationale,
an event in the store, the export's manifest, pilot.json (``"simulated": true``).
"""

from __future__ import annotations

import dataclasses
import random
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit import strict_json
from rlhfkit.annotate import Policy, add_annotator, export, import_items, open_store, status
from rlhfkit.annotate.importing import PAIR_FORMATS, ImportResult
from rlhfkit.annotate.models import ANCHOR
from rlhfkit.annotate.server import serve_in_background
from rlhfkit.annotate.settings import db_url_for, normalise_url
from rlhfkit.annotate.status import LabelTable, label_table
from rlhfkit.annotate.store import record_event
from rlhfkit.data import load, write_jsonl
from rlhfkit.data.io import atomic_open
from rlhfkit.errors import UserError, display_path
from rlhfkit.lineage import manifest_path
from rlhfkit.pipeline.annotation import split_by_prompt
from rlhfkit.pipeline.layout import RunPaths
from rlhfkit.pipeline.pilot_judges import PilotJudge
from rlhfkit.pipeline.pilot_panel import CheckedJudge, PanelSettings, parse_override
from rlhfkit.pipeline.simulated import run_panel
from rlhfkit.project import Project

Progress = Callable[..., None]

__all__ = ["PanelSettings", "PilotConfig", "parse_override", "run_pilot"]


@dataclass(frozen=True)
class PilotConfig:
    """`rlhfkit annotate pilot`'s settings (the `pilot` stage of `rlhfkit run` fills them
    from the run)."""

    out: Path
    """The pilot's folder: its store, pairs, labels, export, reward model and pilot.json."""
    pairs: Path
    """Comparison rows to draw the pilot's pairs from (the candidates)."""
    n: int = 60
    """Pairs in the pilot round (calibration included; anchors come on top); at least 2."""
    panel: PanelSettings = field(default_factory=PanelSettings)
    seed: int = 0
    train_rm: bool | None = None
    """Train a tiny reward model on the pilot's labels (None: when the pairs suffice)."""
    model: str | None = None
    """The reward model's base (default: the spec's base_model)."""
    precision: str | None = None


MIN_RM_PAIRS = (16, 4)
"""Training and held-out pairs a pilot needs before its reward model says anything."""


def run_pilot(
    project: Project, judge: PilotJudge, cfg: PilotConfig, progress: Progress | None = None
) -> dict[str, Any]:
    """The pilot round, start to end (see the module's docstring); returns pilot.json."""
    # every check before the folder is touched; the settings before the pairs are read
    if cfg.n < 2:
        raise UserError(f"--n {cfg.n}: a pilot needs at least 2 pairs")
    checked = CheckedJudge(judge)
    panel = cfg.panel.panel(checked, cfg.seed)
    overlap = project.spec.annotation.overlap
    if len(panel) < overlap:
        raise UserError(
            f"the pilot's panel has {len(panel)} annotators, fewer than annotation.overlap "
            f"({overlap}): no pair would get its labels; give --annotators {overlap}"
        )
    rows = pick_pairs(cfg.pairs, cfg.n, cfg.seed)
    anchors = _anchors(project)
    pilot_project = _pilot_project(project, len(rows))
    policy = Policy.from_project(pilot_project)
    _refuse_the_teams_store(project, cfg.out)
    seen = [*rows, *(load(anchors).rows if anchors else [])]
    judge.see_pairs(seen)  # each pair's own prompt columns, anchors' too (the rule judge)
    checked.see(seen)
    borderline = borderline_check(checked, project)
    cfg.out.mkdir(parents=True, exist_ok=True)
    clear_outputs(cfg.out)  # a fresh store every pilot; no old figures meanwhile
    try:
        write_jsonl(cfg.out / "pairs.jsonl", rows)
        labelled = _label(pilot_project, policy, panel, judge, cfg, progress)
        summary = {
            "simulated": True,
            "judge": judge.describe() | {"stats": judge.counts()},
            "annotators": [a.describe() for a in panel],
            "pairs": {"source": str(cfg.pairs), "drawn": len(rows), "seed": cfg.seed},
            "borderline_examples": borderline,
            **labelled,
        }
        summary["reward_model"] = _reward_model(project, cfg, summary, progress)
        summary["warnings"] = warnings(summary)
        _write_json(cfg.out / "pilot.json", summary)
    except BaseException:
        clear_outputs(cfg.out)  # nothing half-written: a judge that raised mid-round, ^C
        raise
    return summary


OUTPUTS = (
    "pilot.json",
    "pairs.jsonl",
    "labels.jsonl",
    "preferences.jsonl",
    "gold.jsonl",
    "rm_train.jsonl",
    "rm_heldout.jsonl",
)
"""What a pilot writes to its folder, besides its store and rm/."""


def clear_outputs(out: Path) -> None:
    """Every file an earlier pilot wrote to `out` (its store, the export and its manifests,
    the reward model), and nothing else of the folder's."""
    for name in OUTPUTS:
        (out / name).unlink(missing_ok=True)
        manifest_path(out / name).unlink(missing_ok=True)
    for stale in out.glob("annotations.sqlite*"):
        stale.unlink()
    shutil.rmtree(out / "rm", ignore_errors=True)


def _anchors(project: Project) -> Path | None:
    return project.data_path("anchors") if project.spec.data.anchors else None


def default_pairs(project: Project) -> tuple[Path, str | None]:
    """The pairs a pilot draws from when none are given: `rlhfkit generate`'s candidates,
    else those of the project's run (`rlhfkit run`), and a note saying which."""
    generated = project.artifacts("candidates.jsonl")
    ran = RunPaths(project.root / "run", project.root).candidates
    if generated.exists() or not ran.exists():
        return generated, None
    return ran, f"pairs: {display_path(ran)}, the run's candidates (no {display_path(generated)})"


def _refuse_the_teams_store(project: Project, out: Path) -> None:
    ours = normalise_url(f"sqlite:///{out / 'annotations.sqlite'}")
    teams = normalise_url(db_url_for(project.root, None))
    if (
        Path(ours.removeprefix("sqlite:///")).resolve()
        == Path(teams.removeprefix("sqlite:///")).resolve()
    ):
        raise UserError(
            f"{display_path(out)}: the pilot's store would be the team's annotation store; "
            "give the pilot a folder of its own (--out)"
        )


def pick_pairs(source: Path, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` rows of `source` at random (seeded), in the file's order; all of them if fewer."""
    if not source.exists():
        raise UserError(
            f"{display_path(source)}: no such file; give the pairs to pilot (--pairs)",
            hint="the candidates of `rlhfkit run` are RUN/annotation/candidates.jsonl (a "
            "pilot finds PROJECT/run's itself), those of `rlhfkit generate` "
            "PROJECT/artifacts/candidates.jsonl; with neither, sample them: `rlhfkit generate "
            "--project DIR`",
        )
    rows = load(source, expect=PAIR_FORMATS).rows  # as the import reads them, before any write
    if len(rows) <= n:
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def _pilot_project(project: Project, n_pairs: int) -> Project:
    """The project as the pilot's app sees it: a calibration round of the spec's size or
    fewer, at most half the pairs."""
    annotation = project.spec.annotation
    size = min(annotation.calibration_size, n_pairs // 2)
    spec = project.spec.model_copy(
        update={"annotation": annotation.model_copy(update={"calibration_size": size})}
    )
    return Project(project.root, spec)


def _label(project, policy, panel, judge, cfg, progress) -> dict[str, Any]:
    """A store of the pilot's own; the panel labels through the real app; the export."""
    db = cfg.out / "annotations.sqlite"
    store = open_store(f"sqlite:///{db}", create=True)
    try:
        with store.write() as conn:  # the store says what it is
            record_event(conn, "simulated_pilot", "rlhfkit annotate pilot", judge=judge.name)
        imported = import_items(
            store,
            policy,
            cfg.out / "pairs.jsonl",
            _anchors(project),
            actor="pilot (simulated)",
            seed=cfg.seed,
        )
        tokens = {a.name: add_annotator(store, a.name) for a in panel}
        expected = expected_labels(imported, policy, len(panel))

        def labels_done(done: int) -> None:
            if progress is not None:  # an estimate until the panel stops: one more to go
                progress("simulated labels", done, max(expected, done + 1))

        with serve_in_background(store.url, project, seed=cfg.seed) as base_url:
            run = run_panel(base_url, tokens, panel, progress=labels_done)
        if progress is not None:
            done = sum(run.labels.values())
            progress("simulated labels", done, done)
        state = status(store, policy)
        with store.read() as conn:
            table = label_table(conn)
        exported = _export(store, policy, cfg.out, judge)
    finally:
        store.close()
    found = figures(state, table, policy)
    on_store = StoreCommands(project.root, db)
    found["gate"]["action"] = on_store(found["gate"]["action"])
    for key in ("why_none", "hint"):
        exported[key] = on_store(exported.get(key))
    return {
        "store": display_path(db),
        "labels": run.labels,
        "seconds": round(run.seconds, 2),
        **found,
        "export": {k: v for k, v in exported.items() if v is not None},
    }


def expected_labels(imported: ImportResult, policy: Policy, k: int) -> int:
    """About how many labels a panel of `k` gives (the progress bar's total): everyone
    labels the calibration round, `overlap` annotators each main pair, and an anchor takes
    a task's place at `anchor_rate` (drawn at random), each annotator's anchors at most."""
    tasks = imported.calibration_items * k
    tasks += (imported.items - imported.calibration_items) * policy.overlap
    rate = min(policy.anchor_rate, 0.5)
    return tasks + min(imported.anchors * k, round(tasks * rate / (1 - rate)))


class StoreCommands:
    """The advice a store gives (`rlhfkit annotate remove sim-3 --reason ...`), pointed at
    the pilot's store: each `rlhfkit annotate` command gets ``--project`` and ``--db``, so
    that run as written it acts on the pilot's round, never on the team's store."""

    def __init__(self, project: Path, db: Path):
        self.flags = f"--project {display_path(project)} --db {display_path(db)}"

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        return re.sub(r"`(rlhfkit annotate [^`]*)`", rf"`\1 {self.flags}`", text)


def _export(store, policy: Policy, out: Path, judge: PilotJudge) -> dict[str, Any]:
    """The export people's labels would get, its manifest marked simulated. With no row to
    export (the gate closed, every annotator left out), the labels and the anchors' answers
    are written all the same: `rlhfkit agreement` reads them."""
    prefs, labels = out / "preferences.jsonl", out / "labels.jsonl"
    try:
        r = export(store, policy, prefs, labels, out / "gold.jsonl")
    except UserError as e:
        reason = str(e).removeprefix("nothing to export: ")
        return {"rows": 0, "labels": display_path(labels), "why_none": reason, "hint": e.hint}
    manifest = manifest_path(prefs)
    record = strict_json.loads(manifest.read_text())
    record["simulated"] = {"by": "rlhfkit annotate pilot", "judge": judge.name}
    _write_json(manifest, record)
    return {
        "preferences": display_path(prefs),
        "labels": display_path(labels),
        "rows": r.rows,
        "ties": r.ties,
        "both_bad": r.both_bad,
        "no_majority": r.no_majority,
        "excluded_annotators": r.excluded_annotators,
    }


def figures(state: dict[str, Any], table: LabelTable, policy: Policy) -> dict[str, Any]:
    """The numbers a team reads off a round: the gate, agreement, anchors, rates."""
    store_gate = state["gate"]  # the store's one gate number, as `annotate status` shows it
    gate = {
        "statistic": "percent agreement on the calibration round",
        "value": store_gate["value"],
        "threshold": policy.agreement_threshold,
        "passed": store_gate["passed"],
        "pairs": store_gate["pairs"] or 0,
        "main_queue_open": store_gate["main_queue_open"],
        "action": (store_gate.get("disagreement") or {}).get("action"),
    }
    agreement = state["agreement"] or {}
    rows = list(zip(table.item_id, table.label, table.kind, strict=True))
    main = [label for _, label, kind in rows if kind != ANCHOR]
    anchors = [label == table.gold[item] for item, label, kind in rows if kind == ANCHOR]
    counts = Counter(main)
    return {
        "gate": gate,
        "agreement": {
            "percent": agreement.get("percent_agreement"),
            "cohen_kappa": agreement.get("cohen_kappa_mean"),
            "krippendorff_alpha": agreement.get("krippendorff_alpha"),
            "pairs": agreement.get("n_items"),
        },
        "anchor_accuracy": sum(anchors) / len(anchors) if anchors else None,
        "anchor_labels": len(anchors),
        "anchor_threshold": {  # the spec's, below which an annotator's labels are left out
            "accuracy": policy.anchor_accuracy_threshold,
            "min_labels": policy.min_anchor_labels,
        },
        "tie_rate": counts["tie"] / len(main) if main else None,
        "both_bad_rate": counts["both_bad"] / len(main) if main else None,
        "per_annotator": [
            {
                "annotator": a["annotator"],
                "labels": a["labels"],
                "majority_agreement": a.get("majority_agreement"),
                "anchor_accuracy": a.get("anchor_accuracy"),
                "chose_first_rate": a.get("chose_first_rate"),
            }
            for a in state["annotators"]
        ],
    }


def borderline_check(judge: CheckedJudge, project: Project) -> dict[str, Any]:
    """The judge on the rubric's borderline examples, against the team's answers. An
    example has no prompt columns: criteria with ``applies_to`` do not apply to it, and
    `left_out` names them (the rule judge), so a miss they explain reads as such."""
    misses, left_out = [], set()
    examples = project.spec.rubric.borderline_examples
    for i, ex in enumerate(examples, 1):
        verdict = judge(ex.prompt, ex.response_a, ex.response_b, f"borderline example {i}")
        said = verdict if isinstance(verdict, str) else _preference(verdict)
        without = judge.judge.left_out(ex.prompt, ex.response_a, ex.response_b)
        left_out.update(without)
        if said != ex.preferred:
            misses.append({"example": i, "team": ex.preferred, "judge": said, "without": without})
    return {
        "agreed": len(examples) - len(misses),
        "of": len(examples),
        "misses": misses,
        "left_out": sorted(left_out),
    }


def _preference(verdict: Any) -> str:
    if isinstance(verdict, tuple):
        return str(verdict[0])
    return str(verdict.preference)


def _reward_model(project, cfg: PilotConfig, summary, progress) -> dict[str, Any]:
    """A tiny reward model on the pilot's majority labels, checked on held-out prompts."""
    prefs = cfg.out / "preferences.jsonl"
    rows = load(prefs).rows if summary["export"]["rows"] else []
    train, heldout = split_by_prompt(rows, max(project.spec.run.heldout_share, 0.2))
    enough = len(train) >= MIN_RM_PAIRS[0] and len(heldout) >= MIN_RM_PAIRS[1]
    counts = {"train_pairs": len(train), "heldout_pairs": len(heldout)}
    if cfg.train_rm is False or not enough:
        if cfg.train_rm is False:
            why = "not asked (--no-train-rm)"
        elif not summary["export"]["rows"]:
            why = "the export has no rows: see the warning below"
        else:
            why = f"too few pairs: needs {MIN_RM_PAIRS[0]} training and {MIN_RM_PAIRS[1]} held-out"
            if not summary["gate"]["main_queue_open"]:
                why += "; the failed gate kept the main queue closed (calibration pairs only)"
        return {"trained": False, "why_not": why, **counts}
    # lazy: torch and transformers, for a pilot that trains a reward model only
    from rlhfkit.evaluate.rm import evaluate_reward_model
    from rlhfkit.pipeline.compose import train_config
    from rlhfkit.train.loop import resolve_precision
    from rlhfkit.train.reward import train_reward

    shutil.rmtree(cfg.out / "rm", ignore_errors=True)  # a fresh model for each pilot
    write_jsonl(cfg.out / "rm_train.jsonl", train)
    write_jsonl(cfg.out / "rm_heldout.jsonl", heldout)
    rm_cfg = train_config(
        "rm",
        project,
        model=cfg.model or project.spec.base_model,
        data=cfg.out / "rm_train.jsonl",
        output_dir=cfg.out / "rm",
        project=project.root,
    )
    precision = resolve_precision(cfg.precision or rm_cfg.precision)
    rm_cfg = dataclasses.replace(rm_cfg, precision=precision, seed=rm_cfg.seed + cfg.seed)
    result = train_reward(rm_cfg, progress)
    found = evaluate_reward_model(str(result.final), cfg.out / "rm_heldout.jsonl")
    lo, hi = found.accuracy_ci
    return {
        "trained": True,
        "model": display_path(result.final),
        "heldout_accuracy": found.accuracy,
        "heldout_accuracy_ci": [lo, hi],
        **counts,
    }


def warnings(summary: dict[str, Any]) -> list[str]:
    """What the team should look at before people label."""
    out = []
    gate = summary["gate"]
    if gate["passed"] is False:
        out.append(
            f"the calibration gate fails ({gate['value']:.2f} < {gate['threshold']:.2f})"
            + (f": {gate['action']}" if gate.get("action") else "")
        )
    stats = summary["judge"]["stats"]
    if stats.get("unreadable"):
        asked = stats.get("requests", 0) + stats.get("cache_hits", 0)
        out.append(
            f"the judge's answer was unreadable {stats['unreadable']} times of {asked} "
            "(counted as ties): check the model and --show-prompt"
        )
    accuracy, limit = summary["anchor_accuracy"], summary["anchor_threshold"]
    threshold, enough = limit["accuracy"], limit["min_labels"]
    if accuracy is not None and accuracy < threshold and summary["anchor_labels"] >= enough:
        out.append(
            f"anchor accuracy {accuracy:.2f} over {summary['anchor_labels']} labels is below "
            f"the spec's anchor_accuracy_threshold ({threshold:.2f}): the judge answers the "
            "team's anchors otherwise; check the anchors' answers against the rubric, or the "
            "judge (each label's reason is in the pilot's labels.jsonl)"
        )
    exported = summary["export"]
    if not exported["rows"]:
        out.append(f"the export is empty, no pair to learn from: {exported['why_none']}")
    b = summary["borderline_examples"]
    if b["misses"]:
        explained = sum(bool(m["without"]) for m in b["misses"])
        out.append(
            f"the judge answers {len(b['misses'])} of {b['of']} borderline examples "
            "otherwise than the team did"
            + (
                f" ({explained} of them judged without {', '.join(b['left_out'])}: an "
                "example has no prompt columns for their applies_to)"
                if explained
                else ""
            )
        )
    rm = summary["reward_model"]
    if rm.get("trained") and rm["heldout_accuracy_ci"][0] <= 0.5:
        out.append(
            "the reward model is not above chance on held-out pairs (its 95% CI "
            "includes 0.5): more or clearer pairs needed"
        )
    return out


def _write_json(path: Path, data: Any) -> None:
    with atomic_open(path) as f:
        strict_json.dump(strict_json.nulled(data), f, indent=2, default=str)
