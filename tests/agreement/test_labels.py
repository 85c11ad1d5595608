"""Reading label files: one identity for item and annotator ids in CSV and JSONL, duplicates
and bad values as FILE:LINE: reason, byte-order marks, non-finite numbers."""

import csv
import io
import json
import math
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfkit.agreement import read_gold, read_labels
from rlhfkit.agreement.labels import Labels
from rlhfkit.errors import UserError


def jsonl(path: Path, rows: list) -> Path:
    """Rows as JSONL; a str row is written verbatim (for NaN, 1e999 and broken lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # errors name files as the user typed them: l.jsonl


def same_id(text: str) -> str:
    """The identity the README states: the text, NFC-normalised, less surrounding space."""
    return unicodedata.normalize("NFC", text).strip()


def problems(path: Path, **kw) -> str:
    with pytest.raises(UserError) as e:
        read_labels(path, **kw)
    return str(e.value)


# --- one identity for ids ---------------------------------------------------------------------

# Ways of writing the id 7 that all name the same item: a JSON integer, the text as written,
# the text with surrounding whitespace. (7.0 is a float: refused, see below.)
SAME_AS_7 = [7, "7", " 7", "7 ", "\t7"]


@pytest.mark.parametrize("first", SAME_AS_7)
@pytest.mark.parametrize("again", SAME_AS_7)
def test_every_spelling_of_one_id_is_one_item(tmp_path, first, again):
    path = jsonl(
        tmp_path / "l.jsonl",
        [
            {"item": first, "annotator": "x", "label": "A"},
            {"item": 8, "annotator": "x", "label": "A"},
            {"item": again, "annotator": "x", "label": "B"},
        ],
    )
    assert problems(path) == f"{path.name}:3: annotator x labeled item 7 again (first on line 1)"


def test_unicode_forms_of_one_name_are_one_annotator(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "José"), unicodedata.normalize("NFD", "José")
    assert nfc != nfd
    path = jsonl(
        tmp_path / "l.jsonl",
        [
            {"item": "a", "annotator": nfc, "label": "A"},
            {"item": "a", "annotator": nfd, "label": "B"},
        ],
    )
    assert f"{path.name}:2: annotator {nfc} labeled item a again (first on line 1)" in problems(
        path
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("1.0", "item 1.0 is a number with a fraction or exponent"),
        ("1e3", "item 1000.0 is a number with a fraction or exponent"),
        ("true", "item must be a string or an integer, not true"),
        ("false", "item must be a string or an integer, not false"),
        ("null", "missing item"),
        ('""', "missing item"),
        ('"   "', "missing item"),
        ("[1]", "item must be a string or an integer, not a list"),
        ('{"a": 1}', "item must be a string or an integer, not an object"),
        ("NaN", "item is not a finite number (NaN)"),
        ("Infinity", "item is not a finite number (Infinity)"),
        ("1e999", "item is not a finite number (Infinity)"),
        ('"a\\ud800"', "item is not valid Unicode text: a lone surrogate '\\ud800'"),
    ],
)
def test_ids_that_are_not_strings_or_integers_are_refused(tmp_path, raw, reason):
    path = jsonl(
        tmp_path / "l.jsonl",
        [
            {"item": "a", "annotator": "x", "label": "A"},
            '{"item": ' + raw + ', "annotator": "y", "label": "A"}',
            '{"item": "a", "annotator": ' + raw + ', "label": "A"}',
        ],
    )
    text = problems(path)
    assert f"{path.name}:2: {reason}" in text
    assert f"{path.name}:3: {reason.replace('item', 'annotator')}" in text


@pytest.mark.parametrize("dup", ["1.0", "01", "1e0", " 1"])
def test_csv_ids_are_text_as_written_less_surrounding_space(tmp_path, dup):
    path = tmp_path / "l.csv"
    path.write_text(f"item,annotator,label\n1,x,A\n{dup},x,B\n1,y,A\n{dup},y,B\n")
    if dup == " 1":
        assert problems(path).startswith("l.csv:3: annotator x labeled item 1 again (first on")
    else:  # "1.0" is another item than "1" in a CSV file: the text is the id
        labels = read_labels(path)
        assert sorted(labels.item_names()) == sorted(["1", dup])


ids = st.one_of(
    st.integers(-(10**20), 10**20),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=6).filter(
        lambda s: s.strip()
    ),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(ids, ids), min_size=1, max_size=12), st.data())
def test_csv_and_jsonl_agree_on_identity(tmp_path_factory, pairs, data):
    """The same (item, annotator) pairs, written in JSONL as JSON integers or as strings
    (decomposed, padded with whitespace), and as text in CSV, read as the same ids; and a
    repeated pair is a duplicate in both."""
    folder = tmp_path_factory.mktemp("ids")
    rows = [{"item": i, "annotator": a, "label": "A"} for i, a in pairs]
    respell = st.sampled_from(
        [
            lambda v: v,
            str,
            lambda v: unicodedata.normalize("NFD", str(v)),
            lambda v: f" {v}\t",
        ]
    )
    as_text = [{k: data.draw(respell)(v) for k, v in r.items()} for r in rows]
    j = jsonl(folder / "l.jsonl", as_text)
    buffer = io.StringIO()
    w = csv.writer(buffer)
    w.writerow(["item", "annotator", "label"])
    csv_lines = []  # the line each row starts on: a quoted newline in an id spans two
    for r in rows:
        csv_lines.append(buffer.getvalue().count("\n") + 1)
        w.writerow([str(r["item"]), str(r["annotator"]), r["label"]])
    c = folder / "l.csv"
    c.write_text(buffer.getvalue(), encoding="utf-8")
    keys = [(same_id(str(i)), same_id(str(a))) for i, a in pairs]
    if len(set(keys)) < len(keys):
        dup = next(n for n, k in enumerate(keys) if k in keys[:n])
        for path, line in ((j, dup + 1), (c, csv_lines[dup])):
            lines = problems(path).splitlines()
            assert any(f"{path.name}:{line}: annotator " in p for p in lines), lines
        return
    a, b = read_labels(j), read_labels(c)
    assert a.item_names() == b.item_names()
    assert a.annotators.tolist() == b.annotators.tolist()
    assert (a.item == b.item).all() and (a.annotator == b.annotator).all()


def test_gold_items_use_the_same_identity(tmp_path):
    labels = read_labels(
        jsonl(
            tmp_path / "l.jsonl",
            [
                {"item": 7, "annotator": "x", "label": "A"},
                {"item": " 8", "annotator": "x", "label": "B"},
            ],
        )
    )
    gold = read_gold(
        jsonl(tmp_path / "g.jsonl", [{"item": "7", "label": "A"}, {"item": 8, "label": "B"}]),
        labels,
    )
    assert len(gold) == 2
    bad = jsonl(tmp_path / "bad.jsonl", [{"item": 7.0, "label": "A"}, {"item": True, "label": "A"}])
    with pytest.raises(UserError) as e:
        read_gold(bad, labels)
    assert "bad.jsonl:1: item 7.0 is a number" in str(e.value)
    assert "bad.jsonl:2: item must be a string or an integer" in str(e.value)


# --- byte-order marks -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_byte_order_mark_is_dropped(tmp_path, suffix):
    body = (
        "item,annotator,label\n1,x,A\n1,y,B\n2,x,A\n2,y,A\n"
        if suffix == ".csv"
        else "".join(
            json.dumps({"item": i, "annotator": a, "label": v}) + "\n"
            for i, a, v in [(1, "x", "A"), (1, "y", "B"), (2, "x", "A"), (2, "y", "A")]
        )
    )
    plain, marked = tmp_path / f"plain{suffix}", tmp_path / f"marked{suffix}"
    plain.write_text(body, encoding="utf-8")
    marked.write_text(body, encoding="utf-8-sig")  # what "CSV UTF-8" in a spreadsheet writes
    assert marked.read_bytes().startswith(b"\xef\xbb\xbf")
    a, b = read_labels(plain), read_labels(marked)
    assert a.item_names() == b.item_names() == ["1", "2"]
    assert (a.label == b.label).all()
    gold = tmp_path / f"gold{suffix}"
    gold.write_text(
        "item,label\n1,A\n" if suffix == ".csv" else '{"item": 1, "label": "A"}\n',
        encoding="utf-8-sig",
    )
    assert read_gold(gold, b) == {0: 0}


# --- non-finite numbers -----------------------------------------------------------------------


@pytest.mark.parametrize("column", ["label", "timestamp", "shown_first"])
@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("-Infinity", "-Infinity"),
        ("1e999", "Infinity"),
        ("-1e999", "-Infinity"),
    ],
)
def test_non_finite_numbers_are_input_errors(tmp_path, column, raw, shown):
    row = {"item": "a", "annotator": "y", "label": 1}
    row[column] = "@"
    path = jsonl(
        tmp_path / "l.jsonl",
        [
            {"item": "a", "annotator": "x", "label": 1},
            json.dumps(row).replace('"@"', raw),
        ],
    )
    assert f"l.jsonl:2: {column} is not a finite number ({shown})" in problems(path)


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-Infinity", "1e999"])
def test_non_finite_numbers_in_csv_are_input_errors(tmp_path, text):
    path = tmp_path / "l.csv"
    path.write_text(f"item,annotator,label,timestamp\na,x,1,5\na,y,{text},6\nb,x,2,{text}\n")
    out = problems(path)
    assert "l.csv:3: label is not a finite number" in out
    assert "l.csv:4: timestamp is not a finite number" in out


def test_order_values_must_be_finite(tmp_path):
    path = jsonl(tmp_path / "l.jsonl", [{"item": "a", "annotator": "x", "label": 1}])
    with pytest.raises(UserError, match="not a finite number"):
        read_labels(path, order=["1", "nan"])


def test_labels_read_are_finite(tmp_path):
    labels = read_labels(
        jsonl(
            tmp_path / "l.jsonl",
            [
                {"item": "a", "annotator": "x", "label": 1e308},
                {"item": "a", "annotator": "y", "label": -1e308, "timestamp": 1e9},
            ],
        )
    )
    assert all(math.isfinite(v) for v in labels.values.tolist())


def test_csv_lines_are_counted_past_blank_lines_and_odd_separators(tmp_path):
    path = tmp_path / "l.csv"
    # \x1c and \u2028 are line breaks to str.splitlines, not to CSV
    path.write_text(
        'item,annotator,label\n\na\x1cz,x,A\nb\u2028c,x,A\n\n"b\u2028c\n",x,B\n"\nb\u2028c",x,C\n'
    )
    assert problems(path) == (
        "l.csv:6: annotator x labeled item b\u2028c again (first on line 4)\n"
        "l.csv:8: annotator x labeled item b\u2028c again (first on line 4)"
    )


def test_a_boolean_timestamp_is_refused(tmp_path):
    path = jsonl(
        tmp_path / "l.jsonl", [{"item": 1, "annotator": "x", "label": "A", "timestamp": True}]
    )
    assert problems(path) == "l.jsonl:1: timestamp is neither ISO 8601 nor Unix seconds: true"


def test_a_file_with_bare_carriage_returns_is_an_input_error(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes(b"item,annotator,label\na,x,A\rb,x,B\n")
    assert problems(path).startswith("l.csv:2: not valid CSV: new-line character")


def test_gold_answers_are_checked_like_labels(tmp_path):
    labels = read_labels(
        jsonl(
            tmp_path / "l.jsonl",
            [
                {"item": 7, "annotator": "x", "label": "A"},
                {"item": 8, "annotator": "x", "label": "B"},
            ],
        )
    )
    gold = jsonl(
        tmp_path / "g.jsonl",
        [
            {"item": 7, "label": "A"},
            {"item": " 7", "label": "A"},  # the same answer again: harmless
            {"item": "7", "label": "B"},
            '{"item": 8, "label": NaN}',
        ],
    )
    with pytest.raises(UserError) as e:
        read_gold(gold, labels)
    assert str(e.value).splitlines() == [
        "g.jsonl:3: item 7 has the answer 'B' here but 'A' on line 1",
        "g.jsonl:4: label is not a finite number (NaN)",
    ]


def test_order_values_are_spelled_as_labels_are(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "á"), unicodedata.normalize("NFD", "á")
    path = jsonl(
        tmp_path / "l.jsonl",
        [{"item": 1, "annotator": "x", "label": nfc}, {"item": 1, "annotator": "y", "label": "b"}],
    )
    labels = read_labels(path, order=[f" {nfd}", "b"])
    assert labels.values.tolist() == [nfc, "b"]


NFC_A, NFD_A = unicodedata.normalize("NFC", "á"), unicodedata.normalize("NFD", "á")


def two_items(tmp_path: Path, labels: list) -> Labels:
    """Items 7 and 8, labeled labels[0] and labels[1] by one annotator."""
    rows = [{"item": 7 + i, "annotator": "x", "label": v} for i, v in enumerate(labels)]
    return read_labels(jsonl(tmp_path / "l.jsonl", rows))


@pytest.mark.parametrize(
    ("labels", "first", "again"),
    [
        ([1, 2], 1, 1.0),  # JSON numbers
        ([1, 2], "1", "1.0"),  # as a CSV file spells them
        ([1, 2], 1, " 1.0"),
        ([1, 2], "2", "2e0"),
        (["A", "B"], " A", "A"),
        (["A", "B"], 1, "1"),  # numbers among words are words: 1 is "1"
        ([NFC_A, "b"], NFC_A, NFD_A),
        ([NFC_A, "b"], "zzz", " zzz"),  # an answer nobody gave, spelled twice
    ],
)
def test_one_gold_answer_spelled_two_ways_is_not_a_conflict(tmp_path, labels, first, again):
    """Gold answers are compared as the labels are: two spellings of one label value agree."""
    read = two_items(tmp_path, labels)
    once = jsonl(tmp_path / "once.jsonl", [{"item": 7, "label": first}])
    gold = jsonl(tmp_path / "g.jsonl", [{"item": 7, "label": first}, {"item": 7, "label": again}])
    assert read_gold(gold, read) == read_gold(once, read)


@pytest.mark.parametrize(
    ("labels", "first", "again"),
    [([1, 2], 1, 2), ([1, 2], "1", 1.5), (["A", "B"], "A", "a"), (["A", "1"], "1", "1.0")],
)
def test_two_gold_answers_for_one_item_are_a_conflict(tmp_path, labels, first, again):
    read = two_items(tmp_path, labels)
    gold = jsonl(tmp_path / "g.jsonl", [{"item": 7, "label": first}, {"item": 7, "label": again}])
    with pytest.raises(UserError, match=r"g.jsonl:2: item 7 has the answer .* on line 1"):
        read_gold(gold, read)
