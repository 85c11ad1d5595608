"""`GET /api/me`: the caller's own progress."""

from __future__ import annotations

from fastapi import APIRouter, Request

from rlhfkit.annotate.deps import CurrentCaller, app_state
from rlhfkit.annotate.status import annotator_progress

router = APIRouter(prefix="/api", tags=["me"])


@router.get("/me")
def get_me(request: Request, caller: CurrentCaller) -> dict:
    """Name, labels given, calibration progress, whether the main queue is open, and how
    many main items are still available to this annotator."""
    state = app_state(request)
    return annotator_progress(state.store, state.policy, caller.id)
