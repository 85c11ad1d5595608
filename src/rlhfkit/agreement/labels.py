"""Annotation labels in long format — one row per (item, annotator, label) — and the readers
for CSV and JSONL files of them.

Columns: `item`, `annotator`, `label`; optional `shown_first` (which response the annotator
saw first, for position bias), `timestamp` (ISO 8601 or Unix seconds, for labels per hour
and drift over time) and `gate` (true on the labels a calibration gate was decided on, as
`rlhfkit annotate export --labels` marks them). A gold file for anchors has `item` and
`label`.
"""

from __future__ import annotations

import csv
import math
import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from rlhfkit.data.io import iter_raw_rows, iter_text_lines, shown_problems
from rlhfkit.errors import Problem, UserError, display_path

REQUIRED = ("item", "annotator", "label")
OPTIONAL = ("shown_first", "timestamp", "gate")
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class Labels:
    """n labels, coded. `item`, `annotator`, `label` are int codes [n] into `items`,
    `annotators` and `values` (the label domain: numbers sorted numerically, else strings
    sorted, or the order given). `shown_first` [n] holds label codes (-1: unknown);
    `timestamp` [n] Unix seconds (nan: unknown). Rows keep the order of the source."""

    item: np.ndarray
    annotator: np.ndarray
    label: np.ndarray
    items: np.ndarray
    """Item ids: strings, or integers when the ids were integers (compare via `item_names`)."""
    annotators: np.ndarray
    values: np.ndarray
    shown_first: np.ndarray
    timestamp: np.ndarray
    gate: np.ndarray | None = None
    """[n] bool: the labels the calibration gate was decided on (None: not marked)."""

    @property
    def n(self) -> int:
        return len(self.label)

    def item_names(self) -> list[str]:
        return [str(i) for i in self.items.tolist()]

    @property
    def numeric(self) -> bool:
        return self.values.dtype.kind in "iuf"

    def code_of(self, value: Any) -> int:
        """The code of a label value, or -1 when it never occurs."""
        if self.numeric and not _is_number(value):
            return -1
        matches = np.nonzero(self.values == _coerce(value, self.numeric))[0]
        return int(matches[0]) if len(matches) else -1

    def counts(self) -> np.ndarray:
        """[n_items, n_values]: how many annotators gave each value to each item."""
        k = len(self.values)
        flat = np.bincount(self.item * k + self.label, minlength=len(self.items) * k)
        return flat.reshape(len(self.items), k)

    def matrix(self) -> np.ndarray:
        """[n_items, n_annotators] label codes, -1 where an annotator did not label the item."""
        out = np.full((len(self.items), len(self.annotators)), -1, dtype=np.int64)
        out[self.item, self.annotator] = self.label
        return out

    def subset(self, keep: np.ndarray) -> Labels:
        """The labels where `keep` [n] is True (codes and domains unchanged)."""
        return Labels(
            self.item[keep],
            self.annotator[keep],
            self.label[keep],
            self.items,
            self.annotators,
            self.values,
            self.shown_first[keep],
            self.timestamp[keep],
            None if self.gate is None else self.gate[keep],
        )

    @classmethod
    def from_records(
        cls,
        item: Any,
        annotator: Any,
        label: Any,
        shown_first: Any = None,
        timestamp: Any = None,
        order: list | None = None,
    ) -> Labels:
        """From parallel sequences. Numbers (or numeric strings) make a numeric domain.

        Raises ValueError when an annotator labels the same item twice."""
        numeric, values_in = _label_values(label)
        if order is not None and numeric and not all(_is_number(v) for v in order):
            # an order of words: numbers among the labels are words too ("1", not 1.0)
            numeric, values_in = False, np.array([_coerce(v, False) for v in label])
        if order is not None:
            domain = np.array([_coerce(v, numeric) for v in order])
            unknown = np.setdiff1d(values_in, domain)
            if len(unknown):
                raise ValueError(f"labels {unknown.tolist()} are not in the given order")
            sorter = np.argsort(domain)
            codes = sorter[np.searchsorted(domain, values_in, sorter=sorter)]
        else:
            domain, codes = _dense_codes(values_in)
        codes = codes.astype(np.int64)
        lookup = {v: i for i, v in enumerate(domain.tolist())}
        items, item_codes = _codes(item, as_str=False)
        annotators, annotator_codes = _codes(annotator)
        pair = item_codes * len(annotators) + annotator_codes
        count = np.bincount(pair, minlength=len(items) * len(annotators))
        if count.max(initial=0) > 1:
            i, a = divmod(int(np.argmax(count)), len(annotators))
            raise ValueError(f"annotator {annotators[a]} labeled item {items[i]} more than once")
        shown = np.full(len(codes), -1, dtype=np.int64)
        if shown_first is not None:
            for j, v in enumerate(shown_first):
                if v is None or v != v or v == "" or (numeric and not _is_number(v)):
                    continue  # unknown, or not a label value (text beside numeric labels)
                shown[j] = lookup.get(_coerce(v, numeric), -1)
        stamps = np.full(len(codes), np.nan)
        if timestamp is not None:
            stamps = np.array([_seconds(t) for t in timestamp], dtype=float)
        return cls(
            item_codes,
            annotator_codes,
            codes,
            items,
            annotators,
            domain,
            shown,
            stamps,
        )


def json_number(x: Any) -> Any:
    """A statistic for JSON: NaN and infinities (undefined) become null, numpy numbers
    Python numbers. The caller says why a statistic is null, in a `_note` beside it."""
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    return int(x) if isinstance(x, np.integer) else x


def _label_values(label: Any) -> tuple[bool, np.ndarray]:
    """(numeric, values): numbers (or numeric strings) as floats, anything else as strings."""
    arr = np.asarray(label)
    if arr.dtype.kind in "iuf":
        return True, arr.astype(float)
    if arr.dtype.kind in "US" or all(not isinstance(v, bool) for v in arr.tolist()):
        try:
            as_float = arr.astype(float)
            if not np.isnan(as_float).any():
                return True, as_float
        except (ValueError, TypeError):
            pass
    return False, arr.astype(str)


def _dense_codes(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(arr, return_inverse=True), in O(n) when arr holds small non-negative
    integers (item and annotator ids, rating scales) — a sort of a million labels is most of
    the time an agreement statistic takes."""
    if arr.dtype.kind in "iuf" and len(arr) and arr.min() >= 0 and arr.max() <= 4 * len(arr) + 1024:
        as_int = arr.astype(np.int64)
        high = as_int.max()
        if (as_int == arr).all():
            present = np.zeros(high + 1, dtype=bool)
            present[as_int] = True
            code_of = np.cumsum(present) - 1
            return np.nonzero(present)[0].astype(arr.dtype), code_of[as_int]
    return np.unique(arr, return_inverse=True)


def _codes(names: Any, as_str: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Distinct names and each entry's code; integer ids are sorted as numbers (and kept as
    integers unless `as_str`: turning 200,000 item ids into strings costs more than alpha)."""
    arr = np.asarray(names)
    if arr.dtype.kind in "iu":
        uniq, codes = _dense_codes(arr)
        return (uniq.astype(str) if as_str else uniq), codes.astype(np.int64)
    uniq, codes = np.unique(arr.astype(str), return_inverse=True)
    return uniq, codes.astype(np.int64)


def _is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int | float):
        return not (isinstance(v, float) and math.isnan(v))
    try:
        float(str(v))
        return True
    except ValueError:
        return False


def _coerce(v: Any, numeric: bool) -> Any:
    return float(v) if numeric else str(v)


def _seconds(t: Any) -> float:
    if t is None or t == "":
        return math.nan
    if isinstance(t, int | float):
        return float(t)
    try:
        return float(t)
    except ValueError:
        pass
    return datetime.fromisoformat(str(t).replace("Z", "+00:00")).timestamp()


# --- files ----------------------------------------------------------------------------------


def canonical_id(value: Any) -> str:
    """The identity of an item or annotator id read from a file: its text, NFC-normalised,
    without surrounding whitespace. A JSON integer is its decimal text (`7` and `"7"` are
    one item, as a CSV file can only write "7"). Anything else a JSON file can hold — a
    number with a fraction or exponent (`1.0`, `1e3`), true/false, null, a list, an object —
    is refused with ValueError(reason): `1.0` and `1` are one number but two texts, and
    guessing which the user meant would merge or split items silently."""
    if value is None:
        raise ValueError("missing")
    if isinstance(value, bool):
        raise ValueError(f"must be a string or an integer, not {_json_bool(value)}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"is not a finite number ({_json_float(value)})")
        raise ValueError(
            f"{value!r} is a number with a fraction or exponent; write the id as an integer "
            f'or as a string ("{value!r}")'
        )
    if isinstance(value, str):
        return _text(value)
    raise ValueError(f"must be a string or an integer, not {_json_kind(value)}")


def canonical_value(value: Any) -> str | int | float:
    """A label (or shown_first) value read from a file: a finite number stays a number; text
    is NFC-normalised without surrounding whitespace; true/false become "true"/"false" (as a
    CSV file would spell them). Raises ValueError(reason) for a missing value, a list or an
    object, and any value that is a non-finite number: NaN, Infinity, a number too large for
    a float (1e999), or text that reads as one ("nan", "inf") — a category named "nan" is far
    less likely than a broken export."""
    if value is None:
        raise ValueError("missing")
    if isinstance(value, bool):
        return _json_bool(value)
    if isinstance(value, int | float):
        _finite(value)
        return value
    if isinstance(value, str):
        text = _text(value)
        try:
            number = float(text)  # "1e999" reads as inf, never raises OverflowError
        except ValueError:
            return text  # a word
        _finite(number)
        return text
    raise ValueError(f"must be a string or a number, not {_json_kind(value)}")


def _text(value: str) -> str:
    """NFC-normalised, without surrounding whitespace; refuses text no file or terminal can
    hold (a JSON escape of half a surrogate pair, "\\ud800")."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"is not valid Unicode text: a lone surrogate {value[e.start]!r}"
        ) from None
    text = unicodedata.normalize("NFC", value).strip()
    if not text:
        raise ValueError("missing")
    return text


def _finite(x: int | float) -> float:
    try:
        f = float(x)
    except OverflowError:
        raise ValueError("is not a finite number (too large for a float)") from None
    if not math.isfinite(f):
        raise ValueError(f"is not a finite number ({_json_float(f)})")
    return f


def _json_float(x: float) -> str:
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def _json_bool(value: bool) -> str:
    return "true" if value else "false"


def _json_kind(value: Any) -> str:
    return "a list" if isinstance(value, list) else "an object"


def _flag(value: Any) -> bool:
    """A yes/no column: JSON true/false, or in CSV true/false/1/0 (any case); empty is no."""
    if isinstance(value, bool):
        return value
    text = "" if value is None else str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0", ""):
        return False
    raise ValueError(f"is not true or false: {value!r}")


def _timestamp(value: Any) -> float:
    """Unix seconds from a number, numeric text or ISO 8601 text; nan when empty."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    if isinstance(value, bool):
        raise ValueError(f"is neither ISO 8601 nor Unix seconds: {_json_bool(value)}")
    if isinstance(value, dict | list):
        raise ValueError(f"is neither ISO 8601 nor Unix seconds: {_json_kind(value)}")
    if isinstance(value, int | float):
        return _finite(value)
    try:
        number = float(value)
    except ValueError:
        pass  # not Unix seconds: ISO 8601, below
    else:
        return _finite(number)
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"is neither ISO 8601 nor Unix seconds: {value!r}") from None


def read_labels(path: Path, order: list | None = None) -> Labels:
    """Labels from CSV or JSONL; every bad row is reported as FILE:LINE: reason.

    Ids: an item or annotator id is its text as written, NFC-normalised, without surrounding
    whitespace; a JSON integer counts as its decimal text, so `7`, `"7"` and `" 7"` are one
    item in either format. JSON numbers with a fraction or exponent, booleans, null, lists and
    objects are refused as ids (see `canonical_id`). An annotator who labels one item twice
    is an error naming both lines. Labels, shown_first and timestamps must be finite: NaN,
    Infinity and 1e999 are errors, in JSON or as CSV text. A UTF-8 byte-order mark is
    ignored."""
    rows, lines, problems = _read_rows(path, REQUIRED, OPTIONAL)
    shown = display_path(path)
    if order is not None:  # the order's values are spelled as the labels are
        canonical = []
        for v in order:
            try:
                canonical.append(canonical_value(v))
            except ValueError as e:
                problems.append(Problem("--order", None, f"{v!r} {e}"))
        order = canonical
    seen: dict[tuple[str, str], int] = {}
    keep_rows, keep_lines = [], []
    for row, line in zip(rows, lines, strict=True):
        key = (row["item"], row["annotator"])
        if key in seen:
            problems.append(
                Problem(
                    shown,
                    line,
                    f"annotator {key[1]} labeled item {key[0]} again (first on line {seen[key]})",
                )
            )
            continue
        seen[key] = line
        keep_rows.append(row)
        keep_lines.append(line)
    rows, lines = keep_rows, keep_lines
    if order is not None and not problems:
        numeric = all(_is_number(v) for v in order) and all(_is_number(r["label"]) for r in rows)
        allowed = {_coerce(v, numeric) for v in order}
        for row, line in zip(rows, lines, strict=True):
            if _coerce(row["label"], numeric) not in allowed:
                problems.append(
                    Problem(shown, line, f"label {row['label']!r} is not among the --order values")
                )
    _raise(problems)
    if not rows:
        raise UserError(f"{shown}: holds no labels")
    labels = Labels.from_records(
        [r["item"] for r in rows],
        [r["annotator"] for r in rows],
        [r["label"] for r in rows],
        [r.get("shown_first") for r in rows] if any("shown_first" in r for r in rows) else None,
        [r.get("timestamp", math.nan) for r in rows]
        if any("timestamp" in r for r in rows)
        else None,
        order=order,
    )
    if any("gate" in r for r in rows):
        labels = replace(labels, gate=np.array([r.get("gate") is True for r in rows]))
    return labels


def read_gold(path: Path, labels: Labels) -> dict[int, int]:
    """Anchor answers: item code -> label code, for the anchors that occur in `labels`. Item
    ids and labels follow `read_labels`' rules; an item answered twice must be given one
    label value both times, compared as labels are (1 and "1.0" agree on a numeric scale)."""
    rows, lines, problems = _read_rows(path, ("item", "label"), ())
    shown = display_path(path)
    gold: dict[int, int] = {}
    first: dict[str, tuple[int, Any]] = {}
    item_codes = {name: i for i, name in enumerate(labels.item_names())}
    for row, line in zip(rows, lines, strict=True):
        if labels.numeric and not _is_number(row["label"]):
            problems.append(
                Problem(shown, line, f"label {row['label']!r} is not a number, but the labels are")
            )
            continue
        # As `code_of` compares: on a numeric scale 1, 1.0 and "1e0" are one answer.
        value = _coerce(row["label"], labels.numeric)
        if row["item"] in first and _coerce(first[row["item"]][1], labels.numeric) != value:
            earlier, answer = first[row["item"]]
            problems.append(
                Problem(
                    shown,
                    line,
                    f"item {row['item']} has the answer {row['label']!r} here but "
                    f"{answer!r} on line {earlier}",
                )
            )
            continue
        first.setdefault(row["item"], (line, row["label"]))
        code = labels.code_of(row["label"])
        if code < 0:
            code = len(labels.values)  # an answer nobody gave: everyone got that anchor wrong
        if row["item"] in item_codes:
            gold[item_codes[row["item"]]] = code
    _raise(problems)
    return gold


def _read_rows(
    path: Path, required: tuple[str, ...], optional: tuple[str, ...]
) -> tuple[list[dict], list[int], list[Problem]]:
    """The well-formed rows, their values made canonical (ids as `canonical_id`, labels as
    `canonical_value`, timestamps as Unix seconds), with their line numbers; and a problem
    for every other row."""
    shown = display_path(path)
    if not path.is_file():
        raise UserError(f"{shown}: no such file")
    rows, lines, problems = [], [], []
    if path.suffix.lower() == ".csv":
        text_lines = []
        for line, text, decode_error in iter_text_lines(path):
            if decode_error:
                problems.append(Problem(shown, line, decode_error))
            text_lines.append(text)
        reader = csv.reader(text_lines)
        try:
            header = next((fields for fields in reader if fields), [])  # past blank lines
        except csv.Error as e:
            raise UserError([Problem(shown, reader.line_num, f"not valid CSV: {e}")]) from None
        header = [unicodedata.normalize("NFC", c).strip() for c in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise UserError(
                [
                    Problem(
                        shown,
                        reader.line_num or 1,
                        f"the header lacks column(s) {', '.join(missing)}"
                        f" (need {', '.join(required)})",
                    )
                ]
            )
        end = reader.line_num
        try:
            for fields in reader:
                line, end = end + 1, reader.line_num  # a quoted field may span lines
                if not fields:
                    continue
                if len(fields) != len(header):
                    problems.append(Problem(shown, line, "wrong number of fields"))
                    continue
                rows.append(dict(zip(header, fields, strict=True)))
                lines.append(line)
        except csv.Error as e:  # e.g. a bare carriage return: old Mac line endings
            problems.append(Problem(shown, reader.line_num, f"not valid CSV: {e}"))
    else:
        for line, row, parse_error in iter_raw_rows(path):
            if parse_error:
                problems.append(Problem(shown, line, parse_error))
            elif not isinstance(row, dict):
                problems.append(Problem(shown, line, "not a JSON object"))
            else:
                rows.append(row)
                lines.append(line)
    good, good_lines = [], []
    for row, line in zip(rows, lines, strict=True):
        out, reasons = {}, []
        for column in (*required, *optional):
            if column not in row:
                if column in required:
                    reasons.append(f"missing {column}")
                continue
            value = row[column]
            if column == "shown_first" and value in (None, ""):
                continue  # unknown
            try:
                out[column] = CANONICAL.get(column, canonical_value)(value)
            except ValueError as e:
                reasons.append(f"missing {column}" if str(e) == "missing" else f"{column} {e}")
        if reasons:
            problems.extend(Problem(shown, line, r) for r in reasons)
        else:
            good.append(out)
            good_lines.append(line)
    return good, good_lines, problems


CANONICAL = {
    "item": canonical_id,
    "annotator": canonical_id,
    "timestamp": _timestamp,
    "gate": _flag,
}
"""How a column's value is read; any other column as a label value (`canonical_value`)."""


def _raise(problems: list[Problem]) -> None:
    if problems:
        problems.sort(key=lambda p: p.line or 0)
        raise UserError(shown_problems(problems, MAX_PROBLEMS))
