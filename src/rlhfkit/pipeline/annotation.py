"""The annotate stage of `rlhfkit run`: candidate pairs into the annotation store, labels out
as training data.

With people (``[run] labeler = "people"``), the stage imports the pairs into the project's
store and stops, saying how to serve the app; a later `run` checks the store and goes on once
the calibration gate passed (or was overridden) and every pair has its labels. With a
simulated labeler, a panel labels through the real app over HTTP, in a store of the run's own.
Either way the same steps follow: export the majority preferences and the agreement
statistics, split them by prompt into training and held-out pairs (for `eval rm`), add the
anchors' known answers as training pairs, and select DPO's pairs by their `pairing`.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit import strict_json
from rlhfkit.agreement import read_gold, read_labels, summarise
from rlhfkit.annotate import Policy, add_annotator, export, import_items, open_store, status
from rlhfkit.annotate.server import serve_in_background
from rlhfkit.annotate.settings import db_url_for
from rlhfkit.callables import check_pairwise, load_callable
from rlhfkit.data import load, write_jsonl
from rlhfkit.data.io import atomic_open
from rlhfkit.errors import UserError, display_path
from rlhfkit.lineage import login_name, sha256_file
from rlhfkit.pipeline.layout import RunPaths
from rlhfkit.pipeline.simulated import SimulatedAnnotator, judge_panel, run_panel
from rlhfkit.project import Project

PanelFactory = Callable[[Project, Policy, int], Sequence[SimulatedAnnotator]]
"""(project, annotation policy, seed) -> the simulated annotators (the demo's panel)."""


class Waiting(Exception):
    """The stage cannot finish yet: people are still labelling. Not an error: the message
    says what to do, and the next `rlhfkit run` goes on from here."""


@dataclass(frozen=True)
class Labeler:
    """Who labels: people (None), or a simulated panel."""

    panel: PanelFactory | None = None
    name: str = "people"
    code: str | None = None
    """A hash of the simulated labeler's code: a new version of it labels again."""

    @classmethod
    def from_spec(cls, project: Project) -> Labeler:
        run = project.spec.run
        if run.labeler == "people":
            return cls()
        where, _, name = run.labeler.rpartition(":")
        target = run.labeler
        if where.endswith(".py") and not Path(where).is_absolute():
            target = f"{project.root / where}:{name}"  # a file of the project's
        judge = load_callable(target, "[run] labeler")
        check_pairwise(judge, "[run] labeler")

        def panel(project: Project, policy: Policy, seed: int) -> list:
            return judge_panel(judge, run.simulated_annotators, run.simulated_noise, seed)

        return cls(panel, run.labeler, code_hash(judge))


def code_hash(fn: Callable) -> str | None:
    """The hash of the file a function (or callable object) is defined in; None when it has
    none. Helpers it imports from other files are not covered: `--from annotate` relabels."""
    module = sys.modules.get(getattr(fn, "__module__", None) or type(fn).__module__)
    source = getattr(module, "__file__", None)
    return sha256_file(Path(source)) if source and Path(source).is_file() else None


def annotate(paths: RunPaths, project: Project, labeler: Labeler, seed: int = 0) -> dict[str, Any]:
    """Label (or check on the people labelling) and write the training files."""
    folder = paths.annotation
    folder.mkdir(parents=True, exist_ok=True)
    policy = Policy.from_project(project)
    anchors = project.data_path("anchors") if project.spec.data.anchors else None
    if labeler.panel is None:
        url = db_url_for(project.root, None)
        info = _people(url, paths, project, policy, anchors, seed)
    else:
        url = f"sqlite:///{folder / 'annotations.sqlite'}"
        info = _simulated(url, paths, project, policy, labeler, anchors, seed)
    info |= _training_files(paths, project, anchors)
    _write_json(folder / "panel.json", info)
    return info


def _simulated(url, paths, project, policy, labeler, anchors, seed) -> dict[str, Any]:
    """A fresh store of the run's own; the panel labels through the real app over HTTP."""
    for stale in paths.annotation.glob("annotations.sqlite*"):  # a half-labelled store
        stale.unlink()
    store = open_store(url, create=True)
    try:
        import_items(
            store, policy, items=paths.candidates, anchors=anchors, actor=login_name(), seed=seed
        )
        panel = list(labeler.panel(project, policy, seed))
        tokens = {a.name: add_annotator(store, a.name) for a in panel}
        with serve_in_background(store.url, project, seed=seed) as base_url:
            run = run_panel(base_url, tokens, panel)
        info = _export(store, policy, paths)
    finally:
        store.close()
    return {
        "simulated": True,
        "labeler": labeler.name,
        "annotators": [_describe(a) for a in panel],
        "labels": run.labels,
        "seconds": round(run.seconds, 2),
        **info,
    }


def _describe(annotator: Any) -> dict[str, Any]:
    describe = getattr(annotator, "describe", None)
    return describe() if describe else {"name": annotator.name}


def _people(url, paths, project, policy, anchors, seed) -> dict[str, Any]:
    """The project's store: import once, then wait until the queue is done."""
    imported = paths.annotation / "imported.json"
    candidates = sha256_file(paths.candidates)
    store = open_store(url, create=True)
    try:
        if not imported.exists():
            _refuse_foreign_store(store, url)
            import_items(
                store,
                policy,
                items=paths.candidates,
                anchors=anchors,
                actor=login_name(),
                seed=seed,
            )
            _write_json(imported, {"candidates": candidates, "store": _safe(url)})
        elif (record := strict_json.loads(imported.read_text()))["store"] != _safe(url):
            raise UserError(
                f"the pairs were imported for labelling into {record['store']}, not {_safe(url)} "
                "(RLHFKIT_DB_URL changed?); set it back, or move "
                f"{display_path(imported)} aside to import them into the new store"
            )
        elif record.get("candidates") != candidates:
            raise UserError(
                f"{display_path(paths.candidates)}: changed since it was imported into "
                f"{_safe(url)} for labelling; the labels there are for the old pairs. Move "
                "that store aside (nothing is deleted for you), remove "
                f"{display_path(imported)}, and run again"
            )
        state = status(store, policy)
        if not _finished(state):
            raise Waiting(_instructions(project, url, state))
        return {"simulated": False, "labeler": "people", **_export(store, policy, paths)}
    finally:
        store.close()


def _refuse_foreign_store(store, url: str) -> None:
    if status(store, Policy())["progress"]["labels"]:
        raise UserError(
            f"{_safe(url)}: this annotation store already holds labels that this run did not "
            "import; move it aside or name another with RLHFKIT_DB_URL"
        )


def _finished(state: dict[str, Any]) -> bool:
    progress, gate = state["progress"], state["gate"]
    queue_open = gate.get("main_queue_open") or gate.get("overridden")
    return bool(
        queue_open and progress["items"] and progress["complete_items"] >= progress["items"]
    )


def _instructions(project: Project, url: str, state: dict[str, Any]) -> str:
    p, gate = state["progress"], state["gate"]
    where = display_path(project.root)
    db = "" if url == db_url_for(project.root, None) else f" --db {_safe(url)}"
    lines = [
        f"waiting for people to label: {p['complete_items']} of {p['items']} pairs have "
        f"{p['overlap']} labels; {p['labels']} labels so far. The calibration gate "
        + (
            "was overridden."
            if gate.get("overridden")
            else "has passed."
            if gate.get("main_queue_open")
            else "has not passed yet."
        ),
        "What to do:",
        f"  rlhfkit annotate add-annotator NAME --project {where}{db}   (once per person; "
        "prints their login token)",
        f"  rlhfkit annotate serve --project {where}{db}   (the web app; send each person "
        "the address and their token)",
        f"  rlhfkit annotate status --project {where}{db}   (progress, the gate, agreement, drift)",
        "Then run the same `rlhfkit run` again: it goes on once the gate passed and every "
        f"pair has its labels. Until then, {p['overlap']} people at least must label each pair. "
        "If the gate fails, `annotate status` names who drives the disagreement and what to "
        f"do: `rlhfkit annotate remove NAME --project {where} --reason TEXT`, `annotate "
        "recalibrate --same-items|--fresh`, or `annotate override-gate --reason TEXT`.",
    ]
    return "\n".join(lines)


def _safe(url: str) -> str:
    """A store's address without a password."""
    head, at, tail = url.rpartition("@")
    if not at or "://" not in head:
        return url
    scheme, _, creds = head.partition("://")
    return f"{scheme}://{creds.split(':')[0]}@{tail}"


def _export(store, policy: Policy, paths: RunPaths) -> dict[str, Any]:
    folder = paths.annotation
    state = status(store, policy)
    try:
        result = export(
            store,
            policy,
            paths.prefs,
            labels_out=folder / "labels.jsonl",
            gold_out=folder / "gold.jsonl",
        )
    except UserError as e:  # the export's hints name its own flags; say where to look
        where = f"rlhfkit annotate status --project {display_path(paths.project)}"
        if store.url != db_url_for(paths.project, None):
            where += f" --db {_safe(store.url)}"
        raise UserError(str(e), hint=f"`{where}` shows the labels and who gave them") from None
    _write_json(folder / "status.json", state)
    _write_json(folder / "agreement.json", _agreement(folder, policy))
    return {
        "exported": result.rows,
        "ties": result.ties,
        "both_bad": result.both_bad,
        "no_majority": result.no_majority,
        "excluded_annotators": result.excluded_annotators,
    }


def _agreement(folder: Path, policy: Policy) -> dict[str, Any]:
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


# --- training files ---------------------------------------------------------------------------


def _training_files(paths: RunPaths, project: Project, anchors: Path | None) -> dict[str, Any]:
    """The export split by prompt; the anchors as pairs; DPO's selection by pairing."""
    run = project.spec.run
    train, heldout = split_by_prompt(load(paths.prefs).rows, run.heldout_share)
    gold = anchor_pairs(anchors) if anchors is not None and run.anchors_as_training else []
    write_jsonl(paths.prefs_train, train + gold)
    write_jsonl(paths.prefs_heldout, heldout)
    write_jsonl(paths.prefs_dpo, select_pairing(train, run.dpo_pairs) + gold)
    return {"train_pairs": len(train), "anchor_pairs": len(gold), "heldout_pairs": len(heldout)}


def split_by_prompt(rows: list[dict], share: float) -> tuple[list[dict], list[dict]]:
    """A held-out share of the prompts, with all their preference pairs, by a hash of the
    prompt: stable across reruns, independent of row order, and no held-out pair shares a
    prompt (or a reply) with a training pair."""
    train, heldout = [], []
    for row in rows:
        prompt = strict_json.dumps(row.get("prompt"), sort_keys=True)
        h = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) / 16**8
        (heldout if h < share else train).append(row)
    return train, heldout


def anchor_pairs(anchors: Path) -> list[dict[str, Any]]:
    """The anchor items as preference rows: the team wrote their answers down, so they are
    training data too. They teach what the panel's pairs rarely show side by side: a reply
    that acts against one that only apologises, echoes or hedges. Ties and 'both bad'
    anchors have no side to learn and are left out."""
    rows = []
    for item in load(anchors).rows:
        a, b = item["response_a"], item["response_b"]
        label = str(item["label"]).upper()
        if label not in ("A", "B"):
            continue
        chosen, rejected = (a, b) if label == "A" else (b, a)
        rows.append(  # margin 1: as sure as a unanimous panel vote
            {
                "id": item.get("id"),
                "prompt": item["prompt"],
                "chosen": chosen,
                "rejected": rejected,
                "margin": 1.0,
            }
        )
    return rows


def select_pairing(rows: list[dict], pairing: str) -> list[dict]:
    """The pairs whose `pairing` is `pairing` ('same model': two replies of the trained model,
    also rows without the column; 'across models'), or every pair ('all')."""
    if pairing == "all":
        return list(rows)
    return [r for r in rows if r.get("pairing", "same model") == pairing]


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        strict_json.dump(strict_json.nulled(data), f, indent=2, default=str)
