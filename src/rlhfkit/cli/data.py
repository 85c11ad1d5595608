"""`rlhfkit data`: check and convert datasets."""

from __future__ import annotations

from pathlib import Path

import typer

from rlhfkit import strict_json
from rlhfkit.cli.common import console, err_console
from rlhfkit.data import convert_rows, load, write
from rlhfkit.data import validate as validate_file
from rlhfkit.data.convert import CONVERSIONS, ambiguous_rows
from rlhfkit.data.io import is_hf_dataset_dir, shown_problems
from rlhfkit.errors import UserError, display_path

app = typer.Typer(
    help="Check and convert datasets in TRL's formats (JSONL or a saved Hugging Face dataset).",
    no_args_is_help=True,
)

FORMATS_HELP = """\
Formats are told by a row's keys, as in TRL: 'text' or 'messages' (language modeling),
'prompt' (prompt-only), 'prompt'+'completion', 'prompt'+'chosen'+'rejected' (preference),
'chosen'+'rejected' (preference with an implicit prompt), 'prompt'+'response_a'+'response_b'
(an unlabelled pair for annotation). Values are text (standard) or lists of
{"role", "content"} messages (conversational). Preference rows may carry annotation
metadata: id, annotator_ids, votes, tie, both_bad, rubric_version, margin.
"""


@app.command(help="Check every row of one or more datasets.\n\n" + FORMATS_HELP)
def validate(
    files: list[Path] = typer.Argument(..., help="JSONL files or saved dataset folders."),
    max_chars: int = typer.Option(50_000, help="Rows with more characters of text are oversized."),
    split: str = typer.Option("train", help="Split to read from a saved DatasetDict."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per file."),
) -> None:
    """Report each file's format and row count, or every bad row as FILE:LINE: reason (a
    reason on many rows: its first lines and a count; --json lists them all)."""

    failed = False
    for path in files:
        try:
            dataset, problems = validate_file(path, max_chars=max_chars, split=split)
            listed = shown_problems(problems, limit=len(problems))  # a repeat: once, counted
        except UserError as e:  # a missing or unreadable file: report it, check the rest
            dataset, problems = None, e.problems or [str(e)]
            listed = problems
        if as_json:
            record = {"file": str(path), "ok": not problems}
            if dataset is not None:
                record |= {
                    "format": dataset.kind.format.value,
                    "conversational": dataset.kind.conversational,
                    "rows": len(dataset),
                    "metadata": dataset.metadata_fields(),
                }
            record["problems"] = [str(p) for p in problems]
            console.print_json(strict_json.dumps(record))
        elif dataset is not None:
            meta = dataset.metadata_fields()
            console.print(
                f"{display_path(path)}: {dataset.kind}, {len(dataset)} rows"
                + (f"; metadata: {', '.join(meta)}" if meta else "")
            )
        else:
            for p in listed:
                err_console.print(str(p), soft_wrap=True, markup=False)
        failed |= bool(problems)
    if failed:
        raise UserError("some rows are invalid (listed above); nothing was changed")


@app.command()
def convert(
    source: Path = typer.Argument(..., help="A JSONL file or a saved dataset folder."),
    target: Path = typer.Argument(..., help="A .jsonl file, or a folder for a saved dataset."),
    to: str = typer.Option(
        None,
        help="explicit: split the shared beginning of chosen/rejected into 'prompt'; "
        "implicit: prepend the prompt to chosen and rejected. Omit to change only the file type.",
    ),
    split: str = typer.Option("train", help="Split to read from a saved DatasetDict."),
) -> None:
    """Convert a dataset losslessly: JSONL <-> saved dataset, explicit <-> implicit prompt.

    The source is validated first; on any bad row nothing is written. The target is written
    atomically (a crash leaves the old file or nothing, never half a file).
    """

    if to is not None and to not in CONVERSIONS:
        raise UserError(f"--to must be one of {', '.join(CONVERSIONS)}, not '{to}'")
    if target.resolve() == source.resolve() or source.resolve() in target.resolve().parents:
        raise UserError("the target is, or is inside, the source; write to a new path")
    if target.is_dir() and not is_hf_dataset_dir(target) and any(target.iterdir()):
        raise UserError(
            f"{display_path(target)}: a folder that is not a saved dataset; nothing written"
        )
    dataset = load(source, split=split)
    try:
        rows, kind = convert_rows(dataset.rows, dataset.kind, to)
    except ValueError as e:
        raise UserError(f"{display_path(source)}: {e}") from None
    n = write(target, rows)
    console.print(f"{display_path(target)}: {kind}, {n} rows")
    if to == "implicit" and (lost := ambiguous_rows(dataset.rows, dataset.kind.conversational)):
        console.print(
            f"note: in {lost} rows the answers begin alike, so converting back to an explicit "
            "prompt would move those shared words into the prompt"
        )
