"""The pydantic base every table of the project spec is built on (project.py, and the
success-criteria detectors in evaluate/criteria.py, which project.py imports)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

NAME = r"^[a-z][a-z0-9_]*$"
"""Names of criteria and the like: lower-case identifiers, usable as JSON keys and in logs."""


class Strict(BaseModel):
    # strict: a TOML string "3" is not a number and `true` is not 1; no inf or nan either.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
