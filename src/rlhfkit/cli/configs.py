"""Typer options from a config dataclass: each field becomes `--field-name`, and the
docstring under the field becomes its help text (cleanrl's habit), so a config class is
the single place where a setting is named, typed, defaulted and explained.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import math
import textwrap
import typing
from collections.abc import Callable
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


def _option_param(
    f: dataclasses.Field, hint: Any, help_text: str, required: bool, from_spec: bool
) -> inspect.Parameter:
    """One field as a Typer option: `--field-name`, or the flag its metadata names."""
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        help_text = f"{help_text} (one of: {', '.join(choices)})".strip()
        hint = str
    if typing.get_origin(hint) is tuple:  # a repeatable option; the config keeps a tuple
        hint = list[typing.get_args(hint)[0]]
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = None  # a required option: Typer asks for it
    if from_spec:  # None lets the project spec's value through; the config's comes last
        fallback = f", else {default}" if default is not None else ""
        help_text = f"{help_text} (default: the spec's{fallback})".strip()
        default = None
    flag = "--" + f.metadata.get("flag", f.name).replace("_", "-")
    if required:
        option = typer.Option(..., flag, help=help_text)
    elif hint is bool:
        option = typer.Option(default, f"{flag}/--no-{flag[2:]}", help=help_text)
    else:
        option = typer.Option(default, flag, help=help_text)
    kind = inspect.Parameter.KEYWORD_ONLY
    return inspect.Parameter(f.name, kind, default=option, annotation=hint)


def config_options(
    config_cls: type,
    required: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    from_spec: tuple[str, ...] = (),
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator: the command's options are its own parameters followed by the config's fields
    (less `exclude`); the fields' values reach it as one keyword, `settings` (name -> value).

    A field without a default is a required option, as are those named in `required`; those
    in `from_spec` default to None (the project spec's value, else the config's)."""
    hints = typing.get_type_hints(config_cls)
    docs = field_docs(config_cls)
    fields = [f for f in dataclasses.fields(config_cls) if f.name not in exclude]
    params = [
        _option_param(
            f,
            hints[f.name],
            docs.get(f.name, ""),
            f.name in required
            or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING),
            f.name in from_spec,
        )
        for f in fields
    ]
    names = {f.name for f in fields}
    tuples = {f.name for f in fields if typing.get_origin(hints[f.name]) is tuple}

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        own_hints = typing.get_type_hints(fn)  # resolved here: Typer would look in this module
        own = [
            p.replace(annotation=own_hints[p.name])
            for p in inspect.signature(fn).parameters.values()
            if p.name != "settings"
        ]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> None:
            settings = {k: v for k, v in kwargs.items() if k in names}
            for name, value in settings.items():
                # click's float type takes "nan" and "inf"; no setting means either, and a
                # NaN would reach the config hash and the manifest (strict JSON refuses it)
                if isinstance(value, float) and not math.isfinite(value):
                    flag = "--" + name.replace("_", "-")
                    raise UserError(f"{flag} must be a finite number, not {value}")
                if name in tuples:
                    settings[name] = tuple(value)
            fn(**{k: v for k, v in kwargs.items() if k not in names}, settings=settings)

        signature = inspect.Signature(own + params)
        command.__signature__ = signature  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        del command.__wrapped__  # Typer reads the signature above, not fn's
        return command

    return decorate


def command_from_config(
    config_cls: type,
    run: Callable[[Any], None],
    required: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
) -> Callable[..., None]:
    """A function Typer can register, whose options are the config's fields."""

    def command(settings: dict[str, Any]) -> None:
        run(config_cls(**settings))

    return config_options(config_cls, required, exclude)(command)
