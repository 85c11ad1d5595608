"""`rlhfkit agreement` through the real CLI, on the label files in tests/agreement/files."""

import json
import random
from pathlib import Path

import krippendorff
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.conftest import run_cli, write_lines

FILES = Path(__file__).parents[1] / "agreement" / "files"


def test_json_summary_of_a_preference_panel(tmp_path):
    result = run_cli(
        "agreement",
        str(FILES / "labels.jsonl"),
        "--anchors",
        str(FILES / "gold.jsonl"),
        "--json",
        "--window",
        "5",
        "--plots",
        str(tmp_path / "plots"),
    )
    assert result.code == 0, result.stderr
    s = json.loads(result.stdout)
    for key in (
        "n_items",
        "n_annotators",
        "n_labels",
        "percent_agreement",
        "cohen_kappa_mean",
        "fleiss_kappa",
        "krippendorff_alpha",
        "annotators",
        "ci",
    ):
        assert key in s, key
    assert (s["n_items"], s["n_annotators"], s["n_labels"]) == (30, 4, 120)
    # every item has four labels; the value is statsmodels' fleiss_kappa of the file's
    # 30 x 4 count table (categories A, B, both_bad, tie)
    assert s["fleiss_kappa"] == pytest.approx(0.18347025143141668, abs=1e-9)
    people = {a["annotator"]: a for a in s["annotators"]}
    assert people["dev"]["anchor_accuracy"] < people["ana"]["anchor_accuracy"]
    assert any(alert["annotator"] == "dev" for alert in s["drift_alerts"])
    assert all(a["labels_per_hour"] > 0 for a in s["annotators"])
    lo, hi = s["ci"]["krippendorff_alpha"]
    assert lo <= s["krippendorff_alpha"] <= hi
    assert (tmp_path / "plots" / "agreement.png").stat().st_size > 5000
    assert (tmp_path / "plots" / "anchors.png").stat().st_size > 5000


def test_csv_and_jsonl_give_the_same_numbers():
    a = json.loads(run_cli("agreement", str(FILES / "labels.jsonl"), "--json").stdout)
    b = json.loads(run_cli("agreement", str(FILES / "labels.csv"), "--json").stdout)
    assert a["krippendorff_alpha"] == b["krippendorff_alpha"]
    assert a["annotators"] == b["annotators"]


def test_interval_ratings_match_the_package():
    result = run_cli("agreement", str(FILES / "ratings.csv"), "--level", "interval", "--json")
    assert result.code == 0, result.stderr
    rows = [line.split(",") for line in (FILES / "ratings.csv").read_text().splitlines()[1:]]
    items = sorted({r[0] for r in rows})
    m = np.full((3, len(items)), np.nan)
    for item, who, label in rows:
        m["xyz".index(who), items.index(item)] = float(label)
    expected = krippendorff.alpha(reliability_data=m, level_of_measurement="interval")
    assert json.loads(result.stdout)["krippendorff_alpha"] == pytest.approx(expected, abs=1e-9)


def test_readable_table():
    result = run_cli(
        "agreement",
        str(FILES / "labels.jsonl"),
        "--anchors",
        str(FILES / "gold.jsonl"),
        "--window",
        "5",
    )
    assert result.code == 0, result.stderr
    for text in ("Krippendorff's alpha (nominal)", "calibration gate", "chose first", "dev"):
        assert text in result.stdout, text


def test_malformed_rows_are_reported_by_line_and_exit_2(tmp_path):
    bad = write_lines(
        tmp_path / "bad.jsonl",
        [
            {"item": "a", "annotator": "x", "label": "A"},
            "{not json",
            {"item": "a", "annotator": "x", "label": "B"},
            {"item": "b", "label": "A"},
            {"item": "c", "annotator": "y", "label": "A", "timestamp": "yesterday"},
        ],
    )
    result = run_cli("agreement", str(bad))
    assert result.code == 2
    assert "bad.jsonl:2: bad JSON" in result.stderr
    assert "bad.jsonl:3: annotator x labeled item a again (first on line 1)" in result.stderr
    assert "bad.jsonl:4: missing annotator" in result.stderr
    assert "bad.jsonl:5: timestamp" in result.stderr
    assert "Traceback" not in result.stderr
    header = tmp_path / "bad.csv"
    header.write_text("item,who,label\n1,x,A\n")
    result = run_cli("agreement", str(header))
    assert result.code == 2 and "bad.csv:1: the header lacks column(s) annotator" in result.stderr
    strings = run_cli("agreement", str(FILES / "labels.jsonl"), "--level", "interval")
    assert strings.code == 2 and "needs numeric labels" in strings.stderr


# --- identity, byte-order marks, non-finite input ---------------------------------------------


def test_one_id_spelled_two_ways_is_a_duplicate_not_a_crash(tmp_path):
    bad = write_lines(
        tmp_path / "dup.jsonl",
        [
            {"item": 1, "annotator": "x", "label": "A"},
            {"item": 2, "annotator": "x", "label": "A"},
            {"item": "1", "annotator": "x", "label": "B"},
            {"item": 1.0, "annotator": "y", "label": "B"},
        ],
    )
    result = run_cli("agreement", str(bad), "--json")
    assert result.code == 2, result.stderr
    assert "dup.jsonl:3: annotator x labeled item 1 again (first on line 1)" in result.stderr
    assert "dup.jsonl:4: item 1.0 is a number with a fraction or exponent" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_spreadsheet_csv_with_a_byte_order_mark_reads(tmp_path):
    marked = tmp_path / "labels.csv"
    marked.write_bytes(b"\xef\xbb\xbf" + (FILES / "labels.csv").read_bytes())
    a = run_cli("agreement", str(marked), "--json", "--bootstrap", "20")
    b = run_cli("agreement", str(FILES / "labels.csv"), "--json", "--bootstrap", "20")
    assert a.code == 0, a.stderr
    assert json.loads(a.stdout) == json.loads(b.stdout)


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999", "1" + "0" * 400])
def test_a_non_finite_label_is_an_input_error(tmp_path, raw):
    bad = write_lines(
        tmp_path / "nan.jsonl",
        [
            {"item": 1, "annotator": "x", "label": 1},
            {"item": 1, "annotator": "y", "label": 2},
            '{"item": 2, "annotator": "x", "label": ' + raw + "}",
        ],
    )
    result = run_cli("agreement", str(bad), "--json")
    assert result.code == 2
    assert "nan.jsonl:3: label is not a finite number" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_deeply_nested_line_is_an_input_error_not_a_traceback(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    bad = write_lines(
        tmp_path / "deep.jsonl",
        [
            {"item": 1, "annotator": "x", "label": 1},
            '{"item": 1, "annotator": "y", "label": ' + deep + "}",
        ],
    )
    result = run_cli("agreement", str(bad), "--json")
    assert result.code == 2, result
    assert "deep.jsonl:2: bad JSON: nested too deeply" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    gold = write_lines(tmp_path / "gold.jsonl", ['{"item": 1, "label": ' + deep + "}"])
    labels = write_lines(tmp_path / "ok.jsonl", [{"item": 1, "annotator": "x", "label": 1}])
    result = run_cli("agreement", str(labels), "--anchors", str(gold), "--json")
    assert result.code == 2, result
    assert "gold.jsonl:1: bad JSON: nested too deeply" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--threshold", "nan"),
        ("--threshold", "inf"),
        ("--threshold", "1.5"),
        ("--anchor-threshold", "nan"),
        ("--anchor-threshold", "-inf"),
        ("--window", "0"),
        ("--bootstrap", "-1"),
    ],
)
def test_options_out_of_range_are_refused(option, value):
    result = run_cli("agreement", str(FILES / "labels.csv"), option, value, "--json")
    assert result.code == 2 and option in result.stderr and "Traceback" not in result.stderr


# --- strict JSON, and a reason for every null -------------------------------------------------


def strict_json(text: str):
    """Parse as RFC 8259 JSON: NaN, Infinity and -Infinity are not JSON."""

    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def table_heading(summary: dict) -> str:
    """The readable table's first line, in the JSON summary's numbers."""
    s = summary
    return f"{s['n_labels']} labels, {s['n_items']} items, {s['n_annotators']} annotators"


def nulls_without_a_reason(node, path: tuple = ()) -> list[str]:
    """Paths of nulls with no reason: a reason for a null reached through key k of dict d is
    d[k + "_note"], or d[k + "_notes"][next key], for any d along the path."""
    out = []
    if isinstance(node, dict):
        entries = list(node.items())
    elif isinstance(node, list):
        entries = list(enumerate(node))
    else:
        return out
    for key, value in entries:
        if isinstance(key, str) and key.endswith(("_note", "_notes")):
            continue
        here = (*path, (node, key))
        if value is None:
            if not _explained(here):
                out.append("/".join(str(k) for _, k in here))
        else:
            out += nulls_without_a_reason(value, here)
    return out


def _explained(path: tuple) -> bool:
    for i, (container, key) in enumerate(path):
        if not isinstance(container, dict):
            continue
        if container.get(f"{key}_note"):
            return True
        notes = container.get(f"{key}_notes")
        if isinstance(notes, dict) and i + 1 < len(path) and notes.get(str(path[i + 1][1])):
            return True
    return False


DEGENERATE = {
    "every label the same": [(i, a, "A") for i in range(4) for a in "xyz"],
    "one annotator": [(i, "x", "AB"[i % 2]) for i in range(5)],
    "no item labeled twice": [(i, "xyz"[i % 3], "AB"[i % 2]) for i in range(6)],
    "one item": [(0, a, v) for a, v in zip("xyz", "ABA", strict=True)],
    "numbers all equal": [(i, a, 3) for i in range(3) for a in "xy"],
    "two labels, one item each": [(0, "x", "A"), (0, "y", "B"), (1, "x", "A")],
}


@pytest.mark.parametrize("case", sorted(DEGENERATE))
@pytest.mark.parametrize("bootstrap", ["0", "30"])
def test_degenerate_labels_give_strict_json_and_a_reason_for_every_null(tmp_path, case, bootstrap):
    rows = [
        {"item": i, "annotator": a, "label": v, "shown_first": "B", "timestamp": 1_700_000_000}
        for i, a, v in DEGENERATE[case]
    ]
    path = write_lines(tmp_path / "labels.jsonl", rows)
    answer = 3 if case == "numbers all equal" else "A"
    gold = write_lines(tmp_path / "gold.jsonl", [{"item": 99, "label": answer}])
    for level in ("nominal", "interval") if case == "numbers all equal" else ("nominal",):
        result = run_cli(
            "agreement",
            str(path),
            "--json",
            "--bootstrap",
            bootstrap,
            "--level",
            level,
            "--anchors",
            str(gold),
            "--plots",
            str(tmp_path / "plots"),
        )
        assert result.code == 0, result.stderr
        summary = strict_json(result.stdout)
        assert nulls_without_a_reason(summary) == []
        table = run_cli("agreement", str(path), "--bootstrap", bootstrap, "--level", level)
        assert table.code == 0 and table_heading(summary) in table.stdout, table.stderr


def test_every_label_the_same_explains_fleiss_too(tmp_path):
    path = write_lines(
        tmp_path / "same.jsonl",
        [{"item": i, "annotator": a, "label": "A"} for i in range(3) for a in "xy"],
    )
    s = strict_json(run_cli("agreement", str(path), "--json", "--bootstrap", "10").stdout)
    assert s["fleiss_kappa"] is None and "no variation" in s["fleiss_kappa_note"]
    assert s["krippendorff_alpha"] is None and "no variation" in s["krippendorff_alpha_note"]
    assert s["cohen_kappa"] == {"x|y": None} and "no variation" in s["cohen_kappa_notes"]["x|y"]
    table = run_cli("agreement", str(path), "--bootstrap", "10").stdout
    assert "every label is A" in table  # the Fleiss row's note
    assert "n/a in anchor acc. (x, y): no anchor item" in table


# --- any label file: a summary or FILE:LINE problems, never a traceback ---------------------

json_values = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([1.0, 2.5, 1e3, -0.0, 10**400, True, False, None, [], {}, [1], {"a": 1}]),
    st.sampled_from(["A", "B", "tie", " A", "a\u0301", "\u00e1", "", " ", "nan", "a\ud800"]),
    st.sampled_from(["inf", "1", "1.0", "01", "2"]),
)
good_labels = st.one_of(st.sampled_from(["A", "B", "tie", "both_bad"]), st.integers(1, 3))
raw_tokens = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])


@st.composite
def label_files(draw):
    """Mostly valid rows (every annotator at most once per item), each row with a small
    chance of one hostile value: a wrong type, a non-finite token, an id spelled anew."""
    spellings = {
        0: [0, "0", " 0"],
        1: [1, "1"],
        2: ["b", " b"],
        3: ["\u00e1", "a\u0301"],
        4: ["[/x]", "[/x] "],  # rich markup, printed in the table as it is
    }
    lines = []
    for item in draw(st.lists(st.sampled_from(sorted(spellings)), min_size=1, unique=True)):
        annotators = st.sampled_from(["x", "y", "[bold]z", "$\\frac{$"])
        for who in draw(st.lists(annotators, max_size=3, unique=True)):
            row = {
                "item": draw(st.sampled_from(spellings[item])),
                "annotator": who,
                "label": draw(good_labels),
            }
            if draw(st.booleans()):
                row["shown_first"] = draw(st.sampled_from(["A", "B"]))
            if draw(st.booleans()):
                row["timestamp"] = draw(st.sampled_from([1_700_000_000, "2024-01-01T00:00:00Z"]))
            text = json.dumps(row)
            hostile = draw(st.integers(0, 12))
            column = draw(st.sampled_from(sorted(row)))
            if hostile == 0:
                text = json.dumps({**row, column: draw(json_values)})
            elif hostile == 1:
                text = json.dumps({**row, column: "@@"}).replace('"@@"', draw(raw_tokens))
            lines.append(text)
            if hostile == 2:  # the same label again, the item spelled another way
                lines.append(json.dumps({**row, "item": draw(st.sampled_from(spellings[item]))}))
    return lines


@pytest.mark.slow  # 150 label files, two CLI runs each
@settings(max_examples=150, deadline=None)
@given(
    label_files(),
    st.sampled_from([[], ["--level", "interval"], ["--level", "ordinal", "--order", "A,B,tie"]]),
    st.sampled_from([[], ["--order", "1,2,3"], ["--order", "B,A"]]),
)
def test_any_label_file_gives_a_summary_or_problems_never_a_traceback(
    tmp_path_factory, lines, level, order
):
    path = tmp_path_factory.mktemp("fuzz") / "labels.jsonl"
    path.write_text("\n".join(lines) + "\n")
    args = [*level, *(order if "--order" not in level else [])]
    result = run_cli("agreement", str(path), "--json", "--bootstrap", "20", *args)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.code in (0, 2), result.stderr
    if result.code == 0:
        summary = strict_json(result.stdout)
        assert nulls_without_a_reason(summary) == []
        event("summary")
        plots = ["--plots", str(path.parent / "plots")] if len(lines) % 4 == 0 else []
        table = run_cli("agreement", str(path), "--bootstrap", "20", *args, *plots)
        assert table.code == 0 and table_heading(summary) in table.stdout, table.stderr
    else:
        assert result.stdout == ""


def test_an_order_of_words_for_numeric_labels_is_reported_not_a_crash(tmp_path):
    path = write_lines(
        tmp_path / "n.jsonl",
        [{"item": 1, "annotator": "x", "label": 1}, {"item": 1, "annotator": "y", "label": 2}],
    )
    result = run_cli("agreement", str(path), "--order", "B,A", "--json")
    assert result.code == 2 and "Traceback" not in result.stderr
    assert "n.jsonl:1: label 1 is not among the --order values" in result.stderr
    mixed = run_cli("agreement", str(path), "--order", "1,2,B", "--level", "ordinal", "--json")
    assert mixed.code == 0, mixed.stderr
    assert strict_json(mixed.stdout)["values"] == [1.0, 2.0, 3.0]  # ranks of 1, 2, B


@pytest.mark.parametrize("order", ["A,B,A", "A,,B", " ", "A, a ,A"])
def test_an_order_that_repeats_or_skips_a_value_is_refused(order):
    result = run_cli("agreement", str(FILES / "labels.jsonl"), "--order", order, "--json")
    assert result.code == 2 and "--order lists each label value once" in result.stderr


def test_many_problems_end_with_how_many_more(tmp_path):
    rows = [{"item": i, "annotator": "x", "label": "NaN"} for i in range(25)]
    rows += [{"item": i, "annotator": "x", "label": chr(0xDC00 + i)} for i in range(40)]
    result = run_cli("agreement", str(write_lines(tmp_path / "bad.jsonl", rows)))
    assert result.code == 2
    # one reason on 25 rows: three of them and a count, not 25 lines alike
    assert "bad.jsonl:3: label is not a finite number (NaN)" in result.stderr
    assert "bad.jsonl:4:" not in result.stderr
    assert "bad.jsonl: ... and 22 more lines with the same problem as line 3" in result.stderr
    # 40 different reasons (each lone surrogate its own): 20 lines, then how many are left
    lines = result.stderr.strip().splitlines()
    assert "bad.jsonl: ... and " in lines[-1] and "more problems" in lines[-1], lines


def test_ids_that_look_like_markup_print_as_they_are(tmp_path):
    path = write_lines(
        tmp_path / "m.jsonl",
        [
            {"item": "[/x]", "annotator": "[bold]y", "label": "A"},
            {"item": "[/x]", "annotator": "b", "label": "B"},
        ],
    )
    result = run_cli("agreement", str(path), "--bootstrap", "10")
    assert result.code == 0, result.stderr
    assert "[bold]y" in result.stdout and "most disputed items: [/x]" in result.stdout


def test_names_that_look_like_mathtext_plot_as_they_are(tmp_path):
    rows = [
        {"item": i, "annotator": who, "label": label}
        for i in range(6)
        for who, label in (("$\\frac{$", "AB"[i % 2]), ("$b$", "A"))
    ]
    path = write_lines(tmp_path / "m.jsonl", rows)
    gold = write_lines(tmp_path / "g.jsonl", [{"item": i, "label": "A"} for i in range(6)])
    result = run_cli(
        "agreement", str(path), "--anchors", str(gold), "--window", "2",
        "--plots", str(tmp_path / "plots"), "--bootstrap", "10",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert (tmp_path / "plots" / "agreement.png").exists()
    assert (tmp_path / "plots" / "anchors.png").exists()


def test_agreement_reads_the_projects_threshold_from_the_export_as_status_does(tmp_path):
    """agreement_threshold 0.7, and a calibration round at 2/3: `annotate status` says the
    gate failed, and so does `rlhfkit agreement` on the exported labels (not 0.65's pass)."""
    # lazy: tests.annotate.test_gate_actions imports this module
    from rlhfkit.annotate import Policy, add_annotator, import_items, open_store
    from rlhfkit.project import load_project
    from tests.annotate.conftest import pairs, write_project
    from tests.annotate.conftest import write_jsonl as write_items
    from tests.annotate.test_gate_actions import label_round
    from tests.annotate.test_rounds import annotator_id

    project = write_project(tmp_path / "p", overlap=3, calibration_size=10, agreement_threshold=0.7)
    policy = Policy.from_project(load_project(project))
    db = f"sqlite:///{tmp_path / 'a.sqlite'}"
    store = open_store(db, create=True)
    try:
        import_items(store, policy, items=write_items(tmp_path / "items.jsonl", pairs(10)))
        for name in ("ann1", "ann2", "ann3"):
            add_annotator(store, name)
        ids = {n: annotator_id(store, n) for n in ("ann1", "ann2", "ann3")}
        rng = random.Random(0)
        label_round(store, policy, ids["ann1"], "A", rng)
        label_round(store, policy, ids["ann2"], "A", rng)
        # ann3 sides with them on 5 pairs and not on 5: (5 x 1 + 5 x 1/3) / 10 = 2/3
        label_round(store, policy, ids["ann3"], "A", rng, limit=5)
        label_round(store, policy, ids["ann3"], "B", rng)
    finally:
        store.close()
    where = ("--project", str(project), "--db", db)
    status = run_cli("annotate", "status", *where, "--json")
    assert status.code == 0, status.stderr
    gate = json.loads(status.stdout)["gate"]
    assert gate["value"] == pytest.approx(2 / 3) and gate["verdict"] == "failed"
    labels = tmp_path / "labels.jsonl"
    exported = run_cli(
        "annotate", "export", str(tmp_path / "prefs.jsonl"), "--labels", str(labels), *where
    )
    assert exported.code == 0, exported.stderr
    found = json.loads(run_cli("agreement", str(labels), "--json").stdout)["calibration_gate"]
    assert found["value"] == pytest.approx(2 / 3) and found["threshold"] == 0.7
    assert found["passed"] is False and "labels.jsonl.manifest.json" in found["threshold_source"]
    shown = " ".join(run_cli("agreement", str(labels)).stdout.split())
    assert "vs threshold 0.70 (the project's, from labels.jsonl.manifest.json): fails" in shown
    # an explicit --threshold still wins; a copy without its manifest says it uses the default
    given = json.loads(run_cli("agreement", str(labels), "--threshold", "0.65", "--json").stdout)
    assert given["calibration_gate"]["passed"] is True
    (tmp_path / "copy").mkdir()
    copy = write_lines(tmp_path / "copy" / "labels.jsonl", labels.read_text().splitlines())
    alone = json.loads(run_cli("agreement", str(copy), "--json").stdout)["calibration_gate"]
    assert alone["threshold"] == 0.65 and "give --threshold" in alone["threshold_source"]
