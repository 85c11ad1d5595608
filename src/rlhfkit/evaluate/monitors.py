"""The reward-hacking monitors after the fact, for `eval policy`: a trained policy's samples
against the starting policy's on the same prompts. The checks themselves, shared with the PPO
loop's live monitors, are in train/monitors.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rlhfkit.criteria import RefusalScope, SuccessCriterion
from rlhfkit.train.monitors import (
    CriterionMove,
    Flag,
    kl_flag,
    reward_without_criteria,
    text_flags,
)
from rlhfkit.train.text_stats import TextStats

if TYPE_CHECKING:
    from rlhfkit.project import MonitorSettings


def compare_flags(
    prompts: Sequence[Any],
    after: Sequence[str],
    before: Sequence[str],
    thresholds: MonitorSettings,
    reward_rise_sd: float | None = None,
    criteria_moves: Mapping[str, CriterionMove] | None = None,
    kl: float | None = None,
    alpha: float = 0.05,
    columns: Sequence[Mapping[str, Any] | None] | None = None,
    criteria: Sequence[SuccessCriterion] = (),
) -> list[Flag]:
    """The monitors on a trained policy's samples (`after`) against the starting policy's
    (`before`) on the same prompts: text monitors, plus 'reward up, no criterion moved (or one
    moved the wrong way, significantly at `alpha`)' and KL when those figures are known. With
    the prompts' `columns` and the pre-registered `criteria`, declining the criteria want is
    not flagged, only its spill onto the other prompts (`RefusalScope`)."""
    t = thresholds
    scope = RefusalScope.of(criteria)
    now = TextStats.of(prompts, after, t, columns, scope)
    flags = text_flags(now, TextStats.of(prompts, before, t, columns, scope), t)
    if reward_rise_sd is not None:
        flags.append(reward_without_criteria(reward_rise_sd, criteria_moves or {}, t, alpha))
    if kl is not None:
        flags.append(kl_flag(kl, t))
    return flags
