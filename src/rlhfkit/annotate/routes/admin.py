"""Admin-only: `GET /api/admin/status`, `POST /api/admin/override`, `POST
/api/admin/recalibrate`, and revoking or rotating an annotator's token or removing them from
the round (`POST /api/admin/annotators/{name}/revoke`, `.../rotate`, `.../remove`).

Each change checks the admin's own token again in its transaction: an admin revoked while
the request waited does nothing (401)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from rlhfkit.annotate.annotators import (
    UnknownAnnotator,
    remove_annotator,
    revoke_annotator,
    rotate_token,
)
from rlhfkit.annotate.deps import AdminCaller, app_state, refused
from rlhfkit.annotate.rounds import override_gate, recalibrate
from rlhfkit.annotate.security import TokenRefused
from rlhfkit.annotate.status import status

router = APIRouter(prefix="/api/admin", tags=["admin"])


@router.get("/status")
def get_status(request: Request, caller: AdminCaller) -> dict:
    """Progress, the gate and its rounds, agreement, per-annotator statistics, drift alerts
    and the most disputed items."""
    state = app_state(request)
    return status(state.store, state.policy)


class ReasonIn(BaseModel):
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


@router.post("/override")
def post_override(body: ReasonIn, request: Request, caller: AdminCaller) -> dict:
    """Open the main queue although the calibration gate has not passed. The reason and the
    admin are recorded, and shown in the status, the export's manifest and reports."""
    state = app_state(request)
    try:
        by = (caller.id, caller.token_hash)
        round_id = override_gate(state.store, body.reason, actor=caller.name, by=by)
    except TokenRefused:  # the admin's own token, revoked or rotated since the check
        raise refused(request, caller) from None
    return {"round": round_id, "reason": body.reason, "by": caller.name}


@router.post("/annotators/{name}/revoke")
def post_revoke(name: str, request: Request, caller: AdminCaller) -> dict:
    """Refuse this annotator's token from the next request on; their open tasks return to
    the pool, their labels stay. 404 for an unknown name, 409 when already revoked."""
    state = app_state(request)
    try:
        r = revoke_annotator(state.store, name, actor=caller.name, by=caller)
    except UnknownAnnotator as e:
        raise HTTPException(404, str(e)) from None
    except TokenRefused:  # the admin's own token, revoked or rotated since the check
        raise refused(request, caller) from None
    return {"annotator": name, "revoked_at": r.at, "released_tasks": r.released, "by": caller.name}


@router.post("/annotators/{name}/rotate")
def post_rotate(name: str, request: Request, caller: AdminCaller) -> dict:
    """A new token for this annotator, in the answer and nowhere else; the old one is
    refused from the next request on. 404 for an unknown name, 409 when revoked."""
    state = app_state(request)
    try:
        token = rotate_token(state.store, name, actor=caller.name, by=caller)
    except UnknownAnnotator as e:
        raise HTTPException(404, str(e)) from None
    except TokenRefused:
        raise refused(request, caller) from None
    return {"annotator": name, "token": token, "by": caller.name}


@router.post("/annotators/{name}/remove")
def post_remove(name: str, body: ReasonIn, request: Request, caller: AdminCaller) -> dict:
    """Take this annotator off the round, as `rlhfkit annotate remove`: no more tasks, their
    labels leave the gate (evaluated again) and the export; recorded with the reason. 404
    for an unknown name, 409 when already removed."""
    state = app_state(request)
    try:
        r = remove_annotator(
            state.store, state.policy, name, body.reason, actor=caller.name, by=caller
        )
    except UnknownAnnotator as e:
        raise HTTPException(404, str(e)) from None
    except TokenRefused:
        raise refused(request, caller) from None
    return {
        "annotator": name,
        "released_tasks": r.released,
        "gate_before": r.gate_before,
        "gate_after": r.gate_after,
        "main_queue_open": r.main_queue_open,
        "by": caller.name,
    }


class RecalibrateIn(BaseModel):
    same_items: bool
    """True: the latest round's pairs again; False: fresh pairs."""
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


@router.post("/recalibrate")
def post_recalibrate(body: RecalibrateIn, request: Request, caller: AdminCaller) -> dict:
    """Open a new calibration round for the team, as `rlhfkit annotate recalibrate`; 409
    when there is nothing to recalibrate on (see the detail)."""
    state = app_state(request)
    try:
        by = (caller.id, caller.token_hash)
        r = recalibrate(
            state.store, state.policy, body.same_items, body.reason, caller.name, state.rng, by
        )
    except TokenRefused:
        raise refused(request, caller) from None
    return {"round": r.round, "size": r.size, "same_items_as": r.same_items_as, "by": caller.name}
