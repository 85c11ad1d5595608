"""The one loader of user code named by a string: ``package.module:function`` or
``FILE.py:function``. PPO's reward functions (``--reward``), the ``callable`` success-criterion
detector and pairwise judges (``--judge callable:...``, the demo's panel) all come through here.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhfkit.errors import UserError


def load_callable(target: str, what: str) -> Callable[..., Any]:
    """``FILE.py:NAME`` or ``package.module:NAME`` -> the function. `what` names the setting
    it came from in the messages (``--reward x.py:f``, ``detector 'm:f'``)."""
    where, _, name = target.rpartition(":")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise UserError(f"{what}: {where} does not exist")
        name_in_sys = f"rlhfkit_user_{path.stem}"
        spec = importlib.util.spec_from_file_location(name_in_sys, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name_in_sys] = module  # dataclasses and pickling look modules up here
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # the user's file: say which and why, no traceback
            raise UserError(f"{what}: importing {where} failed: {e}") from None
    else:
        try:
            module = importlib.import_module(where)
        except Exception as e:  # ImportError, or whatever the module raises on import
            raise UserError(f"{what}: {where!r} cannot be imported: {e}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise UserError(f"{what}: {where} has no function {name!r}")
    return fn


def positional_arity(fn: Callable[..., Any]) -> tuple[int, bool] | None:
    """How many positional parameters `fn` requires, and whether it takes ``*args``; None
    for a builtin without a signature. What the callers' signature checks count by."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    required = sum(
        1
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    )
    return required, any(p.kind == p.VAR_POSITIONAL for p in params)


def check_pairwise(fn: Callable[..., Any], what: str) -> None:
    """A pairwise judge (``[run] labeler``, ``--judge callable:...``) is called
    ``f(prompt, response_a, response_b)``: refuse a function that cannot be."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
    if len(required) > 3 or (len(positional) < 3 and not varargs):
        raise UserError(
            f"{what}: takes {len(required)} required arguments; a judge is "
            "f(prompt, response_a, response_b)"
        )
