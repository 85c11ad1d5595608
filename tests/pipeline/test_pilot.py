"""The pilot: a simulated panel labels a round with the team's own rubric through the real
annotation app (real server, real HTTP), and the numbers it reports are the ones the planted
judge and slips imply; the rule judge on hand-built pairs; the LLM judge against an
OpenAI-compatible server."""

from __future__ import annotations

import importlib.util
import json
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rlhfkit.criteria import SuccessCriterion
from rlhfkit.errors import UserError
from rlhfkit.evaluate.judges import EndpointConfig
from rlhfkit.pipeline.pilot import PanelSettings, PilotConfig, parse_override, run_pilot
from rlhfkit.pipeline.pilot_judges import (
    RubricLLMJudge,
    RuleJudge,
    make_pilot_judge,
    parse_rubric_answer,
    rubric_prompt,
)
from rlhfkit.project import load_project
from tests.conftest import run_cli, write_lines
from tests.pipeline.test_run import JUDGE as RUN_JUDGE
from tests.pipeline.test_run import SPEC as RUN_SPEC

# test_run's project (its task, data files, rubric and criteria: 'short' now at most 6
# words), with annotation and reward settings of its own
SPEC = RUN_SPEC[: RUN_SPEC.index("[annotation]")].replace("max = 12", "max = 6") + (
    """[annotation]
calibration_size = 10
overlap = 3
anchor_rate = 0.1

[train.reward]
epochs = 2.0
batch_size = 4
"""
)

# test_run's judge, with a rationale
JUDGE = RUN_JUDGE.replace("def shorter", "def _shorter") + (
    "\n\ndef shorter(prompt, a, b):\n    return _shorter(prompt, a, b), 'the shorter one'\n"
)


def make_pilot_project(root: Path, pairs: int = 40) -> Path:
    """A project, its judge, anchors whose answer is the shorter reply, and `pairs`
    candidates in which the replies never have the same length."""
    (root / "data").mkdir(parents=True)
    (root / "artifacts").mkdir()
    (root / "rlhfkit.toml").write_text(SPEC)
    (root / "judge.py").write_text(JUDGE)
    questions = [f"What is {i} plus {i}?" for i in range(pairs)]
    write_lines(root / "data" / "prompts.jsonl", [{"prompt": q} for q in questions])
    write_lines(
        root / "data" / "anchors.jsonl",
        [
            {"id": f"a{i}", "prompt": f"What is {i} times 2?", "response_a": f"{2 * i}.",
             "response_b": f"Well, I think it is {2 * i}, maybe.", "label": "A"}
            for i in range(6)
        ],
    )  # fmt: skip
    rows = []
    for i, q in enumerate(questions):
        short, long = f"{2 * i}.", f"Well, {i} plus {i} is {2 * i}, I think, maybe."
        a, b = (short, long) if i % 2 else (long, short)
        rows.append({"id": f"c{i}", "prompt": q, "response_a": a, "response_b": b})
    write_lines(root / "artifacts" / "candidates.jsonl", rows)
    return root


def _pilot(root: Path, judge: str = "judge.py:shorter", **kw) -> dict:
    project = load_project(root)
    judge_obj = kw.pop("judge_obj", None) or make_pilot_judge(judge, project)
    panel = kw.pop("panel", PanelSettings(3, {"noise": 0.0}))
    cfg = PilotConfig(
        out=root / "artifacts" / "pilot",
        pairs=root / "artifacts" / "candidates.jsonl",
        panel=panel,
        train_rm=kw.pop("train_rm", False),
        **kw,
    )
    return run_pilot(project, judge_obj, cfg)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_noiseless_rubric_in_code_agrees_fully_and_passes_the_gate(tmp_path):
    root = make_pilot_project(tmp_path / "p")
    s = _pilot(root, n=30)
    # 30 pairs: a calibration round of min(10, 30 // 2) = 10 everyone labels, then 20 main
    # pairs with overlap 3 = the whole panel: 30 labels each, anchors on top
    assert s["gate"] == {
        "statistic": "percent agreement on the calibration round",
        "value": 1.0,
        "threshold": 0.65,
        "passed": True,
        "pairs": 10,
        "main_queue_open": True,
        "action": None,  # what to do about a failed gate: nothing to do
    }
    assert s["agreement"]["percent"] == 1.0
    assert s["agreement"]["krippendorff_alpha"] == 1.0 and s["agreement"]["cohen_kappa"] == 1.0
    assert s["anchor_accuracy"] == 1.0 and s["anchor_labels"] > 0  # the anchors' answer: shorter
    assert s["tie_rate"] == 0.0 and s["both_bad_rate"] == 0.0
    assert s["borderline_examples"] == {"agreed": 1, "of": 1, "misses": [], "left_out": []}
    assert s["export"]["rows"] == 30 and s["warnings"] == []
    pilot = root / "artifacts" / "pilot"
    labels = _lines(pilot / "labels.jsonl")
    main = [r for r in labels if not r["anchor"]]
    assert len(main) == 90 and {r["annotator"] for r in main} == {"sim-1", "sim-2", "sim-3"}
    # marked simulated: pilot.json, every label's rationale, the export's manifest, the store
    assert json.loads((pilot / "pilot.json").read_text())["simulated"] is True
    assert all(r["rationale"].startswith("SIMULATED by sim-") for r in labels)
    assert "the shorter one" in main[0]["rationale"]
    manifest = json.loads((pilot / "preferences.jsonl.manifest.json").read_text())
    assert manifest["simulated"]["judge"] == "judge.py:shorter"
    with sqlite3.connect(pilot / "annotations.sqlite") as db:
        kinds = [k for (k,) in db.execute("select kind from events")]
    assert "simulated_pilot" in kinds
    assert not (root / "artifacts" / "annotations.sqlite").exists()  # the team's store: untouched
    db = ["--project", str(root), "--db", str(pilot / "annotations.sqlite")]
    shown = run_cli("annotate", "status", *db)
    assert shown.code == 0, shown.stderr
    assert "SIMULATED: a pilot store" in shown.stdout and "judge.py:shorter" in shown.stdout
    as_json = json.loads(run_cli("annotate", "status", *db, "--json").stdout)
    assert as_json["simulated"] == {"judge": "judge.py:shorter"}


def test_one_careless_annotator_fails_the_gate_and_is_named(tmp_path):
    root = make_pilot_project(tmp_path / "p")
    s = _pilot(root, n=30, panel=PanelSettings(3, {"noise": 0.0}, ("sim-3:noise=1.0",)))
    # sim-3 flips every answer: on each calibration pair two of three annotator pairs
    # disagree, so percent agreement is exactly 1/3
    assert s["gate"]["value"] == pytest.approx(1 / 3) and s["gate"]["passed"] is False
    assert not s["gate"]["main_queue_open"]
    careless = next(a for a in s["per_annotator"] if a["annotator"] == "sim-3")
    assert careless["majority_agreement"] == 0.0
    # what to do, from the store's leave-one-out (as `annotate status` says it)
    assert any("gate fails (0.33 < 0.65): remove sim-3" in w for w in s["warnings"])
    assert s["gate"]["action"].startswith("remove sim-3: without their labels the gate is 1.00")
    # every command it suggests acts on the pilot's store, never on the team's
    flags = f"--project {root} --db {root / 'artifacts' / 'pilot' / 'annotations.sqlite'}"
    assert f"`rlhfkit annotate remove sim-3 --reason ... {flags}`" in s["gate"]["action"]
    advice = " ".join([*s["warnings"], s["export"].get("hint") or ""])
    commands = [c.split("`")[0] for c in advice.split("`rlhfkit annotate ")[1:]]
    assert len(commands) >= 2 and all(c.endswith(flags) for c in commands), commands
    assert (
        "failed gate kept the main queue closed"
        in _pilot(
            root,
            n=30,
            panel=PanelSettings(3, {"noise": 0.0}, ("sim-3:noise=1.0",)),
            train_rm=None,
        )["reward_model"]["why_not"]
    )
    described = {a["name"]: a["noise"] for a in s["annotators"]}
    assert described == {"sim-1": 0.0, "sim-2": 0.0, "sim-3": 1.0}


def test_the_pilot_is_reproducible_and_the_panel_settings_are_checked(tmp_path):
    root = make_pilot_project(tmp_path / "p")
    kw = {"n": 20, "panel": PanelSettings(3, {"noise": 0.2, "position_bias": 0.1})}
    first = _pilot(root, **kw)
    again = _pilot(root, **kw)  # a fresh store each time, the same seeds: the same figures
    assert first["gate"] == again["gate"] and first["agreement"] == again["agreement"]
    assert parse_override("sim-4:drift_after=20,noise=0.1") == (
        "sim-4",
        {"drift_after": 20, "noise": 0.1},
    )
    for bad in ("ana:noise=0.1", "sim-2:speed=3", "sim-2:noise=lots", "sim-2"):
        with pytest.raises(UserError, match="--annotator"):
            parse_override(bad)
    with pytest.raises(UserError, match="within"):
        _pilot(root, n=20, panel=PanelSettings(overrides=("sim-1:noise=1.5",)))
    with pytest.raises(UserError, match=r"fewer than annotation\.overlap"):
        _pilot(root, n=20, panel=PanelSettings(annotators=2))


# --- the rule judge ----------------------------------------------------------------------------


def _criteria() -> list[SuccessCriterion]:
    """A bookshop's: declines off-topic requests (those only), does not hedge, is polite
    (a judge's question: needs a model)."""
    return [
        SuccessCriterion.model_validate(c)
        for c in (
            {"name": "declines_off_topic", "description": "d", "direction": "increase",
             "detector": {"kind": "refusal"}, "applies_to": {"kind": "off_topic"}},
            {"name": "hedging", "description": "h", "direction": "decrease",
             "detector": {"kind": "keywords", "any": ["maybe", "perhaps"]}},
            {"name": "judged_polite", "description": "p", "direction": "increase",
             "detector": {"kind": "judge", "question": "Is it polite?"}},
        )
    ]  # fmt: skip


def _rule_judge(both_bad: str = "allow") -> RuleJudge:
    columns = {
        json.dumps("Fix my tax return"): {"kind": "off_topic"},
        json.dumps("Who wrote Emma?"): {"kind": "books"},
    }
    return RuleJudge(_criteria(), columns, both_bad == "allow")


def test_the_rule_judge_counts_the_criteria_each_reply_meets_on_hand_built_pairs():
    judge = _rule_judge()
    assert judge.skipped == ["judged_polite"]  # needs a model: left out, and named
    decline, answer = "I can't help with that.", "Claim the expense on line 4."
    # off-topic: declining meets both criteria (2 points), answering only 'no hedging' (1)
    assert judge("Fix my tax return", decline, answer)[0] == "a"
    assert judge("Fix my tax return", answer, decline)[0] == "b"  # a swap mirrors it
    # a book question: 'declines off-topic' does not apply; only hedging tells them apart
    assert judge("Who wrote Emma?", "Perhaps Austen.", "Jane Austen.")[0] == "b"
    assert judge("Who wrote Emma?", decline, "Jane Austen.")[0] == "tie"  # 1 point each
    # both fail the same criterion: both bad where the rubric allows it, else a tie
    pref, why = judge("Fix my tax return", "Maybe line 4.", "Perhaps line 5.")
    assert pref == "both_bad" and "A fails declines_off_topic, hedging" in why
    assert _rule_judge("force_choice")("Fix my tax return", "Maybe 4.", "Perhaps 5.")[0] == "tie"
    # a prompt the prompts file does not have: criteria with applies_to do not apply
    assert judge("Something new", decline, answer)[0] == "tie"
    assert judge.left_out("Something new", decline, answer) == ["declines_off_topic"]
    assert judge.left_out("Fix my tax return", decline, answer) == []
    # the same score from different criteria: the one listed first decides (declining,
    # 1 point, hedged, against an answer without hedging, 1 point)
    pref, why = judge("Fix my tax return", "I can't help with that, maybe.", answer)
    assert pref == "a" and why.endswith("the same score: declines_off_topic decides")
    assert judge("Fix my tax return", answer, "I can't help with that, maybe.")[0] == "b"


def test_the_rule_judge_reads_a_pairs_own_columns_before_the_prompts_files():
    judge = _rule_judge()
    decline, answer = "I can't help with that.", "Claim the expense on line 4."
    judge.see_pairs(
        [
            # the pair row says books: its own column wins over the prompts file's off_topic
            {"prompt": "Fix my tax return", "response_a": decline, "response_b": answer,
             "kind": "books"},
            # two prompts with the same text keep their own columns
            {"prompt": "Same words", "response_a": decline, "response_b": answer,
             "kind": "off_topic"},
            {"prompt": "Same words", "response_a": "No.", "response_b": answer, "kind": "books"},
            # a null column is a missing one: the prompts file's fills it
            {"prompt": "Who wrote Emma?", "response_a": decline, "response_b": answer,
             "kind": None},
        ]
    )  # fmt: skip
    assert judge.columns_for("Fix my tax return", answer, decline) == {"kind": "books"}
    assert judge("Fix my tax return", decline, answer)[0] == "tie"  # applies_to: not here
    assert judge("Same words", answer, decline)[0] == "b"  # off_topic: declining wins
    assert judge.columns_for("Same words", "No.", answer) == {"kind": "books"}
    assert judge.columns_for("Who wrote Emma?", decline, answer) == {"kind": "books"}
    # a pair the pilot did not draw (a borderline example): the prompts file's columns
    assert judge.columns_for("Fix my tax return", "x", "y") == {"kind": "off_topic"}


def test_the_rule_judge_pilots_pairs_whose_prompts_the_prompts_file_lacks(tmp_path):
    root = make_pilot_project(tmp_path / "p")
    spec = root / "rlhfkit.toml"
    short = 'detector = { kind = "length", unit = "words", max = 6 }\n'
    assert short in spec.read_text()
    spec.write_text(spec.read_text().replace(short, short + 'applies_to = { kind = "quiz" }\n'))
    rows = []
    for i in range(20):  # drawn from elsewhere: none of these prompts is in prompts.jsonl
        short_reply, long_reply = f"{3 * i}.", f"Well, three times {i} is {3 * i}, I think."
        rows.append({"id": f"q{i}", "prompt": f"Quiz {i}: 3 times {i}?", "kind": "quiz",
                     "response_a": long_reply, "response_b": short_reply})  # fmt: skip
    write_lines(root / "artifacts" / "candidates.jsonl", rows)
    s = _pilot(root, judge="rule", n=20)
    # 'short' applies (the pair rows say quiz), so the short reply wins; read from the
    # prompts file alone it would apply nowhere and every pair would be a tie
    assert s["tie_rate"] == 0.0 and s["agreement"]["percent"] == 1.0
    labels = _lines(root / "artifacts" / "pilot" / "preferences.jsonl")
    assert labels and all(len(r["chosen"].split()) <= 6 for r in labels if "Quiz" in r["prompt"])


BAD_JUDGES = """
def one(prompt):
    return "a"


def boom(prompt, a, b):
    raise ValueError("kaboom")


def boom_on_seven(prompt, a, b):
    if prompt == "What is 7 plus 7?":
        raise ValueError("no sevens")
    return "a" if len(a) < len(b) else "b"
"""


def test_a_bad_judge_is_one_clear_line_and_leaves_nothing_behind(tmp_path):
    root = make_pilot_project(tmp_path / "p")
    (root / "bad.py").write_text(BAD_JUDGES)
    # its parameters are checked when it loads, before any pair is read
    with pytest.raises(UserError, match=r"^--judge bad\.py:one: one\(prompt\) cannot be called"):
        make_pilot_judge("bad.py:one", load_project(root))
    pilot = root / "artifacts" / "pilot"
    with pytest.raises(UserError, match=r"^the pilot's judge bad\.py:boom raised ValueError on "):
        _pilot(root, judge="bad.py:boom", n=20)  # on the first borderline example
    assert not pilot.exists()  # before the pilot's folder is touched
    with pytest.raises(UserError) as mid_round:
        _pilot(root, judge="bad.py:boom_on_seven", n=40)
    assert str(mid_round.value) == (
        "the pilot's judge bad.py:boom_on_seven raised ValueError on pair c7: no sevens; the "
        "pilot stopped and left nothing behind"
    )
    assert list(pilot.iterdir()) == []  # no store, pairs or figures half-written


def test_the_panels_annotators_are_named_sim_1_to_k_and_no_other(tmp_path):
    root = make_pilot_project(tmp_path / "p")
    with pytest.raises(
        UserError, match=r"sim-9:noise=0.5: the panel has 3 annotators \(sim-1 to sim-3\)"
    ):
        _pilot(root, n=20, panel=PanelSettings(3, overrides=("sim-9:noise=0.5",)))
    s = _pilot(root, n=20, panel=PanelSettings(4, {"noise": 0.0}, ("sim-4:noise=1.0",)))
    assert [(a["name"], a["noise"]) for a in s["annotators"]][-1] == ("sim-4", 1.0)


def test_the_rule_judge_needs_a_criterion_it_can_measure_from_text():
    only_judge = [c for c in _criteria() if c.name == "judged_polite"]
    with pytest.raises(UserError, match="needs a success criterion with a text detector"):
        RuleJudge(only_judge)


def test_the_rule_judge_pilots_a_project_from_its_spec_alone(tmp_path):
    root = make_pilot_project(tmp_path / "p")
    s = _pilot(root, judge="rule", n=20)
    # 'short' (at most 6 words) decides: the short reply wins every pair
    assert s["gate"]["passed"] is True and s["agreement"]["percent"] == 1.0
    assert s["anchor_accuracy"] == 1.0
    assert s["judge"]["criteria"] == ["short (increase)", "rambles (decrease)"]


# --- the LLM judge -----------------------------------------------------------------------------


def test_the_rubric_prompt_carries_the_criteria_examples_and_policies(tmp_path):
    root = make_pilot_project(tmp_path / "p")
    prompt = rubric_prompt(load_project(root))
    assert "- short: One sentence.\n- answers: Answers the question." in prompt
    assert (
        "[Response B]\nIt is 4, because" in prompt
        and "The team's answer: A, because Shorter." in prompt
    )
    assert '"A" | "B" | "tie" | "both_bad"' in prompt and "only when neither" in prompt
    assert parse_rubric_answer('{"rationale": "neither helps", "preference": "both_bad"}') == (
        "both_bad",
        "neither helps",
    )
    assert parse_rubric_answer('{"rationale": "x", "preference": "B"}') == ("b", "x")
    assert parse_rubric_answer("no idea")[0] is None


def test_an_llm_judge_pilots_through_an_openai_compatible_server(tmp_path):
    """The project's test server (tests/evaluate/test_judges.py): its model prefers the reply
    that contains GOOD. Labelled GOOD: the short reply, so the anchors' answer is right."""
    from tests.evaluate.test_judges import Server

    root = make_pilot_project(tmp_path / "p", pairs=20)
    for name in ("artifacts/candidates.jsonl", "data/anchors.jsonl"):
        path = root / name
        rows = _lines(path)
        for r in rows:
            key = "response_a" if len(r["response_a"]) < len(r["response_b"]) else "response_b"
            r[key] += " GOOD"
        write_lines(path, rows)
    server = Server()
    try:
        project = load_project(root)
        endpoint = EndpointConfig(server.url, "judge-model", backoff=0.01, cache_dir=tmp_path / "c")
        judge = RubricLLMJudge(project, endpoint)
        s = _pilot(root, judge_obj=judge, n=20)
    finally:
        server.close()
    assert s["gate"]["passed"] is True and s["agreement"]["percent"] == 1.0
    assert s["anchor_accuracy"] == 1.0
    assert s["judge"]["judge"] == "openai:judge-model" and s["judge"]["stats"]["unreadable"] == 0
    system = server.requests[0]["body"]["messages"][0]["content"]
    assert system == rubric_prompt(project)
    # each pair in both orders, once: the panel's three annotators share the disk cache
    pairs_asked = {json.dumps(r["body"]["messages"][-1]["content"]) for r in server.requests}
    assert len(pairs_asked) == len(server.requests)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def transformers_serve():
    """`transformers serve` (Hugging Face's OpenAI-compatible server, not this project's)
    with the tiny random model preloaded; its `serving` extra (openai) is a dev dependency."""
    from rlhfkit.models import resolve

    exe = Path(sys.executable).with_name("transformers")
    if not exe.exists() or importlib.util.find_spec("openai") is None:
        pytest.skip("transformers serve needs the `openai` package (pip install -e '.[dev]')")
    model, port = str(resolve("tiny-random")), _free_port()
    proc = subprocess.Popen(
        [str(exe), "serve", model, "--host", "127.0.0.1", "--port", str(port), "--device",
         "cpu", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"transformers serve did not start: {proc.stderr.read()[-2000:]}")
                time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/v1", model
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_an_llm_judge_pilots_against_transformers_serve(tmp_path, transformers_serve):
    """The wire format against a server this project did not write. The tiny model is random:
    its answers cannot be read, each counts as a tie (the rubric allows ties), so the panel
    agrees on 'tie' everywhere, and the pilot says loudly why those figures mean nothing."""
    url, model = transformers_serve
    root = make_pilot_project(tmp_path / "p", pairs=6)
    project = load_project(root)
    endpoint = EndpointConfig(url, model, timeout=60, max_tokens=8, cache_dir=tmp_path / "c")
    s = _pilot(root, judge_obj=RubricLLMJudge(project, endpoint), n=6)
    stats = s["judge"]["stats"]
    asked = stats["requests"] + stats["cache_hits"]
    assert stats["requests"] > 0 and stats["retries"] == 0
    assert stats["unreadable"] == asked  # every answer reached us, none was a verdict
    assert s["tie_rate"] == 1.0 and s["export"]["rows"] == 0
    assert any(f"unreadable {asked} times of {asked}" in w for w in s["warnings"])
    assert sum(s["labels"].values()) >= 3 * 6  # every pair labelled by the whole panel


@pytest.mark.slow
def test_run_pilots_the_rubric_before_people_label_and_leaves_their_store_alone(
    tmp_path, monkeypatch
):
    """[run] pilot with people labelling: sft, candidates, the SIMULATED pilot, then the run
    waits for people; the team's store holds the imported pairs and no label."""
    from tests.conftest import run_cli
    from tests.pipeline.test_run import make_project

    monkeypatch.delenv("RLHFKIT_DB_URL", raising=False)
    project = make_project(tmp_path / "p")
    spec = project / "rlhfkit.toml"
    spec.write_text(spec.read_text().replace('labeler = "judge.py:shorter"', ""))
    bad = run_cli("run", "--project", str(project), "--set", "run.pilot=nothing")
    assert bad.code == 2 and '[run] pilot = "nothing": give rule' in bad.stderr  # before any stage
    assert not (project / "run").exists()
    args = ("run", "--project", str(project), "--precision", "fp32")
    dry = run_cli(*args, "--dry-run", "--set", "run.pilot=judge.py:shorter")
    rows = [r.split("│")[1].strip() for r in dry.stdout.splitlines() if r.count("│") > 2]
    assert rows[:4] == ["sft", "candidates", "pilot", "annotate"]
    result = run_cli(*args, "--set", "run.pilot=judge.py:shorter")
    assert result.code == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert out.index("SIMULATED pilot (no person labelled)") < out.index("waiting for people")
    assert "reward model on the pilot's labels: held-out accuracy" in out
    pilot = json.loads((project / "run" / "pilot" / "pilot.json").read_text())
    assert pilot["simulated"] is True and pilot["gate"]["passed"] is True
    with sqlite3.connect(project / "artifacts" / "annotations.sqlite") as db:
        assert db.execute("select count(*) from labels").fetchone() == (0,)
        assert db.execute("select count(*) from annotators").fetchone() == (0,)


def test_summary_carries_the_runs_pilot_and_the_deciding_rounds_gate(tmp_path):
    from rlhfkit.pipeline.layout import RunPaths
    from rlhfkit.pipeline.summary import summary

    paths = RunPaths(tmp_path / "run", tmp_path)
    (paths.root / "pilot").mkdir(parents=True)
    (paths.root / "pilot" / "pilot.json").write_text('{"simulated": true, "gate": {"value": 0.8}}')
    paths.annotation.mkdir()
    gate = {"statistic": "percent_agreement", "value": 0.7, "threshold": 0.65, "passed": True,
            "verdict": "passed", "round": 1, "overridden": False, "main_queue_open": True,
            "rounds": [{"id": 1}, {"id": 2}]}  # fmt: skip
    (paths.annotation / "status.json").write_text(json.dumps({"gate": gate}))
    found = summary(paths, {"pilot": 1.0}, pilot=True)
    assert found["pilot"] == {"simulated": True, "gate": {"value": 0.8}}
    # round 2 waits for its second annotator: round 1 decides, and the summary says so
    assert found["calibration_gate"]["round"] == 1 and found["calibration_gate"]["rounds"] == 2
    # a pilot/ left by an earlier configuration says nothing of a run without the stage
    assert summary(paths, {}, pilot=False)["pilot"] is None
