"""`init_project`: every template's spec parses and its data files validate, with the columns
its criteria and rubric need; init is atomic and refuses a non-empty folder."""

from __future__ import annotations

import pytest

from rlhfkit.cli.project import TEMPLATE_NAMES
from rlhfkit.data import Format, load
from rlhfkit.errors import UserError
from rlhfkit.project import load_project
from rlhfkit.templates import TEMPLATES, init_project

FORMATS = {
    "prompts": Format.PROMPT_ONLY,
    "sft": Format.PROMPT_COMPLETION,
    "eval_prompts": Format.PROMPT_ONLY,
    "anchors": Format.COMPARISON,
}
COLUMNS = {
    "support-replies": ("topic",),
    "memo-format": ("subject",),
    "decline-off-topic": ("kind", "on_topic", "topic"),
}


@pytest.fixture(scope="module", params=sorted(TEMPLATES))
def project(request, tmp_path_factory):
    return init_project(tmp_path_factory.mktemp("t") / request.param, request.param)


def test_the_cli_lists_every_template():
    assert set(TEMPLATE_NAMES) == set(TEMPLATES) == set(COLUMNS)


def test_spec_parses_and_names_every_file(project):
    loaded = load_project(project.root)
    assert loaded.spec == project.spec
    assert loaded.spec.name == project.root.name
    written = {p.relative_to(project.root).as_posix() for p in project.root.rglob("*.jsonl")}
    named = {v for v in loaded.spec.data.model_dump().values() if v}
    assert written == named


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_data_files_validate_with_their_columns(project, name):
    data = load(project.data_path(name))
    assert data.kind.format == FORMATS[name] and data.kind.conversational
    if name == "anchors":
        assert {r["label"] for r in data.rows} == {"A", "B"}
        return  # the demo's anchors carry no columns: its results must not change
    for column in COLUMNS[project.spec.name]:
        assert all(column in row for row in data.rows), column


def test_eval_prompts_are_held_out(project):
    def users(name):
        return {r["prompt"][-1]["content"] for r in load(project.data_path(name)).rows}

    held_out = users("eval_prompts")
    for name in ("prompts", "sft", "anchors"):
        assert not held_out & users(name), name


def test_init_refuses_a_non_empty_folder_and_writes_nothing(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        init_project(tmp_path / "p", "decline-off-topic")
    assert [f.name for f in (tmp_path / "p").iterdir()] == ["notes.txt"]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["p"]


def test_init_that_fails_midway_leaves_nothing(tmp_path, monkeypatch):
    def broken():
        raise RuntimeError("disk full")

    monkeypatch.setattr(TEMPLATES["memo-format"].module, "data", broken)
    (tmp_path / "p").mkdir()  # an empty folder may be the target
    with pytest.raises(RuntimeError, match="disk full"):
        init_project(tmp_path / "p", "memo-format")
    assert [f.name for f in tmp_path.iterdir()] == []


def test_unknown_template_names_the_known_ones(tmp_path):
    with pytest.raises(UserError, match="templates: support-replies, memo-format"):
        init_project(tmp_path / "p", "haiku")
    assert not (tmp_path / "p").exists()
