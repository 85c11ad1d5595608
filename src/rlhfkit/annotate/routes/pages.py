"""The HTML pages: login, labeling, guidelines, the admin dashboard.

Pages are rendered by Jinja with autoescaping; the labeling page fetches tasks from the JSON
API and puts model output into the page with `textContent` only (static/label.js). Login
sets an HttpOnly, SameSite=Strict cookie holding the token; every form that changes
something carries the CSRF token, and so does every API call the page's script makes.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from rlhfkit.annotate import security
from rlhfkit.annotate.annotators import Caller, revoke_annotator, rotate_token
from rlhfkit.annotate.deps import COOKIE, app_state
from rlhfkit.annotate.rounds import override_gate
from rlhfkit.annotate.security import TokenRefused
from rlhfkit.annotate.status import status
from rlhfkit.errors import UserError

router = APIRouter(include_in_schema=False)
MAX_FORM = 16 * 1024


def _page(request: Request, name: str, caller: Caller | None, code: int = 200, **values: Any):
    state = app_state(request)
    csrf = security.csrf_token(state.store.secret, caller.token_hash) if caller else ""
    html = state.templates.get_template(name).render(
        caller=caller,
        csrf=csrf,
        project=state.project_name,
        rubric=state.rubric,
        **values,
    )
    return HTMLResponse(html, status_code=code)


def _cookie_caller(request: Request) -> Caller | None:
    return app_state(request).authenticate(request.cookies.get(COOKIE))


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM:
        return {}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _same_origin(request: Request) -> bool:
    """A form post from another site carries its own Origin; refuse it (login CSRF)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:  # "http://[": not a URL, so not this site
        return False
    return netloc == request.headers.get("host", "")


@router.get("/")
def home(request: Request) -> Response:
    return RedirectResponse("/label" if _cookie_caller(request) else "/login", status_code=303)


@router.get("/login")
def login_page(request: Request) -> Response:
    return _page(request, "login.html", None, error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    if not _same_origin(request):
        return _page(request, "login.html", None, 403, error="refused: cross-site login")
    token = form.get("token", "").strip()
    state = app_state(request)
    caller = await anyio.to_thread.run_sync(state.authenticate, token)
    if caller is None:
        return _page(request, "login.html", None, 401, error="That token is not valid.")
    response = RedirectResponse("/admin" if caller.is_admin else "/label", status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=30 * 24 * 3600,
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await _form(request)
    caller = await anyio.to_thread.run_sync(_cookie_caller, request)
    state = app_state(request)
    if caller and not security.csrf_ok(state.store.secret, caller.token_hash, form.get("csrf")):
        return HTMLResponse("missing or wrong CSRF token", status_code=403)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.get("/label")
def label_page(request: Request) -> Response:
    caller = _cookie_caller(request)
    if caller is None:
        return RedirectResponse("/login", status_code=303)
    return _page(request, "label.html", caller)


@router.get("/guidelines")
def guidelines_page(request: Request) -> Response:
    caller = _cookie_caller(request)
    if caller is None:
        return RedirectResponse("/login", status_code=303)
    return _page(request, "guidelines.html", caller)


@router.get("/admin")
def admin_page(request: Request) -> Response:
    caller = _cookie_caller(request)
    if caller is None:
        return RedirectResponse("/login", status_code=303)
    if not caller.is_admin:
        return _page(request, "forbidden.html", caller, 403)
    return _dashboard(request, caller)


def _dashboard(
    request: Request, caller: Caller, code: int = 200, error: str | None = None, notice=None
) -> Response:
    state = app_state(request)
    s = status(state.store, state.policy)
    return _page(request, "admin.html", caller, code, s=s, error=error, notice=notice)


@router.post("/admin/override")
async def admin_override(request: Request) -> Response:
    form = await _form(request)
    return await anyio.to_thread.run_sync(_override, request, form)


def _admin_form_caller(request: Request, form: dict[str, str]) -> Caller | Response:
    """The admin posting a dashboard form, or the 403 that refuses the post (not an admin's
    page session, or a missing or wrong CSRF token)."""
    caller = _cookie_caller(request)
    if caller is None or not caller.is_admin:
        return HTMLResponse("this needs an admin login", status_code=403)
    if not security.csrf_ok(app_state(request).store.secret, caller.token_hash, form.get("csrf")):
        return HTMLResponse("missing or wrong CSRF token", status_code=403)
    return caller


def _override(request: Request, form: dict[str, str]) -> Response:
    state = app_state(request)
    caller = _admin_form_caller(request, form)
    if isinstance(caller, Response):
        return caller
    try:
        by = (caller.id, caller.token_hash)
        override_gate(state.store, form.get("reason", ""), actor=caller.name, by=by)
    except UserError as e:
        return _dashboard(request, caller, 422, error=str(e))
    except TokenRefused:  # the admin's own token, revoked or rotated since the check
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse("/admin", status_code=303)


@router.post("/admin/annotators/{action}")
async def admin_token(request: Request, action: str) -> Response:
    """The dashboard's revoke and rotate buttons (form: name, csrf). A rotated token is shown
    on the page that answers, once."""
    form = await _form(request)
    return await anyio.to_thread.run_sync(_token_action, request, action, form)


def _token_action(request: Request, action: str, form: dict[str, str]) -> Response:
    state = app_state(request)
    caller = _admin_form_caller(request, form)
    if isinstance(caller, Response):
        return caller
    if action not in ("revoke", "rotate"):
        return HTMLResponse("no such action", status_code=404)
    name = form.get("name", "")
    try:
        if action == "revoke":
            r = revoke_annotator(state.store, name, actor=caller.name, by=caller)
            tasks = f"{r.released} open task{'' if r.released == 1 else 's'} released"
            notice = {"text": f"{name}'s token revoked; {tasks}; their labels stay.", "token": None}
        else:
            token = rotate_token(state.store, name, actor=caller.name, by=caller)
            notice = {
                "text": f"{name}'s new token (shown once; the old one is refused from now on):",
                "token": token,
            }
    except UserError as e:
        return _dashboard(request, caller, 422, error=str(e))
    except TokenRefused:  # the admin's own token, revoked or rotated since the check
        return RedirectResponse("/login", status_code=303)
    return _dashboard(request, caller, notice=notice)
