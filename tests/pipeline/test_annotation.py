"""The annotate stage's steps: the held-out split by prompt, anchors as training pairs, DPO's
pairs by pairing, the simulated judge panel, and waiting for people on a real store."""

from __future__ import annotations

import json
import random

import pytest

from rlhfkit.annotate import add_annotator, open_store
from rlhfkit.annotate.server import serve_in_background
from rlhfkit.annotate.settings import db_url_for
from rlhfkit.pipeline.annotation import (
    Labeler,
    Waiting,
    anchor_pairs,
    annotate,
    select_pairing,
    split_by_prompt,
)
from rlhfkit.pipeline.layout import RunPaths
from rlhfkit.pipeline.simulated import JudgeAnnotator, judge_panel, run_panel
from rlhfkit.project import load_project
from rlhfkit.templates import init_project
from tests.conftest import write_lines


def test_the_held_out_split_is_stable_and_keeps_a_prompts_pairs_together():
    rows = [
        {"id": f"i{i}-{j}", "prompt": f"email {i}", "chosen": "a", "rejected": "b"}
        for i in range(200)
        for j in range(3)
    ]
    train, held = split_by_prompt(rows, 0.2)
    assert len(train) + len(held) == 600 and 60 < len(held) < 180
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}
    _train2, held2 = split_by_prompt(rows[::-1], 0.2)  # row order does not matter
    assert {r["id"] for r in held2} == {r["id"] for r in held}
    assert split_by_prompt(rows, 0.0) == (rows, [])


def test_anchors_become_preference_pairs_by_their_known_answer(tmp_path):
    anchors = write_lines(
        tmp_path / "anchors.jsonl",
        [
            {"id": "x", "prompt": "p", "response_a": "good", "response_b": "bad", "label": "A"},
            {"id": "y", "prompt": "q", "response_a": "bad", "response_b": "good", "label": "b"},
            {"id": "z", "prompt": "r", "response_a": "same", "response_b": "alike", "label": "tie"},
        ],
    )
    pairs = anchor_pairs(anchors)
    assert [(p["id"], p["chosen"], p["rejected"]) for p in pairs] == [
        ("x", "good", "bad"),
        ("y", "good", "bad"),
    ]  # a tie has no side to learn
    assert all(p["margin"] == 1.0 for p in pairs)


def test_dpo_pairs_are_selected_by_pairing():
    rows = [
        {"id": "1", "pairing": "same model"},
        {"id": "2", "pairing": "across models"},
        {"id": "3"},  # no second model: its pairs are the trained model's own
    ]
    ids = lambda rs: [r["id"] for r in rs]  # noqa: E731
    assert ids(select_pairing(rows, "same model")) == ["1", "3"]
    assert ids(select_pairing(rows, "across models")) == ["2"]
    assert ids(select_pairing(rows, "all")) == ["1", "2", "3"]


def _longer(prompt, a, b):
    return "tie" if len(a) == len(b) else ("a" if len(a) > len(b) else "b")


def test_a_judge_annotator_follows_its_judge_mirrors_a_swap_and_slips_at_its_rate():
    exact = JudgeAnnotator("sim-1", _longer, noise=0.0)
    assert exact.label("p", "long one", "short", allow_tie=True, allow_both_bad=True) == "first"
    assert exact.label("p", "short", "long one", allow_tie=True, allow_both_bad=True) == "second"
    assert exact.label("p", "same", "alik", allow_tie=True, allow_both_bad=True) == "tie"
    forced = {exact.label("p", "same", "alik", allow_tie=False, allow_both_bad=True)
              for _ in range(40)}  # fmt: skip
    assert forced == {"first", "second"}  # the rubric forbids ties: a side at random
    noisy = JudgeAnnotator("sim-2", _longer, noise=0.2, seed=3)
    rng = random.Random(0)
    pairs = [("x" * rng.randint(1, 9), "y" * rng.randint(10, 20)) for _ in range(2000)]
    wrong = sum(
        noisy.label("p", a, b, allow_tie=True, allow_both_bad=True) != "second" for a, b in pairs
    )
    assert 0.17 < wrong / len(pairs) < 0.23
    again = JudgeAnnotator("sim-2", _longer, noise=0.2, seed=3)  # seeded: the same labels
    first = [again.label("p", a, b, allow_tie=True, allow_both_bad=True) for a, b in pairs[:50]]
    noisy2 = JudgeAnnotator("sim-2", _longer, noise=0.2, seed=3)
    assert first == [noisy2.label("p", a, b, allow_tie=True, allow_both_bad=True)
                     for a, b in pairs[:50]]  # fmt: skip


def test_a_judge_answering_nonsense_is_a_clear_error():
    bad = JudgeAnnotator("sim-1", lambda p, a, b: "A is better", noise=0.0)
    with pytest.raises(Exception, match="answers 'a', 'b', 'tie' or 'both_bad'"):
        bad.label("p", "x", "y", allow_tie=True, allow_both_bad=True)


def _candidates(n: int) -> list[dict]:
    return [
        {
            "id": f"c{i}",
            "prompt": f"Question number {i}?",
            "response_a": f"A short answer {i}.",
            "response_b": f"A much longer answer to question {i}, with detail.",
        }
        for i in range(n)
    ]


def test_with_people_the_stage_waits_then_goes_on_once_the_queue_is_done(tmp_path, monkeypatch):
    """The people path on a real store: import, stop with instructions; people label
    through the app (here a judge panel over HTTP with tokens from add-annotator); the
    next call exports and writes the training files. Nothing is imported twice."""
    monkeypatch.delenv("RLHFKIT_DB_URL", raising=False)
    project_dir = tmp_path / "proj"
    init_project(project_dir)
    project = load_project(project_dir, {"annotation.calibration_size": 4, "data.anchors": None})
    paths = RunPaths(tmp_path / "run", project.root)
    paths.annotation.mkdir(parents=True)
    write_lines(paths.candidates, _candidates(12))
    with pytest.raises(Waiting) as waiting:
        annotate(paths, project, Labeler())
    message = str(waiting.value)
    assert "0 of 12 pairs have 3 labels" in message
    assert f"rlhfkit annotate serve --project {project_dir}" in message
    assert "rlhfkit annotate add-annotator NAME" in message
    with pytest.raises(Waiting):  # asked again before anyone labelled: still waiting
        annotate(paths, project, Labeler())
    store = open_store(db_url_for(project.root, None))
    panel = judge_panel(_longer, 3, noise=0.0)
    tokens = {a.name: add_annotator(store, a.name) for a in panel}
    with serve_in_background(store.url, project, seed=0) as url:
        run_panel(url, tokens, panel)
    store.close()
    info = annotate(paths, project, Labeler())
    assert info["simulated"] is False and info["exported"] == 12
    assert info["train_pairs"] + info["heldout_pairs"] == 12
    chosen = [json.loads(x)["chosen"] for x in paths.prefs.open()]
    assert all("much longer" in str(c) for c in chosen)


def _imported_for_people(tmp_path, monkeypatch):
    """A project whose 6 candidate pairs went into its own store for people to label."""
    monkeypatch.delenv("RLHFKIT_DB_URL", raising=False)
    project_dir = tmp_path / "proj"
    init_project(project_dir)
    project = load_project(project_dir, {"data.anchors": None})
    paths = RunPaths(tmp_path / "run", project.root)
    paths.annotation.mkdir(parents=True)
    write_lines(paths.candidates, _candidates(6))
    with pytest.raises(Waiting):
        annotate(paths, project, Labeler())
    return project, paths


def test_with_people_a_changed_candidates_file_is_refused_not_silently_relabelled(
    tmp_path, monkeypatch
):
    project, paths = _imported_for_people(tmp_path, monkeypatch)
    write_lines(paths.candidates, _candidates(7))
    with pytest.raises(Exception, match="changed since it was imported"):
        annotate(paths, project, Labeler())


class _Judge:
    def __call__(self, prompt, a, b):
        return "a"


def test_a_labelers_code_is_hashed_whatever_kind_of_callable_it_is():
    import functools

    from rlhfkit.pipeline.annotation import code_hash

    plain = code_hash(_longer)
    assert plain is not None and plain == code_hash(_Judge())  # this file, either way
    assert code_hash(functools.partial(_longer, "p")) is not None
    assert code_hash(len) is None  # a builtin has no file: nothing to hash, no traceback


def test_with_people_a_store_other_than_the_one_imported_into_is_refused(tmp_path, monkeypatch):
    project, paths = _imported_for_people(tmp_path, monkeypatch)
    monkeypatch.setenv("RLHFKIT_DB_URL", f"sqlite:///{tmp_path / 'team.sqlite'}")
    with pytest.raises(Exception, match="RLHFKIT_DB_URL changed"):
        annotate(paths, project, Labeler())
