"""`GET /api/tasks/next`: the caller's next pair to compare."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from rlhfkit import strict_json
from rlhfkit.annotate.deps import ClaimedCaller, app_state, refused
from rlhfkit.annotate.scheduling import NoTask, next_task_async
from rlhfkit.annotate.security import TokenRefused

router = APIRouter(prefix="/api/tasks", tags=["tasks"])


@router.get("/next", responses={204: {"description": "no work now; see X-Rlhfkit-Reason"}})
async def get_next_task(request: Request, caller: ClaimedCaller) -> Response:
    """The caller's next task: the prompt, the two responses in the order drawn for this
    annotator, and the rubric. Calling again before labeling returns the same task. Nothing
    here tells an anchor from any other item, or shows anyone else's answers.

    204 when there is nothing to do, with the reason in ``X-Rlhfkit-Reason``:
    ``calibration_gate`` (the main queue waits for the calibration round's agreement),
    ``removed`` (an admin took the caller off the team's work) or ``done``."""
    state = app_state(request)
    try:
        task = await next_task_async(
            state.store, state.policy, caller.id, state.rng, token_hash=caller.token_hash
        )
    except TokenRefused:
        raise refused(request, caller) from None
    if isinstance(task, NoTask):
        return Response(status_code=204, headers={"X-Rlhfkit-Reason": task.reason})
    body = {
        "task_id": task.task_id,
        "prompt": task.prompt,
        "first": task.first,
        "second": task.second,
        "phase": task.phase,
        "expires_at": task.expires_at,
        "choices": state.rubric["choices"],
    }
    # The rubric is the same for every task: encoded once at start-up, spliced in here.
    encoded = strict_json.dumps(body, ensure_ascii=False).encode()[:-1] + b',"rubric":'
    return Response(encoded + state.rubric_json + b"}", media_type="application/json")
