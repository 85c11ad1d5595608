"""The value lists of settings read on more than one layer, each written once: the `Literal`
type is the list, and the tuple of its values (`typing.get_args`) is what checks and help
texts use. Standard library only, so any module may import it.
"""

from __future__ import annotations

from typing import Literal, get_args

Precision = Literal["auto", "bf16", "fp32"]
"""The weights' dtype while training or sampling (auto: bf16 where this machine runs it
faster)."""
PRECISIONS: tuple[str, ...] = get_args(Precision)

DPOLossType = Literal["sigmoid", "ipo", "hinge", "robust"]
"""DPO's loss: sigmoid (DPO), ipo, hinge (SLiC) or robust (noisy labels)."""
DPO_LOSS_TYPES: tuple[str, ...] = get_args(DPOLossType)

Test = Literal["permutation", "bootstrap", "two_proportion"]
"""The tests of a before/after difference in `rlhfkit.stats` (the paired permutation test
first)."""
TESTS: tuple[str, ...] = get_args(Test)


def one_of(values: tuple[str, ...]) -> str:
    """'a, b or c': a value list as an error message writes it."""
    return f"{', '.join(values[:-1])} or {values[-1]}" if len(values) > 1 else values[0]
