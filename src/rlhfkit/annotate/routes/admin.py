"""Admin-only: `GET /api/admin/status` and `POST /api/admin/override`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from rlhfkit.annotate.deps import AdminCaller, app_state
from rlhfkit.annotate.rounds import override_gate
from rlhfkit.annotate.status import status

router = APIRouter(prefix="/api/admin", tags=["admin"])


@router.get("/status")
def get_status(request: Request, caller: AdminCaller) -> dict:
    """Progress, the gate and its rounds, agreement, per-annotator statistics, drift alerts
    and the most disputed items."""
    state = app_state(request)
    return status(state.store, state.policy)


class OverrideIn(BaseModel):
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


@router.post("/override")
def post_override(body: OverrideIn, request: Request, caller: AdminCaller) -> dict:
    """Open the main queue although the calibration gate has not passed. The reason and the
    admin are recorded, and shown in the status, the export's manifest and reports."""
    state = app_state(request)
    round_id = override_gate(state.store, body.reason, actor=caller.name)
    return {"round": round_id, "reason": body.reason, "by": caller.name}
