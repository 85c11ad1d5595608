"""Export: the labels as preference rows `rlhfkit train rm` / `train dpo` read, plus the raw
per-annotator labels and the anchors' answers in the files `rlhfkit agreement` reads.

Aggregation, per item (main and calibration items; anchors are tests, not training data):

1. Annotators whose anchor accuracy is below `anchor_accuracy_threshold`, over at least
   `min_anchor_labels` anchor answers, are left out (those with fewer are kept: there is
   not yet enough evidence against them).
2. Without `include_incomplete`, only items with `overlap` labels are exported.
3. The most frequent answer wins. A or B: a row with `chosen` = the winner. `tie` or
   `both_bad`: the pair is counted and left out (the rubric's policies decide whether those
   answers exist at all; either way the pair says nothing about which reply is better). No
   single most frequent answer: counted as `no_majority` and left out.
4. `margin` = (votes for chosen - votes for rejected) / votes: 1 when unanimous, 1/3 for 2
   of 3; the reward model's Llama-2-style margin term reads it.

The manifest beside the export records the gate's history, including any override and its
reason, the excluded annotators, every count above, and every token revoked or rotated. The
labels file gets one too, with the gate and its threshold (what `rlhfkit agreement` reads).

With no row to export (the gate closed, every annotator left out, only ties), the labels
file and the anchors' answers are written all the same: they are no training data, and
`rlhfkit agreement` on a failed round is when a team needs them most. No preference file is
written then, and the refusal says which files were.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from rlhfkit import strict_json
from rlhfkit.annotate import models as m
from rlhfkit.annotate.annotators import token_events
from rlhfkit.annotate.gate_status import gate_summary, round_openers
from rlhfkit.annotate.rounds import gate_labels, gate_open
from rlhfkit.annotate.rules import Policy
from rlhfkit.annotate.status import LabelTable, annotator_quality, label_table
from rlhfkit.annotate.store import Store, shown_url
from rlhfkit.data import atomic_open, check_row, write_jsonl
from rlhfkit.errors import UserError, display_path
from rlhfkit.lineage import write_manifest

VOTE = {"tie": "tie", "both_bad": "both_bad"}


@dataclass
class ExportResult:
    out: Path
    rows: int
    ties: int = 0
    both_bad: int = 0
    no_majority: int = 0
    incomplete: int = 0
    no_trusted_votes: int = 0
    excluded_annotators: list[str] = field(default_factory=list)
    removed_annotators: list[str] = field(default_factory=list)
    """Taken off the round by `rlhfkit annotate remove`: their votes are left out too."""
    labels: int = 0
    """Rows written to the labels file (0 when none was asked for)."""
    gate_overridden: bool = False


def export(
    store: Store,
    policy: Policy,
    out: Path | str,
    labels_out: Path | str | None = None,
    gold_out: Path | str | None = None,
    include_incomplete: bool = False,
) -> ExportResult:
    """Write the aggregated preference rows to `out` (JSONL), and optionally every label
    (`labels_out`) and the anchors' answers (`gold_out`); every file atomically."""
    out = Path(out)
    if out.suffix != ".jsonl":
        raise UserError(f"{display_path(out)}: export to a .jsonl file")
    table, items, gate, tokens, marks = _read_store(store, policy)
    # 1. annotators with too low an anchor accuracy are left out
    quality = annotator_quality(table, policy, replicates=0) if table.label else None
    excluded = sorted(
        a
        for a, s in (quality["per_annotator"] if quality else {}).items()
        if s["excluded_from_export"]
    )
    result = ExportResult(
        out,
        0,
        excluded_annotators=excluded,
        removed_annotators=marks.removed,
        gate_overridden=gate["overridden"],
    )
    # 2-4. the items with enough labels, each aggregated into a row (or counted and left out)
    rows = _aggregate_items(table, items, policy, include_incomplete, result)
    written = []  # the labels and the anchors' answers, with a preference row or without
    if labels_out is not None:
        result.labels = _write_labels(Path(labels_out), table, marks)
        write_manifest(  # the gate, threshold included: `rlhfkit agreement` judges as the store
            Path(labels_out),
            kind="labels",
            inputs={},
            config={"agreement_threshold": policy.agreement_threshold},
            annotation={"store": shown_url(store.url), "gate": gate},
        )
        written.append(f"{display_path(labels_out)} ({result.labels} labels)")
    if gold_out is not None:
        anchors = _write_gold(Path(gold_out), items)
        written.append(f"{display_path(gold_out)} ({anchors} anchors' answers)")
    if not rows:
        raise _nothing_to_export(result, table, quality, gate, policy, len(items), written)
    result.rows = write_jsonl(out, rows)
    write_manifest(
        out,
        kind="preferences",
        inputs={},
        config={
            "overlap": policy.overlap,
            "include_incomplete": include_incomplete,
            "anchor_accuracy_threshold": policy.anchor_accuracy_threshold,
            "min_anchor_labels": policy.min_anchor_labels,
        },
        annotation={
            "store": shown_url(store.url),
            "rubric_version": policy.rubric_version,
            "gate": gate,
            "token_events": tokens,
            "counts": {k: v for k, v in asdict(result).items() if k not in ("out",)},
        },
    )
    return result


@dataclass
class Marks:
    """What the labels file says of each label beyond the label itself."""

    round: dict[int, int]
    """Item id -> its calibration round."""
    gate: set[tuple[int, str]]
    """(item id, annotator) of the labels the deciding round's gate was computed on."""
    removed: list[str]
    """Annotators removed from the round."""


def _read_store(
    store: Store, policy: Policy
) -> tuple[LabelTable, dict[int, Any], dict[str, Any], list[dict[str, Any]], Marks]:
    """In one read: every label, every item by id, the gate's history, the token events, and
    the marks the labels file carries."""
    with store.read() as conn:
        table = label_table(conn)
        items = {
            r.id: r
            for r in conn.execute(
                select(
                    m.Item.id,
                    m.Item.external_id,
                    m.Item.prompt,
                    m.Item.response_a,
                    m.Item.response_b,
                    m.Item.kind,
                    m.Item.labels,
                    m.Item.gold,
                    m.Item.extra,
                ).order_by(m.Item.id)
            )
        }
        gate = gate_summary(
            conn.execute(select(m.Round).order_by(m.Round.id)).all(),
            gate_open(conn),
            policy,
            round_openers(conn),
        )
        tokens = token_events(conn)
        marks = Marks(
            round=dict(conn.execute(select(m.Item.id, m.Item.round).where(m.Item.round > 0)).all()),
            gate=_gate_marks(conn, gate["round"]),
            removed=sorted(
                conn.execute(select(m.Annotator.name).where(m.Annotator.removed_at.is_not(None)))
                .scalars()
                .all()
            ),
        )
    return table, items, gate, tokens, marks


def _gate_marks(conn: Any, round_id: int | None) -> set[tuple[int, str]]:
    """The labels the gate's number was computed on (none while it is not evaluated)."""
    coded = gate_labels(conn, round_id) if round_id else None
    if coded is None or len(coded.annotators) < 2:
        return set()
    items, names = coded.items.tolist(), coded.annotators.tolist()
    return {(int(items[i]), names[a]) for i, a in zip(coded.item, coded.annotator, strict=True)}


def _aggregate_items(
    table: LabelTable,
    items: dict[int, Any],
    policy: Policy,
    include_incomplete: bool,
    result: ExportResult,
) -> list[dict]:
    """The preference row of every labeled pair that has enough trusted votes and a winner;
    the pairs left out are counted in `result`."""
    votes: dict[int, dict[str, str]] = {}
    item_versions: dict[int, set[str]] = {}
    left_out = set(result.excluded_annotators) | set(result.removed_annotators)
    for i, item_id in enumerate(table.item_id):
        if table.kind[i] in (m.ANCHOR, m.RECHECK) or table.annotator[i] in left_out:
            continue
        votes.setdefault(item_id, {})[table.annotator[i]] = table.label[i]
        item_versions.setdefault(item_id, set()).add(table.rubric_version[i])
    rows = []
    for item_id, item in sorted(items.items()):
        if item.kind in (m.ANCHOR, m.RECHECK) or item.labels == 0:
            continue
        if item.labels < policy.overlap and not include_incomplete:
            result.incomplete += 1
            continue
        given = votes.get(item_id)
        if not given:
            result.no_trusted_votes += 1
            continue
        row = _aggregate(item, given, ",".join(sorted(item_versions[item_id])), result)
        if row is not None:
            check_row(row)  # our own output must be what `data validate` accepts
            rows.append(row)
    return rows


def _aggregate(item: Any, given: dict[str, str], version: str, result: ExportResult) -> dict | None:
    tally = Counter(given.values())
    ranked = tally.most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        result.no_majority += 1
        return None
    winner = ranked[0][0]
    if winner == "tie":
        result.ties += 1
        return None
    if winner == "both_bad":
        result.both_bad += 1
        return None
    loser = "B" if winner == "A" else "A"
    chosen, rejected = (
        (item.response_a, item.response_b) if winner == "A" else (item.response_b, item.response_a)
    )
    names = sorted(given)
    # The item's other columns (e.g. a topic to slice `eval rm` by) pass through, except
    # `truncated`, whose [A, B] order no longer matches once A and B become chosen/rejected.
    extra = {k: v for k, v in (item.extra or {}).items() if k != "truncated"}
    return extra | {
        "id": item.external_id,
        "prompt": item.prompt,
        "chosen": chosen,
        "rejected": rejected,
        "annotator_ids": names,
        "votes": {
            a: VOTE.get(given[a], "chosen" if given[a] == winner else "rejected") for a in names
        },
        "tie": False,
        "both_bad": False,
        "rubric_version": version,
        "margin": (tally[winner] - tally[loser]) / len(given),
    }


def _write_labels(path: Path, table: Any, marks: Marks) -> int:
    """Long format, one row per label: what `rlhfkit agreement LABELS` reads. `round`: the
    item's calibration round (null for main items and anchors); `gate`: the label is one the
    gate's number was computed on, so `rlhfkit agreement` shows the store's gate."""
    with atomic_open(path) as f:
        for i in range(len(table.label)):
            row = {
                "item": table.external_id[i],
                "annotator": table.annotator[i],
                "label": table.label[i],
                "shown_first": table.shown_first[i],
                "timestamp": table.created_at[i],
                "phase": table.phase[i],
                "anchor": table.kind[i] == m.ANCHOR,
                "round": marks.round.get(table.item_id[i]),
                "gate": (table.item_id[i], table.annotator[i]) in marks.gate,
                "rubric_version": table.rubric_version[i],
                "criteria": table.criteria[i],
                "rationale": table.rationale[i],
                "seconds": table.seconds[i],
            }
            f.write(strict_json.dumps(row, ensure_ascii=False) + "\n")
    return len(table.label)


def _write_gold(path: Path, items: dict) -> int:
    rows = [{"item": i.external_id, "label": i.gold} for i in items.values() if i.kind == m.ANCHOR]
    return write_jsonl(path, rows)


def _closed(gate: dict) -> str:
    """Why the latest round keeps the main queue closed."""
    latest = gate["rounds"][-1]
    if latest["passed"] is None:
        return f"round {latest['round']} waits for a second annotator to finish it"
    return (
        f"round {latest['round']}: percent agreement {latest['percent_agreement']:.2f}, "
        f"below {gate['threshold']:.2f}"
    )


def _nothing_to_export(
    r: ExportResult,
    table: Any,
    quality: Any,
    gate: dict,
    policy: Policy,
    n_items: int,
    written: list[str],
) -> UserError:
    """The refusal of an empty export, naming its cause: no labels, only anchors labeled,
    every annotator left out, pairs short of the overlap, only ties, the gate closed; and
    the files written all the same (`written`: the labels, the anchors' answers)."""
    reasons, hints = [], []
    labeled = {i for i, kind in zip(table.item_id, table.kind, strict=True) if kind != m.ANCHOR}
    anchors = len(table.gold)
    if not labeled:
        what = f"{n_items - anchors} pairs and {anchors} anchors in the store"
        if table.label:
            what += f", {len(table.label)} labels on anchors"
        reasons.append(f"no pair has a label yet ({what}; anchors are tests, never exported)")
        hints.append("annotators label at `rlhfkit annotate serve`")
    else:
        parts = [
            (r.incomplete, f"with fewer than {policy.overlap} labels"),
            (r.no_trusted_votes, "labeled only by left-out annotators"),
            (r.ties, "ties"),
            (r.both_bad, "both bad"),
            (r.no_majority, "without a single most frequent answer"),
        ]
        counts = ", ".join(f"{n} {what}" for n, what in parts if n)
        labelers = {
            a for a, kind in zip(table.annotator, table.kind, strict=True) if kind != m.ANCHOR
        }
        if labelers <= set(r.excluded_annotators) | set(r.removed_annotators):
            reasons.append("every annotator who labeled pairs is left out for low anchor accuracy")
        reasons.append(f"{len(labeled)} labeled pairs: {counts}")
        if r.incomplete:
            hints.append("--include-incomplete exports pairs with fewer labels than the overlap")
        if r.ties or r.both_bad:
            hints.append(
                "ties and both-bad answers say nothing about which reply is better: they are "
                "counted, never exported"
            )
    if r.excluded_annotators:
        per = quality["per_annotator"]
        who = ", ".join(
            f"{a} {per[a]['anchor_accuracy']:.2f} "
            f"({round(per[a]['anchor_accuracy'] * per[a]['anchor_items'])} of "
            f"{per[a]['anchor_items']} anchors right)"
            for a in r.excluded_annotators
        )
        reasons.append(
            f"left out for anchor accuracy below the threshold "
            f"{policy.anchor_accuracy_threshold:.2f} (judged once they have "
            f"{policy.min_anchor_labels} anchor answers): {who}"
        )
        hints.append(
            "check the anchors' known answers (the file imported with --anchors) and these "
            "annotators' work (`rlhfkit annotate status` shows each one's anchor accuracy); if "
            "the anchors are right, retrain or replace the annotators; if they are ambiguous, "
            "fix them, or lower anchor_accuracy_threshold in the spec's [annotation] table"
        )
    if not gate["main_queue_open"] and gate["rounds"]:
        reasons.append(
            f"the calibration gate is closed ({_closed(gate)}), so only calibration pairs have "
            "labels"
        )
        hints.append(
            "the main queue opens when a round passes, or with `rlhfkit annotate override-gate "
            "--reason ...`"
        )
    if len(hints) < 2:
        hints.append("`rlhfkit annotate status` shows where annotation stands")
    done = "nothing written"
    if written:  # `rlhfkit agreement` reads the labels of a failed round
        done = f"no preferences written; written all the same: {', '.join(written)}"
    return UserError(f"nothing to export: {'; '.join(reasons)}; {done}", hint="; ".join(hints))
