"""The one loader of user code named by a string: ``package.module:function`` or
``FILE.py:function``. PPO's reward functions (``--reward``), the ``callable`` success-criterion
detector and pairwise judges (``--judge callable:...``, the demo's panel) all come through here.
"""

from __future__ import annotations

import importlib
import importlib.util
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
