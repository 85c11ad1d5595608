"""Typer options from a config dataclass: each field becomes `--field-name`, and the
docstring under the field becomes its help text (cleanrl's habit), so a config class is
the single place where a setting is named, typed, defaulted and explained.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import math
import textwrap
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from rlhfkit.errors import UserError


def field_docs(cls: type) -> dict[str, str]:
    """The string literal under each field of a dataclass and of its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def command_from_config(
    config_cls: type,
    run: Callable[[Any], None],
    required: tuple[str, ...] = (),
) -> Callable[..., None]:
    """A function Typer can register, whose options are the config's fields."""
    hints = typing.get_type_hints(config_cls)
    docs = field_docs(config_cls)
    params = []
    for f in dataclasses.fields(config_cls):
        hint = hints[f.name]
        help_text = docs.get(f.name, "")
        if typing.get_origin(hint) is typing.Literal:
            choices = typing.get_args(hint)
            help_text = f"{help_text} (one of: {', '.join(choices)})".strip()
            hint = str
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if f.name in required:
            option = typer.Option(..., flag, help=help_text)
        elif hint is bool:
            option = typer.Option(default, f"{flag}/--no-{flag[2:]}", help=help_text)
        else:
            option = typer.Option(default, flag, help=help_text)
        if hint is Path:
            hint = Path
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=hint
            )
        )

    def command(**kwargs: Any) -> None:
        for name, value in kwargs.items():
            # click's float type takes "nan" and "inf"; no setting means either, and a NaN
            # would reach the config hash and the manifest (strict JSON refuses it there)
            if isinstance(value, float) and not math.isfinite(value):
                flag = "--" + name.replace("_", "-")
                raise UserError(f"{flag} must be a finite number, not {value}")
        run(config_cls(**kwargs))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return command
