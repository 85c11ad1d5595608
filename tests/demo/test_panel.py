"""The simulated annotator panel: the rubric scored by code, and annotators whose noise,
position bias, length bias and drift come out at the rates they are configured with."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from rlhfkit.agreement import Labels, anchor_drift, annotator_stats, calibration_gate
from rlhfkit.demo.panel import (
    SimulatedAnnotator,
    default_panel,
    email_text,
    rubric_judge,
    rubric_scores,
)
from rlhfkit.templates import support_replies
from tests.conftest import run_cli

SIGN = "\n\nBest regards,\nThe Northwind Support Team"
EMAIL = "Hi, my kettle (order #48213) arrived broken. The box was crushed. What can you do?\nSam"
REPLIES = {  # best first, as the rubric ranks them
    "ideal": "I'm sorry your kettle arrived damaged. I have sent a free replacement for order "
    "#48213 today; it will arrive within two working days. You do not need to return the "
    "broken one." + SIGN,
    "acts, no sign-off": "I have sent a free replacement for order #48213 today.",
    "acts, rambles": "Thank you for reaching out to us about this. I am so sorry to hear that "
    "your kettle arrived broken and that the box was crushed; that is never the experience we "
    "want our customers to have, and I completely understand how disappointing it must be to "
    "open a parcel and find it damaged. To put things right, I have sent a free replacement "
    "kettle for order #48213, and it should reach you within two working days. There is no "
    "need to send the broken one back to us; you can recycle it." + SIGN,
    "echo": "Your kettle from order #48213 arrived broken and the box was crushed." + SIGN,
    "apology": "We are so sorry to hear that. We apologize for any inconvenience." + SIGN,
    "deflects": "What a great question! As an AI I cannot access orders. Please contact "
    "customer service.",
    "hedges": "I think we could maybe look into a replacement, but I'm not sure.",
}


def _spec() -> dict:
    text = resources.files("rlhfkit.templates").joinpath("support_replies.toml").read_text()
    return tomllib.loads(text)


# --- the rubric by code -----------------------------------------------------------------------


def test_borderline_examples_come_out_as_the_team_agreed():
    for ex in _spec()["rubric"]["borderline_examples"]:
        pref, why = rubric_judge(ex["prompt"], ex["response_a"], ex["response_b"])
        assert pref == ex["preferred"], (ex["prompt"], why)
        mirrored = {"a": "b", "b": "a"}.get(pref, pref)
        assert rubric_judge(ex["prompt"], ex["response_b"], ex["response_a"])[0] == mirrored


def test_hand_made_replies_rank_as_the_rubric_says():
    overall = [rubric_scores(EMAIL, r)["overall"] for r in REPLIES.values()]
    assert overall == sorted(overall, reverse=True), dict(zip(REPLIES, overall, strict=True))
    assert len(set(overall)) == len(overall)


def test_hand_computed_scores():
    s = rubric_scores(EMAIL, REPLIES["ideal"])
    assert s == {"helpful": 1.0, "tone": 1.0, "concise": 1.0, "overall": 1.0}
    # acts on the topic (0.7 + 0.2), says when (+0.05), names the order (+0.05); no sign-off
    # costs tone 0.35: overall 0.5 * 1 + 0.3 * 0.65 + 0.2 * 1
    s = rubric_scores(EMAIL, REPLIES["acts, no sign-off"])
    assert s == {"helpful": 1.0, "tone": 0.65, "concise": 1.0, "overall": 0.895}
    # echo: no step, mostly the email's own words -> 0.05 at most
    assert rubric_scores(EMAIL, REPLIES["echo"])["helpful"] == 0.05
    # hedges: 'i think', 'maybe', 'not sure' (three, capped at 0.5) and no sign-off (0.35)
    assert rubric_scores(EMAIL, REPLIES["hedges"])["tone"] == pytest.approx(0.15)
    # 96 words: 1 - (96 - 60) / 60, minus one filler phrase (0.15)
    words = len(REPLIES["acts, rambles"].split())
    assert rubric_scores(EMAIL, REPLIES["acts, rambles"])["concise"] == pytest.approx(
        1 - (words - 60) / 60 - 0.15, abs=1e-4
    )


@pytest.mark.parametrize(
    ("reply", "acts"),
    [
        ("I have sent a replacement.", True),
        ("I sent it this morning.", True),
        ("We will refund you.", True),
        ("We’ll send a new one.", True),  # a curly apostrophe, as models write it
        ("I'm arranging a courier.", True),
        ("Your refund has been issued.", True),
        ("I've gone ahead and refunded it.", True),
        ("Done: order #1 is cancelled.", True),
        ("We also send them out to other stores.", False),  # a habit, not a step
        ("We can refund you if you like.", False),  # an offer
        ("I might send a replacement.", False),  # a hedge
        ("I cannot refund this order.", False),
    ],
)
def test_what_counts_as_a_concrete_step(reply, acts):
    helpful = rubric_scores("My kettle arrived broken.", reply)["helpful"]
    assert (helpful >= 0.5) == acts, helpful


def test_a_short_echo_loses_to_a_long_reply_that_acts():
    # The DPO collapse the issue describes: ten-word echoes that pass 'concise' and 'tone'.
    pref, why = rubric_judge(EMAIL, REPLIES["echo"], REPLIES["acts, rambles"])
    assert pref == "b" and "helpful" in why


def test_neither_helps_is_both_bad_unless_the_policy_forbids_it():
    assert rubric_judge(EMAIL, REPLIES["apology"], REPLIES["deflects"])[0] == "both_bad"
    pref, _ = rubric_judge(EMAIL, REPLIES["apology"], REPLIES["deflects"], allow_both_bad=False)
    assert pref == "a"


def test_identical_replies_tie():
    assert rubric_judge(EMAIL, REPLIES["ideal"], REPLIES["ideal"])[0] == "tie"


def test_every_ideal_reply_beats_an_echo_of_its_email():
    _, _, sft = support_replies.build()
    for row in sft:
        email = email_text(row["prompt"])
        ideal = row["completion"][0]["content"]
        echo = email.split("\n")[0].split(". ")[-1] + SIGN
        assert rubric_judge(row["prompt"], ideal, echo)[0] == "a", (email, ideal)
        assert rubric_scores(email, ideal)["overall"] >= 0.9


def test_email_text_takes_the_last_user_turn():
    msgs = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hello"}]
    assert email_text(msgs) == "hello" and email_text("plain") == "plain"


# --- the annotators -----------------------------------------------------------------------------

CLEAR = (REPLIES["ideal"], REPLIES["echo"])  # the rubric is sure: the first is better


def _shown(i: int) -> tuple[str, str, str]:
    """Alternate the display order; returns (first, second, the rubric's answer)."""
    good, bad = CLEAR
    return (good, bad, "first") if i % 2 == 0 else (bad, good, "second")


def _within(rate: float, p: float, n: int) -> bool:
    return abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-9


def test_flip_noise_comes_out_at_the_configured_rate():
    n = 3000
    ann = SimulatedAnnotator("sim-test", noise=0.2, seed=1)
    wrong = sum(ann.label(EMAIL, *_shown(i)[:2]) != _shown(i)[2] for i in range(n))
    assert _within(wrong / n, 0.2, n)


def test_position_bias_comes_out_at_the_configured_rate():
    n = 3000
    ann = SimulatedAnnotator("sim-test", noise=0.0, position_bias=0.3, seed=2)
    first = sum(ann.label(EMAIL, *_shown(i)[:2]) == "first" for i in range(n))
    # a lapse picks the first (0.3); otherwise the better one, shown first half of the time
    assert _within(first / n, 0.3 + 0.7 * 0.5, n)


def test_length_bias_flips_close_calls_towards_the_longer_reply():
    short, long = REPLIES["ideal"], REPLIES["acts, rambles"]  # the rubric prefers short
    careful = SimulatedAnnotator("sim-careful", noise=0.0)
    verbose = SimulatedAnnotator("sim-verbose", noise=0.0, length_bias=0.25)
    for first, second in ((short, long), (long, short)):
        longer = "first" if first is long else "second"
        assert careful.label(EMAIL, first, second) != longer
        assert verbose.label(EMAIL, first, second) == longer
    # a clear difference in helpfulness is not overturned by length
    assert verbose.label(EMAIL, REPLIES["ideal"], REPLIES["echo"] + " " + "words " * 30) == "first"


def test_the_drifter_drifts_after_n_labels():
    ann = SimulatedAnnotator(
        "sim-drifter", noise=0.05, drift_after=1000, drift_noise=0.45, drift_span=200, seed=3
    )
    errors = [ann.label(EMAIL, *_shown(i)[:2]) != _shown(i)[2] for i in range(3200)]
    before, after = errors[:1000], errors[1200:]
    assert _within(sum(before) / len(before), 0.05, len(before))
    assert _within(sum(after) / len(after), 0.45, len(after))
    assert ann.current_noise() == pytest.approx(0.45)


def test_policies_are_respected():
    ann = SimulatedAnnotator("sim-test", noise=0.3, position_bias=0.2, seed=4)
    pairs = [(REPLIES["ideal"], REPLIES["ideal"]), (REPLIES["apology"], REPLIES["deflects"])]
    forced = {ann.label(EMAIL, a, b, allow_tie=False, allow_both_bad=False) for a, b in pairs * 200}
    assert forced == {"first", "second"}
    free = {
        SimulatedAnnotator("sim-t", noise=0.0).label(EMAIL, a, b, allow_tie=True) for a, b in pairs
    }
    assert free == {"tie", "both_bad"}


def test_same_seed_same_labels():
    runs = [
        [
            SimulatedAnnotator("sim-x", noise=0.3, position_bias=0.2, seed=7).label(
                EMAIL, *_shown(i)[:2]
            )
            for i in range(200)
        ]
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_per_criterion_answers_judge_each_criterion_on_its_own():
    exact = SimulatedAnnotator("sim-exact", noise=0.0)
    ideal, terse = REPLIES["ideal"], REPLIES["acts, no sign-off"]
    assert exact.criteria(EMAIL, ideal, REPLIES["apology"])["helpful"] == "first"
    assert exact.criteria(EMAIL, terse, ideal)["tone"] == "second"  # no sign-off
    criteria = ("helpful", "tone", "concise")
    assert exact.criteria(EMAIL, ideal, ideal) == dict.fromkeys(criteria, "tie")
    mirrored = {"first": "second", "second": "first", "tie": "tie"}
    for a, b in ((ideal, terse), (REPLIES["echo"], REPLIES["apology"])):
        there, back = exact.criteria(EMAIL, a, b), exact.criteria(EMAIL, b, a)
        assert back == {k: mirrored[v] for k, v in there.items()}  # the order shown is moot


def test_per_criterion_answers_leave_the_overall_labels_unchanged():
    plain, asked = (SimulatedAnnotator("sim-x", noise=0.3, seed=7) for _ in range(2))
    with_criteria = []
    for i in range(100):
        first, second = _shown(i)[:2]
        with_criteria.append(asked.label(EMAIL, first, second))
        asked.criteria(EMAIL, first, second)
    assert with_criteria == [plain.label(EMAIL, *_shown(i)[:2]) for i in range(100)]


def test_default_panel_is_a_labelled_simulation_with_one_drifter():
    panel = default_panel(5, seed=0)
    names = [a.name for a in panel]
    assert len(set(names)) == 5 and all(n.startswith("sim-") for n in names)
    assert [a.name for a in panel if a.drift_after is not None] == ["sim-drifter"]
    assert len({a.name for a in default_panel(9)}) == 9
    assert [a.name for a in default_panel(1)] == ["sim-careful"]
    with pytest.raises(ValueError):
        default_panel(0)


def test_a_panel_passes_calibration_and_only_the_drifter_is_flagged():
    """The default panel through the agreement library: calibration on 50 shared items, then
    each annotator's own queue with anchors (one in ten)."""
    import random

    rng = random.Random(0)
    _, _, sft = support_replies.build()
    rows = [(r["prompt"], r["completion"][0]["content"]) for r in sft]
    variants = [
        lambda e, ideal: ideal,
        lambda e, ideal: ideal.split(SIGN)[0],  # no sign-off
        lambda e, ideal: "I think maybe " + ideal[0].lower() + ideal[1:],  # hedged
        lambda e, ideal: email_text(e).split("\n")[0] + SIGN,  # echo
        lambda e, ideal: "Sorry to hear that." + SIGN,  # apology
    ]

    def pair():
        prompt, ideal = rng.choice(rows)
        a, b = rng.sample(variants, 2)
        return prompt, a(prompt, ideal), b(prompt, ideal)

    panel = default_panel(5, seed=0, drift_after=200)
    calibration = [pair() for _ in range(50)]
    anchors = [pair() for _ in range(60)]
    gold = {}
    records = []  # (item, annotator, label, shown_first)
    for ann in panel:
        queue = [(f"cal{i}", p) for i, p in enumerate(calibration)]
        for i in range(300):
            queue.append((f"{ann.name}-main{i}", pair()))
            if i % 5 == 4:
                queue.append((f"anchor{i // 5}", anchors[i // 5]))
        for name, (prompt, a, b) in queue:
            swap = rng.random() < 0.5
            shown = (b, a) if swap else (a, b)
            choice = ann.label(prompt, *shown)
            # the agreement library's labels: A / B (which reply, not which position)
            label = {"first": "B" if swap else "A", "second": "A" if swap else "B"}.get(
                choice, choice
            )
            if name.startswith("anchor"):
                gold[name] = {"a": "A", "b": "B"}.get(*[rubric_judge(prompt, a, b)[0]] * 2)
            records.append((name, ann.name, label, "B" if swap else "A"))
    labels = Labels.from_records(*zip(*records, strict=True))
    gate = calibration_gate(labels, [f"cal{i}" for i in range(50)], 0.65)
    assert gate.passed, gate
    gold_codes = {labels.item_names().index(k): labels.code_of(v) for k, v in gold.items()}
    _, alerts = anchor_drift(labels, gold_codes, window=20, threshold=0.7)
    # Only the below-threshold alerts: the 'fell 0.15 from calibration' rule also fires by
    # chance on steady annotators with 20-label windows (3 labels out of 20).
    assert {a.annotator for a in alerts if a.accuracy < 0.7} == {"sim-drifter"}, alerts
    stats = {s.annotator: s for s in annotator_stats(labels, gold_codes)}
    assert stats["sim-first-picker"].chose_first_rate > stats["sim-careful"].chose_first_rate


# --- through the annotation app's real HTTP API -------------------------------------------------


def _project(root: Path, **annotation) -> Path:
    """The example project with a small [annotation] table."""
    from rlhfkit.templates import init_project

    init_project(root)
    spec = root / "rlhfkit.toml"
    table = "[annotation]\n" + "".join(f"{k} = {v}\n" for k, v in annotation.items())
    spec.write_text(re.sub(r"\[annotation\]\n(?:[^\[].*\n|\n)*", table + "\n", spec.read_text()))
    return root


def _reply(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _pairs(n: int, seed: int, prefix: str) -> list[dict]:
    """Candidate pairs for the demo's task: two variants of the ideal reply to one email."""
    rng = random.Random(seed)
    _, _, sft = support_replies.build()
    variants = (
        lambda e, ideal: ideal,
        lambda e, ideal: ideal.split(SIGN)[0],  # no sign-off
        lambda e, ideal: "I think maybe " + ideal[0].lower() + ideal[1:],  # hedged
        lambda e, ideal: email_text(e).split("\n")[0] + SIGN,  # echo
        lambda e, ideal: "Sorry to hear that." + SIGN,  # apology
    )
    rows = []
    for i in range(n):
        row = sft[rng.randrange(len(sft))]
        ideal = row["completion"][0]["content"]
        a, b = rng.sample(variants, 2)
        rows.append(
            {
                "id": f"{prefix}{i}",
                "prompt": row["prompt"],
                "response_a": _reply(a(row["prompt"], ideal)),
                "response_b": _reply(b(row["prompt"], ideal)),
            }
        )
    return rows


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_panel_labels_through_the_real_app(tmp_path):
    """Calibration, the gate, anchors, overlap and export with five simulated annotators
    labelling concurrently over HTTP against a real server on SQLite."""
    from rlhfkit.annotate import Policy, add_annotator, export, import_items, open_store, status
    from rlhfkit.annotate.server import serve_in_background
    from rlhfkit.data import load
    from rlhfkit.pipeline.simulated import response_text, run_panel
    from rlhfkit.project import load_project

    root = _project(
        tmp_path / "project",
        overlap=3,
        calibration_size=12,
        agreement_threshold=0.65,
        anchor_rate=0.2,
        anchor_accuracy_threshold=0.7,
        recalibrate_every=0,
    )
    policy = Policy.from_project(load_project(root))
    anchors = _pairs(12, seed=1, prefix="anchor")
    for row in anchors:  # an anchor's known answer: the rubric's own verdict
        pref, _ = rubric_judge(
            row["prompt"], *map(response_text, (row["response_a"], row["response_b"]))
        )
        row["label"] = {"a": "A", "b": "B"}.get(pref, pref)
    db = f"sqlite:///{tmp_path / 'annotations.sqlite'}"
    store = open_store(db, create=True)
    import_items(
        store,
        policy,
        items=_write(tmp_path / "items.jsonl", _pairs(40, seed=0, prefix="item")),
        anchors=_write(tmp_path / "anchors.jsonl", anchors),
    )
    panel = default_panel(5, seed=0, drift_after=12)
    panel[-1].drift_span = 5  # fully drifted soon after calibration: visible at this size
    tokens = {a.name: add_annotator(store, a.name) for a in panel}

    with serve_in_background(db, root) as url:
        run = run_panel(url, tokens, panel, concurrent=True)
    assert set(run.last_reason.values()) == {"done"}, run
    assert run.passes >= 2  # the early finishers of calibration waited for the gate

    report = status(store, policy)
    gate = report["gate"]["rounds"][0]
    assert gate["passed"] and gate["percent_agreement"] >= 0.65 and gate["override"] is None
    progress = report["progress"]
    assert progress["complete_items"] == progress["items"] == 40
    # every main item has exactly `overlap` labels, every annotator did the calibration round
    assert sum(run.labels.values()) == progress["labels"]
    assert all(a["calibrated_round"] == 1 for a in report["annotators"])
    people = {a["annotator"]: a for a in report["annotators"]}
    # threads interleave differently on every run, so only a wide margin is asserted
    agreement = {k: v["majority_agreement"] for k, v in people.items()}
    assert min(agreement, key=agreement.get) == "sim-drifter", agreement

    out = tmp_path / "prefs.jsonl"
    result = export(store, policy, out, tmp_path / "labels.jsonl", tmp_path / "gold.jsonl")
    store.close()
    rows = load(out).rows
    assert len(rows) == result.rows >= 20
    left_out = result.ties + result.both_bad + result.no_majority + result.no_trusted_votes
    assert result.rows + left_out == 40 and result.incomplete == 0
    # the export is trainable preference data whose majority follows the rubric
    agree = sum(
        rubric_judge(r["prompt"], response_text(r["chosen"]), response_text(r["rejected"]))[0]
        == "a"
        for r in rows
    )
    assert agree / len(rows) >= 0.9

    # the same labels through `rlhfkit agreement`, then the report, as the demo does
    run_dir = tmp_path / "run"
    (run_dir / "annotation").mkdir(parents=True)
    shutil.copytree(root, run_dir / "project")
    (run_dir / "annotation" / "status.json").write_text(json.dumps(report))
    r = run_cli(
        "agreement", str(tmp_path / "labels.jsonl"), "--anchors", str(tmp_path / "gold.jsonl"),
        "--json", "--bootstrap", "100",
    )  # fmt: skip
    assert r.code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["n_annotators"] == 5 and summary["percent_agreement"] > 0.65
    (run_dir / "annotation" / "agreement.json").write_text(r.stdout)
    r = run_cli("report", str(run_dir))
    assert r.code == 0, r.stderr
    page = (run_dir / "report.html").read_text()
    assert "Simulated annotators." in page and "calibration gate" in page.lower()
    assert "<td>sim-drifter</td>" in page


def test_taking_turns_against_a_seeded_server_labels_the_same_way_every_run(tmp_path):
    """The demo's default: the annotators take turns, one request at a time, so a seeded
    server hands out the same tasks in the same order and the labels come out identical."""
    from rlhfkit.annotate import Policy, add_annotator, import_items, open_store, status
    from rlhfkit.annotate.server import serve_in_background
    from rlhfkit.pipeline.simulated import response_text, run_panel
    from rlhfkit.project import load_project

    root = _project(
        tmp_path / "project",
        overlap=3,
        calibration_size=6,
        agreement_threshold=0.5,
        anchor_rate=0.25,
        anchor_accuracy_threshold=0.7,
        recalibrate_every=0,
    )
    policy = Policy.from_project(load_project(root))
    items = _write(tmp_path / "items.jsonl", _pairs(16, seed=0, prefix="item"))
    anchors = _pairs(8, seed=1, prefix="anchor")
    for row in anchors:
        pair = map(response_text, (row["response_a"], row["response_b"]))
        pref, _ = rubric_judge(row["prompt"], *pair)
        row["label"] = {"a": "A", "b": "B"}.get(pref, pref)
    anchors = _write(tmp_path / "anchors.jsonl", anchors)

    def labelled(name: str, seed: int) -> list[tuple]:
        db = f"sqlite:///{tmp_path / name}"
        store = open_store(db, create=True)
        import_items(store, policy, items=items, anchors=anchors)
        panel = default_panel(3, seed=0, drift_after=10)
        tokens = {a.name: add_annotator(store, a.name) for a in panel}
        with serve_in_background(db, root, seed=seed) as url:
            run = run_panel(url, tokens, panel)
        assert set(run.last_reason.values()) == {"done"}, run
        assert status(store, policy)["progress"]["complete_items"] == 16
        with store.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT a.name, i.external_id, l.choice, l.label, l.criteria FROM labels l"
                " JOIN annotators a ON a.id = l.annotator_id JOIN items i ON i.id = l.item_id"
                " ORDER BY l.id"
            ).all()
        store.close()
        return [tuple(r) for r in rows]

    first, again, other = labelled("a.sqlite", 7), labelled("b.sqlite", 7), labelled("c.sqlite", 8)
    assert first == again
    # every label carries the panel's per-criterion answers, relative to the stored pair
    assert all(set(json.loads(c)) == {"helpful", "tone", "concise"} for *_, c in first)
    assert any(item.startswith("anchor") for _, item, *_ in first)
    assert first != other  # the seed does decide: display order and anchors differ


def test_taking_turns_ends_when_the_gate_fails(tmp_path):
    """Nobody can open a failed gate: after calibration every annotator is told to wait,
    and the turns stop there instead of polling forever."""
    from rlhfkit.annotate import Policy, add_annotator, import_items, open_store, status
    from rlhfkit.annotate.server import serve_in_background
    from rlhfkit.pipeline.simulated import run_panel
    from rlhfkit.project import load_project

    root = _project(
        tmp_path / "project",
        overlap=2,
        calibration_size=8,
        agreement_threshold=1.0,
        anchor_rate=0.0,
        anchor_accuracy_threshold=0.7,
        recalibrate_every=0,
    )
    policy = Policy.from_project(load_project(root))
    db = f"sqlite:///{tmp_path / 'a.sqlite'}"
    store = open_store(db, create=True)
    items = _write(tmp_path / "items.jsonl", _pairs(12, seed=0, prefix="item"))
    import_items(store, policy, items=items)
    panel = [SimulatedAnnotator("sim-a", noise=0.5), SimulatedAnnotator("sim-b", noise=0.5)]
    tokens = {a.name: add_annotator(store, a.name) for a in panel}
    with serve_in_background(db, root, seed=0) as url:
        run = run_panel(url, tokens, panel)
    gate = status(store, policy)["gate"]
    store.close()
    assert run.last_reason == {"sim-a": "calibration_gate", "sim-b": "calibration_gate"}
    assert run.labels == {"sim-a": 8, "sim-b": 8} and run.passes == 9  # 8 turns + the idle one
    assert not gate["main_queue_open"] and gate["rounds"][0]["passed"] is False
