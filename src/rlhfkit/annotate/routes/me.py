"""`GET /api/me`: the caller's own progress."""

from __future__ import annotations

from fastapi import APIRouter, Request

from rlhfkit.annotate.deps import ClaimedCaller, app_state, refused
from rlhfkit.annotate.security import TokenRefused
from rlhfkit.annotate.status import annotator_progress

router = APIRouter(prefix="/api", tags=["me"])


@router.get("/me")
def get_me(request: Request, caller: ClaimedCaller) -> dict:
    """Name, state, labels given (anchors included), calibration progress (tasks finished
    in the round, anchors included), whether the main queue is open, and the labeling
    page's progress line. No count of what is left: it would tell anchors apart."""
    state = app_state(request)
    try:
        return annotator_progress(state.store, state.policy, caller.id, caller.token_hash)
    except TokenRefused:
        raise refused(request, caller) from None
