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
    state = app_state(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    from_cookie = False
    if scheme.lower() != "bearer" or not token:
        token = request.cookies.get(COOKIE, "")
        from_cookie = True
    if not token:
        raise HTTPException(401, "log in: send Authorization: Bearer TOKEN", _challenge())
    caller = await state.authenticate.check(token)  # every request: revocation is immediate
    if caller is None:
        raise HTTPException(401, "unknown token", _challenge())
    if from_cookie and request.method not in SAFE_METHODS:
        given = request.headers.get("x-csrf-token")
        if not security.csrf_ok(state.store.secret, caller.token_hash, given):
            raise HTTPException(403, "missing or wrong CSRF token")
    return caller


def _challenge() -> dict[str, str]:
    return {"WWW-Authenticate": "Bearer"}


async def _admin(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
    if not caller.is_admin:
        raise HTTPException(403, "this needs an admin token")
    return caller


CurrentCaller = Annotated[Caller, Depends(_caller)]
AdminCaller = Annotated[Caller, Depends(_admin)]
