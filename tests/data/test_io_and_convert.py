"""Whole files: every bad line reported, atomic writes, datasets folders, conversions."""

import json
import math

import pytest

from rlhfkit.data import Format, convert_rows, load, validate, write, write_jsonl
from rlhfkit.data.convert import to_explicit_prompt, to_implicit_prompt
from rlhfkit.errors import UserError
from tests.conftest import messages, run_cli, write_lines


def test_every_bad_line_is_reported_with_its_number(tmp_path):
    path = write_lines(
        tmp_path / "prefs.jsonl",
        [
            {"prompt": "Q", "chosen": "A", "rejected": "B"},
            "{not json",
            "",  # blank lines are skipped but still counted
            {"prompt": "Q", "chosen": "A", "rejected": "A"},
            {"prompt": "Q", "completion": "A"},
            '"just a string"',
        ],
    )
    dataset, problems = validate(path)
    assert dataset is None
    lines = [(p.line, p.reason) for p in problems]
    assert [line for line, _ in lines] == [2, 4, 5, 6]
    assert "bad JSON" in lines[0][1]
    assert "identical" in lines[1][1]
    assert "line 1 is preference (standard)" in lines[2][1]
    assert "JSON object" in lines[3][1]
    assert str(problems[0]).endswith(
        "prefs.jsonl:2: bad JSON: Expecting property name enclosed in double quotes (column 2)"
    )


def test_a_mistake_on_every_row_is_shown_three_times_and_counted(tmp_path):
    # a pairs file without its second reply, 40 rows: 4 lines, not 40 alike
    rows = [{"prompt": f"Q{i}", "response_a": "A"} for i in range(40)] + ["{oops"]
    path = write_lines(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(UserError) as e:
        load(path)
    shown = [str(p).split("pairs.jsonl")[1] for p in e.value.problems]
    reason = shown[0].split(": ", 1)[1]
    assert len(shown) == 5 and shown[:3] == [f":{i}: {reason}" for i in (1, 2, 3)]
    assert shown[3] == ": ... and 37 more lines with the same problem as line 3"
    assert shown[4].startswith(":41: bad JSON")
    # the same in `data validate`; --json lists every row
    result = run_cli("data", "validate", str(path))
    assert result.code == 2 and "pairs.jsonl:4:" not in result.stderr
    assert "pairs.jsonl: ... and 37 more lines with the same problem as line 3" in result.stderr
    listed = json.loads(run_cli("data", "validate", "--json", str(path)).stdout)["problems"]
    assert len(listed) == 41
    # many different problems: the first 50, then how many are left
    many = write_lines(tmp_path / "many.jsonl", ["{" + " " * i + "x" for i in range(60)])
    with pytest.raises(UserError) as e:  # bad JSON at column 2, 3, ...: 60 different reasons
        load(many)
    assert len(e.value.problems) == 51
    assert str(e.value.problems[-1]).endswith("many.jsonl: ... and 10 more problems")


def test_not_utf8(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "\xff"}\n')
    _, problems = validate(path)
    assert [(p.line, "not UTF-8" in p.reason) for p in problems] == [(2, True)]


def test_empty_file_and_missing_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    _, problems = validate(empty)
    assert problems[0].reason == "the dataset is empty"
    with pytest.raises(UserError, match="no such file"):
        load(tmp_path / "nope.jsonl")


def test_expected_format(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [{"text": "hello"}])
    with pytest.raises(UserError, match="expected preference"):
        load(path, expect=[Format.PREFERENCE])


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    write_jsonl(target, [{"a": 1}])

    def rows():
        yield {"a": 2}
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(target, rows())
    assert target.read_text() == '{"a": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_hf_dataset_round_trip(tmp_path):
    rows = [
        {
            "prompt": messages(("user", "hi")),
            "chosen": messages(("assistant", "hello")),
            "rejected": messages(("assistant", "go away")),
            "votes": {"a": "chosen"},
        },
        {
            "prompt": messages(("user", "yo")),
            "chosen": messages(("assistant", "hey")),
            "rejected": messages(("assistant", "no")),
        },
    ]
    src = write_lines(tmp_path / "prefs.jsonl", rows)
    write(tmp_path / "as_dataset", load(src).rows)
    back = load(tmp_path / "as_dataset")
    assert back.kind == load(src).kind
    assert back.rows[0]["prompt"] == rows[0]["prompt"]
    assert back.rows[1].get("votes") is None  # Arrow's filled-in nulls are dropped again
    write(tmp_path / "again.jsonl", back.rows)
    assert load(tmp_path / "again.jsonl").rows[0]["chosen"] == rows[0]["chosen"]


def test_hf_dataset_bad_rows_numbered(tmp_path):
    write(tmp_path / "ds", [{"prompt": "Q", "chosen": "A", "rejected": "A"}])
    _, problems = validate(tmp_path / "ds")
    assert problems[0].line == 1 and "identical" in problems[0].reason


def test_folder_that_is_not_a_dataset(tmp_path):
    with pytest.raises(UserError, match="save_to_disk"):
        load(tmp_path)


def test_implicit_to_explicit_standard_matches_trl_rule():
    # TRL's extract_prompt: split at the first difference, a trailing space goes with answers.
    row = {"chosen": "Q: is it? yes", "rejected": "Q: is it? no"}
    assert to_explicit_prompt(row, conversational=False) == {
        "prompt": "Q: is it?",
        "chosen": " yes",
        "rejected": " no",
    }


def test_implicit_explicit_round_trip_is_lossless():
    convo = {
        "chosen": messages(("system", "s"), ("user", "u"), ("assistant", "good")),
        "rejected": messages(("system", "s"), ("user", "u"), ("assistant", "bad")),
        "votes": {"a": "chosen"},
    }
    explicit = to_explicit_prompt(convo, conversational=True)
    assert explicit["prompt"] == messages(("system", "s"), ("user", "u"))
    assert explicit["votes"] == {"a": "chosen"}
    assert to_implicit_prompt(explicit, conversational=True) == convo
    text = {"chosen": "Hello there. Yes", "rejected": "Hello there. No"}
    assert to_implicit_prompt(to_explicit_prompt(text, False), False) == text


def test_convert_rows_refuses_wrong_source(tmp_path):
    ds = load(write_lines(tmp_path / "lm.jsonl", [{"text": "hi"}]))
    with pytest.raises(ValueError, match="converts preference_implicit"):
        convert_rows(ds.rows, ds.kind, "explicit")
    assert json.loads(json.dumps(convert_rows(ds.rows, ds.kind, None)[0])) == [{"text": "hi"}]


def test_implicit_rows_that_split_badly_are_rejected():
    from rlhfkit.data import RowError, check_row

    with pytest.raises(RowError, match="no implicit prompt"):
        check_row({"chosen": " a", "rejected": " b"})
    with pytest.raises(RowError, match="'chosen' is empty"):
        check_row({"chosen": "Hi there", "rejected": "Hi there!"})
    system_only = {
        "chosen": messages(("system", "s"), ("user", "u"), ("assistant", "good")),
        "rejected": messages(("system", "s"), ("user", "other"), ("assistant", "bad")),
    }
    with pytest.raises(RowError, match="implicit prompt split gives an invalid row"):
        check_row(system_only)


def test_hf_dataset_keeps_votes_with_different_annotators(tmp_path):
    rows = [
        {"prompt": "Q", "chosen": "A", "rejected": "B", "votes": {"ann1": "chosen"}},
        {"prompt": "R", "chosen": "C", "rejected": "D", "votes": {"ann2": "tie", "ann3": "chosen"}},
    ]
    write(tmp_path / "ds", rows)
    assert load(tmp_path / "ds").rows == rows


def test_hf_dataset_mixed_types_is_a_clear_error(tmp_path):
    rows = [{"prompt": "Q", "chosen": "A", "rejected": "B", "id": 7},
            {"prompt": "R", "chosen": "C", "rejected": "D", "id": "a1"}]
    with pytest.raises(UserError, match="one Arrow schema"):
        write(tmp_path / "ds", rows)
    assert not (tmp_path / "ds").exists()


def test_bom_and_column_numbers(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "ok"}\n{"prompt": }\n')
    _, problems = validate(path)
    assert [(p.line, p.reason) for p in problems] == [(2, "bad JSON: Expecting value (column 12)")]


def test_written_files_follow_the_umask(tmp_path):
    import os
    import stat

    write_jsonl(tmp_path / "x.jsonl", [{"a": 1}])
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "x.jsonl").stat().st_mode) == 0o666 & ~mask


def test_unsupported_trl_formats_are_named():
    from rlhfkit.data import RowError, check_row

    with pytest.raises(RowError, match="unpaired preference"):
        check_row({"prompt": "Q", "completion": "A", "label": True})
    with pytest.raises(RowError, match="stepwise"):
        check_row({"prompt": "Q", "completions": ["a"], "labels": [True]})


@pytest.mark.parametrize(
    "number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "1" + "0" * 400]
)
@pytest.mark.parametrize("where", ["margin", "metadata"])
def test_a_number_a_double_cannot_hold_is_a_bad_line(tmp_path, number, where):
    # Python's json reads NaN, Infinity and 1e999 (as inf); JSON has no such numbers, and
    # one that reached a margin, a vote count or a statistic would poison it silently.
    value = f'"margin": {number}' if where == "margin" else f'"meta": {{"score": [{number}]}}'
    path = tmp_path / "prefs.jsonl"
    path.write_text(
        '{"prompt": "Q", "chosen": "A", "rejected": "B"}\n'
        f'{{"prompt": "Q", "chosen": "A", "rejected": "B", {value}}}\n'
    )
    dataset, problems = validate(path)
    assert dataset is None
    assert [p.line for p in problems] == [2]
    field = "margin" if where == "margin" else "meta.score[0]"
    assert problems[0].reason.startswith(f"{field} is not a finite number (")


# --- deep nesting and saved datasets: the same rules as every JSONL line ----------------------


def test_a_deeply_nested_line_is_a_bad_line_not_a_traceback(tmp_path):
    depth = 100_000
    # Python's json parser gives up past about a thousand levels with a RecursionError.
    path = tmp_path / "prefs.jsonl"
    path.write_text(
        '{"prompt": "Q", "chosen": "A", "rejected": "B"}\n'
        '{"prompt": "Q", "chosen": "A", "rejected": "B", "meta": '
        + "[" * depth
        + "]" * depth
        + "}\n"
    )
    result = run_cli("data", "validate", str(path))
    assert result.code == 2, result
    assert "prefs.jsonl:2: bad JSON: nested too deeply" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def saved_dataset(path, rows):
    """Rows saved as `datasets` does, bypassing `write` (which refuses NaN in votes)."""
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


PAIR = {"prompt": "Q", "chosen": "A", "rejected": "B"}


VOTES = '{"a": "chosen"}'


@pytest.mark.parametrize(
    ("good", "bad", "reason"),
    [
        ({"meta": {"x": 0.5}}, {"meta": {"x": math.nan}}, "meta.x is not a finite number (NaN)"),
        ({"margin": 0.5}, {"margin": -math.inf}, "margin is not a finite number (-Infinity)"),
        ({"votes": VOTES}, {"votes": '{"a": NaN}'}, "votes.a is not a finite number (NaN)"),
        ({"votes": VOTES}, {"votes": '{"a": 1e999}'}, "votes.a is not a finite number (Infinity)"),
        ({"votes": VOTES}, {"votes": '{"a": '}, "votes: bad JSON: Expecting value (column 7)"),
        ({"votes": VOTES}, {"votes": "[" * 100_000}, "votes: bad JSON: nested too deeply"),
    ],
)
def test_a_saved_dataset_is_held_to_the_jsonl_rules(tmp_path, good, bad, reason):
    folder = saved_dataset(tmp_path / "ds", [{**PAIR, **good}, {**PAIR, **bad}, {**PAIR, **good}])
    _, problems = validate(folder)
    assert [(p.line, p.reason) for p in problems] == [(2, reason)]
    result = run_cli("data", "validate", str(folder))
    assert result.code == 2, result
    assert f"ds:2: {reason}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
