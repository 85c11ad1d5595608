"""Request dependencies, as `Annotated` aliases the routes declare in their signatures.

Who is calling: a bearer token (``Authorization: Bearer rlk_...``, the API's way) or the
page cookie set at login. A cookie is sent by the browser on its own, so a cookie-
authenticated request that changes anything must also carry the CSRF token (header
``X-CSRF-Token`` from the page's meta tag, or a form field): a cross-site page cannot read it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from rlhfkit.annotate import security
from rlhfkit.annotate.annotators import Caller

COOKIE = "rlhfkit_token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def app_state(request: Request):
    return request.app.state.annotate


async def _caller(request: Request) -> Caller:
    return await _who(request, verified_by_route=False)


async def _claimed_caller(request: Request) -> Caller:
    return await _who(request, verified_by_route=True)


async def _who(request: Request, verified_by_route: bool) -> Caller:
    state = app_state(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    from_cookie = False
    if scheme.lower() != "bearer" or not token:
        token = request.cookies.get(COOKIE, "")
        from_cookie = True
    if not token:
        raise HTTPException(401, "log in: send Authorization: Bearer TOKEN", _challenge())
    # A revoked or rotated token is refused on its next request: looked up every time, or,
    # where the route verifies it in its own transaction, taken from memory (`Authenticator`).
    if verified_by_route:
        caller = await state.authenticate.claimed(token)
    else:
        caller = await state.authenticate.check(token)
    if caller is None:
        raise HTTPException(401, "unknown token", _challenge())
    if from_cookie and request.method not in SAFE_METHODS:
        given = request.headers.get("x-csrf-token")
        if not security.csrf_ok(state.store.secret, caller.token_hash, given):
            raise HTTPException(403, "missing or wrong CSRF token")
    return caller


def _challenge() -> dict[str, str]:
    return {"WWW-Authenticate": "Bearer"}


def refused(request: Request, caller: Caller) -> HTTPException:
    """The 401 for a token found revoked or rotated by the route's own check."""
    app_state(request).authenticate.forget(caller)
    return HTTPException(401, "unknown token", _challenge())


async def _admin(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
    if not caller.is_admin:
        raise HTTPException(403, "this needs an admin token")
    return caller


ClaimedCaller = Annotated[Caller, Depends(_claimed_caller)]
"""For a route whose unit calls `security.verify` on the annotator's row in its own
transaction (and answers 401 with `refused` when it fails): next task, /api/me, a label.
A route that changes anything must check there, not here: a revoke could commit between
a check before the transaction and the transaction."""
AdminCaller = Annotated[Caller, Depends(_admin)]
