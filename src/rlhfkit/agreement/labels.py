"""Annotation labels in long format — one row per (item, annotator, label) — and the readers
for CSV and JSONL files of them.

Columns: `item`, `annotator`, `label`; optional `shown_first` (which response the annotator
saw first, for position bias) and `timestamp` (ISO 8601 or Unix seconds, for labels per hour
and drift over time). A gold file for anchors has `item` and `label`.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from rlhfkit.errors import Problem, UserError, display_path

REQUIRED = ("item", "annotator", "label")
OPTIONAL = ("shown_first", "timestamp")
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
                if v is not None and v == v and v != "":
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
    """A statistic for JSON: NaN (undefined) becomes null, numpy floats become floats."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return float(x) if isinstance(x, float) else x


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
    if arr.dtype.kind in "iuf" and len(arr):
        as_int = arr.astype(np.int64)
        low, high = as_int.min(), as_int.max()
        if (as_int == arr).all() and low >= 0 and high <= 4 * len(arr) + 1024:
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


def read_labels(path: Path, order: list | None = None) -> Labels:
    """Labels from CSV or JSONL; every bad row is reported as FILE:LINE: reason."""
    rows, lines, problems = _read_rows(path, REQUIRED)
    for row, line in zip(rows, lines, strict=True):
        if "timestamp" in row and row["timestamp"] not in (None, ""):
            try:
                _seconds(row["timestamp"])
            except (ValueError, TypeError):
                problems.append(
                    Problem(
                        display_path(path),
                        line,
                        f"timestamp is neither ISO 8601 nor Unix seconds: {row['timestamp']!r}",
                    )
                )
    seen: dict[tuple[str, str], int] = {}
    for row, line in zip(rows, lines, strict=True):
        key = (str(row["item"]), str(row["annotator"]))
        if key in seen:
            problems.append(
                Problem(
                    display_path(path),
                    line,
                    f"annotator {key[1]} labeled item {key[0]} again (first on line {seen[key]})",
                )
            )
        else:
            seen[key] = line
    if order is not None:
        numeric = all(_is_number(r["label"]) for r in rows)
        allowed = {_coerce(v, numeric) for v in order}
        for row, line in zip(rows, lines, strict=True):
            if _coerce(row["label"], numeric) not in allowed:
                problems.append(
                    Problem(
                        display_path(path),
                        line,
                        f"label {row['label']!r} is not among the --order values",
                    )
                )
    _raise(problems)
    if not rows:
        raise UserError(f"{display_path(path)}: holds no labels")
    return Labels.from_records(
        [r["item"] for r in rows],
        [r["annotator"] for r in rows],
        [r["label"] for r in rows],
        [r.get("shown_first") for r in rows] if any("shown_first" in r for r in rows) else None,
        [r.get("timestamp") for r in rows] if any("timestamp" in r for r in rows) else None,
        order=order,
    )


def read_gold(path: Path, labels: Labels) -> dict[int, int]:
    """Anchor answers: item code -> label code, for the anchors that occur in `labels`."""
    rows, lines, problems = _read_rows(path, ("item", "label"))
    gold = {}
    item_codes = {name: i for i, name in enumerate(labels.item_names())}
    for row, line in zip(rows, lines, strict=True):
        if labels.numeric and not _is_number(row["label"]):
            problems.append(
                Problem(
                    display_path(path),
                    line,
                    f"label {row['label']!r} is not a number, but the labels are numbers",
                )
            )
            continue
        code = labels.code_of(row["label"])
        if code < 0:
            code = len(labels.values)  # an answer nobody gave: everyone got that anchor wrong
        if str(row["item"]) in item_codes:
            gold[item_codes[str(row["item"])]] = code
    _raise(problems)
    return gold


def _read_rows(
    path: Path, required: tuple[str, ...]
) -> tuple[list[dict], list[int], list[Problem]]:
    """The well-formed rows with their line numbers, and a problem for every other row."""
    shown = display_path(path)
    if not path.is_file():
        raise UserError(f"{shown}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{shown}: is not UTF-8 text") from None
    rows, lines, problems = [], [], []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(
                [
                    Problem(
                        shown,
                        1,
                        f"the header lacks column(s) {', '.join(missing)}"
                        f" (need {', '.join(required)})",
                    )
                ]
            )
        for row in reader:
            line = reader.line_num
            if None in row or any(v is None for v in row.values()):
                problems.append(Problem(shown, line, "wrong number of fields"))
                continue
            rows.append(row)
            lines.append(line)
    else:
        for line, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as e:
                problems.append(Problem(shown, line, f"not valid JSON: {e.msg}"))
                continue
            if not isinstance(row, dict):
                problems.append(Problem(shown, line, "not a JSON object"))
                continue
            rows.append(row)
            lines.append(line)
    good, good_lines = [], []
    for row, line in zip(rows, lines, strict=True):
        missing = [c for c in required if c not in row or row[c] in (None, "")]
        if missing:
            problems.append(Problem(shown, line, f"missing {', '.join(missing)}"))
        elif any(isinstance(row[c], dict | list) for c in required):
            problems.append(Problem(shown, line, "item, annotator and label must be plain values"))
        else:
            good.append(row)
            good_lines.append(line)
    return good, good_lines, problems


def _raise(problems: list[Problem]) -> None:
    if problems:
        problems.sort(key=lambda p: p.line or 0)
        raise UserError(problems[:MAX_PROBLEMS])
