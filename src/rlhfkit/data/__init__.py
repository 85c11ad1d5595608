"""Data contracts: TRL's dataset formats, validation with FILE:LINE errors, atomic writers.

Light to import (no `datasets`, no torch): the heavy reader is imported only for folders.
"""

from rlhfkit.data.convert import convert_rows, to_explicit_prompt, to_implicit_prompt
from rlhfkit.data.formats import METADATA_FIELDS, Format, Kind, RowError, check_row
from rlhfkit.data.io import (
    Dataset,
    atomic_open,
    load,
    validate,
    write,
    write_hf_dataset,
    write_jsonl,
)

__all__ = [
    "METADATA_FIELDS",
    "Dataset",
    "Format",
    "Kind",
    "RowError",
    "atomic_open",
    "check_row",
    "convert_rows",
    "load",
    "to_explicit_prompt",
    "to_implicit_prompt",
    "validate",
    "write",
    "write_hf_dataset",
    "write_jsonl",
]
