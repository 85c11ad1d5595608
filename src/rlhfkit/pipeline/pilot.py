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
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit import strict_json
from rlhfkit.annotate import Policy, add_annotator, export, import_items, open_store, status
from rlhfkit.annotate.importing import PAIR_FORMATS
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
from rlhfkit.pipeline.pilot_judges import PilotJudge
from rlhfkit.pipeline.simulated import JudgeAnnotator, run_panel
from rlhfkit.project import Project

Progress = Callable[..., None]

FAILINGS = ("noise", "position_bias", "length_bias", "drift_after", "drift_noise")
"""What `--annotator NAME:KEY=VALUE,...` may set (the demo panel's failings)."""


@dataclass(frozen=True)
class PanelSettings:
    """The simulated panel: K annotators sharing the judge, each slipping on its own."""

    annotators: int = 3
    """How many (at least the spec's overlap)."""
    failings: dict[str, float] = field(default_factory=lambda: {"noise": 0.05})
    """Every annotator's: noise (the share of flipped answers), position_bias (of lapses:
    the reply shown first, unread), length_bias (of the longer reply picked over the
    judge's verdict); see `JudgeAnnotator`."""
    overrides: tuple[str, ...] = ()
    """Per-annotator settings, 'sim-3:noise=0.45,position_bias=0.1' (a new sim- name adds
    an annotator): one careless annotator, one that drifts after 20 labels, ..."""

    @classmethod
    def for_project(
        cls,
        project: Project,
        annotators: int | None = None,
        failings: dict[str, float] | None = None,
        overrides: tuple[str, ...] = (),
    ) -> PanelSettings:
        """A pilot's panel, one definition for `rlhfkit annotate pilot` and the run's pilot
        stage: `annotators` (default: [run] simulated_annotators, raised to
        annotation.overlap so that every pair gets its labels), each with `failings` (noise
        default: [run] simulated_noise)."""
        run, overlap = project.spec.run, project.spec.annotation.overlap
        if annotators is not None and annotators < 1:
            raise UserError(f"--annotators {annotators}: a panel needs at least 1 annotator")
        k = max(run.simulated_annotators, overlap) if annotators is None else annotators
        return cls(k, {"noise": run.simulated_noise} | (failings or {}), overrides)

    def panel(self, judge: PilotJudge, seed: int) -> list[JudgeAnnotator]:
        base = dict(self.failings)
        settings = {f"sim-{i + 1}": dict(base) for i in range(self.annotators)}
        for text in self.overrides:
            name, values = parse_override(text)
            settings.setdefault(name, dict(base)).update(values)
        try:
            return [
                JudgeAnnotator(name, judge, seed=seed, judge_name=judge.name, **kw)
                for name, kw in settings.items()
            ]
        except ValueError as e:  # a rate outside [0, 1]
            raise UserError(f"simulated annotator {e}") from None


def parse_override(text: str) -> tuple[str, dict[str, Any]]:
    """'sim-3:noise=0.45,drift_after=20' -> ('sim-3', {'noise': 0.45, 'drift_after': 20})."""
    name, _, rest = text.partition(":")
    problem = None
    values: dict[str, Any] = {}
    if not name.startswith("sim-") or not rest:
        problem = "give NAME:KEY=VALUE,... with a name that starts with sim-"
    for part in rest.split(",") if rest else ():
        key, _, raw = part.partition("=")
        key = key.strip().replace("-", "_")
        if key not in FAILINGS:
            problem = f"{key!r} is not one of {', '.join(FAILINGS)}"
            break
        try:
            values[key] = int(raw) if key == "drift_after" else float(raw)
        except ValueError:
            problem = f"{key}={raw!r} is not a number"
            break
    if problem:
        raise UserError(f"--annotator {text}: {problem}")
    return name, values


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
    panel = cfg.panel.panel(judge, cfg.seed)
    overlap = project.spec.annotation.overlap
    if len(panel) < overlap:
        raise UserError(
            f"the pilot's panel has {len(panel)} annotators, fewer than annotation.overlap "
            f"({overlap}): no pair would get its labels; give --annotators {overlap}"
        )
    rows = pick_pairs(cfg.pairs, cfg.n, cfg.seed)
    pilot_project = _pilot_project(project, len(rows))
    policy = Policy.from_project(pilot_project)
    _refuse_the_teams_store(project, cfg.out)
    judge.see_pairs(rows)
    borderline = borderline_check(judge, project)
    cfg.out.mkdir(parents=True, exist_ok=True)
    for stale in [*cfg.out.glob("annotations.sqlite*"), cfg.out / "pilot.json"]:
        stale.unlink(missing_ok=True)  # a fresh store every pilot; no old figures meanwhile
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
    return summary


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
            hint="sample candidates first: `rlhfkit generate --project DIR`",
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
    url = f"sqlite:///{cfg.out / 'annotations.sqlite'}"
    anchors = project.data_path("anchors") if project.spec.data.anchors else None
    store = open_store(url, create=True)
    try:
        with store.write() as conn:  # the store says what it is
            record_event(conn, "simulated_pilot", "rlhfkit annotate pilot", judge=judge.name)
        imported = import_items(
            store,
            policy,
            cfg.out / "pairs.jsonl",
            anchors,
            actor="pilot (simulated)",
            seed=cfg.seed,
        )
        tokens = {a.name: add_annotator(store, a.name) for a in panel}
        expected = imported.calibration_items * len(panel)
        expected += (imported.items - imported.calibration_items) * policy.overlap

        def labels_done(done: int) -> None:
            if progress is not None:
                progress("simulated labels", done, max(done, expected))

        with serve_in_background(store.url, project, seed=cfg.seed) as base_url:
            run = run_panel(base_url, tokens, panel, progress=labels_done)
        state = status(store, policy)
        with store.read() as conn:
            table = label_table(conn)
        exported = _export(store, policy, cfg.out, judge)
    finally:
        store.close()
    return {
        "store": display_path(cfg.out / "annotations.sqlite"),
        "labels": run.labels,
        "seconds": round(run.seconds, 2),
        **figures(state, table, policy),
        "export": exported,
    }


def _export(store, policy: Policy, out: Path, judge: PilotJudge) -> dict[str, Any]:
    """The export people's labels would get, its manifest marked simulated."""
    prefs = out / "preferences.jsonl"
    try:
        r = export(store, policy, prefs, out / "labels.jsonl", out / "gold.jsonl")
    except UserError as e:
        return {"rows": 0, "why_none": str(e)}
    manifest = manifest_path(prefs)
    record = strict_json.loads(manifest.read_text())
    record["simulated"] = {"by": "rlhfkit annotate pilot", "judge": judge.name}
    _write_json(manifest, record)
    return {
        "preferences": display_path(prefs),
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


def borderline_check(judge: PilotJudge, project: Project) -> dict[str, Any]:
    """The judge on the rubric's borderline examples, against the team's answers."""
    misses = []
    examples = project.spec.rubric.borderline_examples
    for i, ex in enumerate(examples, 1):
        verdict = judge(ex.prompt, ex.response_a, ex.response_b)
        said = verdict if isinstance(verdict, str) else _preference(verdict)
        if said != ex.preferred:
            misses.append({"example": i, "team": ex.preferred, "judge": said})
    return {"agreed": len(examples) - len(misses), "of": len(examples), "misses": misses}


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
    b = summary["borderline_examples"]
    if b["misses"]:
        out.append(
            f"the judge answers {len(b['misses'])} of {b['of']} borderline examples "
            "otherwise than the team did"
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
