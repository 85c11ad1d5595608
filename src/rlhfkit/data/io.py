"""Reading and writing datasets: JSONL files and Hugging Face `datasets` saved to disk.

Reading validates every row and collects *every* problem as ``FILE:LINE: reason`` (for a
saved `datasets` folder the number is the row's, counted from 1), so one run shows the user
all there is to fix. Writing is atomic: the data goes to a temporary file beside the target,
is flushed to disk, and only then renamed over it, so a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rlhfkit import strict_json
from rlhfkit.data.formats import (
    DEFAULT_MAX_CHARS,
    METADATA_FIELDS,
    Format,
    Kind,
    RowError,
    check_row,
)
from rlhfkit.errors import Problem, UserError, display_path

MAX_PROBLEMS_SHOWN = 50
SAME_SHOWN = 3
"""Lines shown of one problem that repeats (the same reason on many rows); the rest counted."""


@dataclass
class Dataset:
    """Validated rows of one kind, with the line each came from (for later error messages)."""

    path: Path
    kind: Kind
    rows: list[dict[str, Any]]
    lines: list[int]

    def __len__(self) -> int:
        return len(self.rows)

    def metadata_fields(self) -> list[str]:
        return [f for f in METADATA_FIELDS if any(f in r for r in self.rows)]


def is_hf_dataset_dir(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
    )


def iter_raw_rows(path: Path, split: str = "train") -> Iterator[tuple[int, Any, str | None]]:
    """Yield ``(line, row, parse_error)`` for every non-blank row of a JSONL file or dataset."""
    if not path.exists():
        raise UserError(f"{display_path(path)}: no such file or folder")
    if path.is_dir():
        yield from _iter_hf_rows(path, split)
        return
    for number, text, decode_error in iter_text_lines(path):
        if decode_error:
            yield number, None, decode_error
            continue
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        row, problem = _loaded(text)
        problem = problem or _non_finite(row)
        yield number, (None if problem else row), problem


def _loaded(text: str) -> tuple[Any, str | None]:
    """(value, None) for JSON text, else (None, why not): a JSONL line, a saved `votes`."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"bad JSON: {e.msg} (column {e.colno})"
    except RecursionError:  # past about a thousand levels, from the parser's C code
        return None, "bad JSON: nested too deeply"
    except ValueError as e:  # an integer past Python's 4,300 digits
        return None, f"bad JSON: {e}"
    return value, None


def _non_finite(row: Any) -> str | None:
    # Python reads NaN, Infinity and 1e999 (as inf), which JSON has no words for, and Arrow
    # stores NaN and inf as it stores any float: every data file is checked, either way.
    found = strict_json.non_finite_at(row)
    return f"{found[0]} is not a finite number ({found[1]})" if found else None


def iter_text_lines(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """Yield ``(line, text, decode_error)`` for every line of a UTF-8 file, `text` with its
    line ending ("" where the line is not UTF-8). A byte-order mark before the first line is
    dropped: spreadsheet programs write one ("CSV UTF-8"), and it is not part of the data."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8"), None
            except UnicodeDecodeError as e:
                yield number, "", f"not UTF-8 text ({e.reason} at byte {e.start})"


def _iter_hf_rows(path: Path, split: str) -> Iterator[tuple[int, Any, str | None]]:
    if not is_hf_dataset_dir(path):
        raise UserError(
            f"{display_path(path)}: a folder is read as a Hugging Face dataset saved with "
            "`save_to_disk`, but this one has no dataset_info.json or dataset_dict.json"
        )
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises many kinds for a damaged folder
        raise UserError(f"{display_path(path)}: cannot read this saved dataset: {e}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise UserError(f"{display_path(path)}: no split '{split}'; it has {', '.join(loaded)}")
        loaded = loaded[split]
    for number, row in enumerate(loaded, start=1):
        # Arrow fills absent columns with None; drop them so the row looks as it was written.
        row = {k: v for k, v in row.items() if v is not None}
        if isinstance(row.get("votes"), str):  # see `write_hf_dataset`
            row["votes"], problem = _loaded(row["votes"])
            if problem:
                yield number, None, f"votes: {problem}"
                continue
        problem = _non_finite(row)
        yield number, (None if problem else row), problem


def validate(
    path: Path | str,
    max_chars: int = DEFAULT_MAX_CHARS,
    split: str = "train",
    expect: Iterable[Format] | None = None,
) -> tuple[Dataset | None, list[Problem]]:
    """Check every row of a file; return the dataset (None if any row is bad) and problems."""
    path = Path(path)
    source = display_path(path)
    problems: list[Problem] = []
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    kind: Kind | None = None
    kind_line = 0
    for line, row, parse_error in iter_raw_rows(path, split):
        if parse_error:
            problems.append(Problem(source, line, parse_error))
            continue
        try:
            row_kind = check_row(row, max_chars=max_chars)
        except RowError as e:
            problems.append(Problem(source, line, str(e)))
            continue
        if kind is None:
            kind, kind_line = row_kind, line
        elif row_kind != kind:
            problems.append(
                Problem(
                    source,
                    line,
                    f"row is {row_kind} but line {kind_line} is {kind}; a file holds one format",
                )
            )
            continue
        rows.append(row)
        lines.append(line)
    if kind is None and not problems:
        problems.append(Problem(source, None, "the dataset is empty"))
    if kind is not None and expect is not None:
        allowed = list(expect)
        if kind.format not in allowed:
            wanted = " or ".join(f.value for f in allowed)
            problems.insert(0, Problem(source, None, f"this is {kind}; expected {wanted}"))
    if problems:
        return None, problems
    assert kind is not None
    return Dataset(path, kind, rows, lines), []


def load(
    path: Path | str,
    expect: Iterable[Format] | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    split: str = "train",
) -> Dataset:
    """Read and validate a dataset, raising `UserError` listing every bad row."""
    dataset, problems = validate(path, max_chars=max_chars, split=split, expect=expect)
    if problems:
        raise UserError(shown_problems(problems))
    assert dataset is not None
    return dataset


def shown_problems(problems: list[Problem], limit: int = MAX_PROBLEMS_SHOWN) -> list[Problem]:
    """The problems as a person reads them: the first SAME_SHOWN lines with one reason, then
    one line counting the rest (a file with the same mistake on every row says so in four
    lines, not one a row), and at most `limit` lines before a count of what is left."""
    total = Counter(p.reason for p in problems)
    seen: Counter[str] = Counter()
    lines: list[tuple[Problem, int]] = []  # a line, and how many problems it stands for
    for p in problems:
        seen[p.reason] += 1
        if seen[p.reason] <= SAME_SHOWN:
            lines.append((p, 1))
        if seen[p.reason] == SAME_SHOWN and total[p.reason] > SAME_SHOWN:
            rest = total[p.reason] - SAME_SHOWN
            why = f"... and {rest} more lines with the same problem as line {p.line}"
            lines.append((Problem(p.source, None, why), rest))
    shown = [p for p, _ in lines[:limit]]
    left = sum(n for _, n in lines[limit:])
    if left:
        shown.append(Problem(problems[0].source, None, f"... and {left} more problems"))
    return shown


@contextlib.contextmanager
def atomic_open(path: Path | str, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; on success flush, fsync and rename it over `path`.

    On any exception the temporary file is removed and `path` is left exactly as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a project folder is shared
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_jsonl(path: Path | str, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSON Lines atomically; return how many were written."""
    n = 0
    with atomic_open(path) as f:
        for row in rows:
            f.write(strict_json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_hf_dataset(path: Path | str, rows: list[dict[str, Any]]) -> int:
    """Save rows as a Hugging Face dataset folder, replacing `path` only once it is complete.

    `votes` is stored as a JSON string: Arrow would otherwise merge every row's annotator
    names into one struct and fill the gaps with nulls. Reading decodes it again.
    """
    import datasets

    path = Path(path)
    encoded = [
        {**r, "votes": strict_json.dumps(r["votes"])} if isinstance(r.get("votes"), dict) else r
        for r in rows
    ]
    with atomic_dir(path) as tmp:
        try:
            datasets.Dataset.from_list(encoded).save_to_disk(str(tmp))
        except (TypeError, ValueError) as e:  # pyarrow's errors derive from these
            raise UserError(
                f"{display_path(path)}: these rows do not fit one Arrow schema ({e})",
                hint="a column must hold one type in every row (e.g. all 'id's strings)",
            ) from None
    return len(rows)


def write(path: Path | str, rows: list[dict[str, Any]]) -> int:
    """Write rows to `path`: JSONL for a ``.jsonl`` file, a `datasets` folder otherwise."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return write_jsonl(path, rows)
    if path.suffix:
        raise UserError(
            f"{display_path(path)}: write to a .jsonl file, or to a folder (no suffix) for a "
            "Hugging Face dataset"
        )
    return write_hf_dataset(path, rows)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(target: Path, replace: bool = True) -> Iterator[Path]:
    """Yield an empty folder beside `target`; move it into place only when the block succeeds.

    With `replace`, an existing `target` is swapped out and removed; without it, an existing
    `target` wins (another process built the same thing first) and ours is dropped.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if not target.exists():
            os.replace(tmp, target)
        elif replace:
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
