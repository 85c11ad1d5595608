"""`rlhfkit agreement` through the real CLI, on the label files in tests/agreement/files."""

import json
from pathlib import Path

import krippendorff
import numpy as np
import pytest

from tests.conftest import run_cli, write_lines

FILES = Path(__file__).parent / "files"


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
    assert s["fleiss_kappa"] is not None  # every item has four labels
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
    assert "bad.jsonl:2: not valid JSON" in result.stderr
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
