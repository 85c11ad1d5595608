"""The FastAPI application: one routes module per resource, state built once at start-up.

`create_app(settings)` opens the store, loads the project (rubric and annotation settings)
and mounts the JSON API (`/api/...`, bearer token or the page cookie) and the pages. Small
ASGI middlewares guard every request: a body-size limit (413 before the body is read), the
input rule of `inputs` (strict JSON, no NUL: 422 before any route), and security headers (a
Content-Security-Policy that allows no inline script, so even a rendering bug could not run
a `<script>` from a model's response). The headers wrap everything else, Starlette's own
500 handler included, so every response the app sends carries them.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rlhfkit import strict_json
from rlhfkit.annotate import inputs
from rlhfkit.annotate.annotators import Authenticator
from rlhfkit.annotate.labeling import InvalidLabel, LabelConflict, TaskNotFound
from rlhfkit.annotate.routes import admin, labels, me, pages, tasks
from rlhfkit.annotate.rules import Policy
from rlhfkit.annotate.settings import ServerSettings
from rlhfkit.annotate.store import Store, open_store
from rlhfkit.errors import UserError
from rlhfkit.project import load_project

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


@dataclass
class AppState:
    store: Store
    policy: Policy
    authenticate: Authenticator
    rubric: dict[str, Any]
    """The rubric as the API and pages show it (criteria, borderline examples, policies)."""
    rubric_json: bytes
    project_name: str
    templates: jinja2.Environment
    rng: random.Random


def create_app(settings: ServerSettings) -> FastAPI:
    project = settings.project
    if isinstance(project, str | Path):
        project = load_project(project)
    store = open_store(settings.db_url)
    policy = Policy.from_project(project, settings.task_timeout_s)
    rubric = project.spec.rubric.model_dump(mode="json") | {"choices": list(policy.choices)}
    state = AppState(
        store=store,
        policy=policy,
        authenticate=Authenticator(store),
        rubric=rubric,
        rubric_json=strict_json.dumps(rubric, ensure_ascii=False).encode(),
        project_name=project.spec.name,
        templates=jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,  # every {{ value }} is HTML-escaped: model output is untrusted
            undefined=jinja2.StrictUndefined,
        ),
        rng=random.Random(settings.seed),
    )
    state.templates.filters["tojson_text"] = lambda v: strict_json.dumps(
        v, ensure_ascii=False, indent=1
    )


    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        # Stop the SQLite writer and checkpoint threads and close the connections (the
        # token lookups' too): a process that starts and stops servers (tests, the demo)
        # must not collect them.
        state.authenticate.close()
        await anyio.to_thread.run_sync(store.close)

    app = _App(
        lifespan=lifespan,
        title="rlhfkit annotate",
        docs_url=None,  # the docs pages load scripts from a CDN, which the CSP forbids
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.annotate = state
    for module in (tasks, labels, me, admin, pages):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_exception_handler(TaskNotFound, _not_found)
    app.add_exception_handler(LabelConflict, _conflict)
    app.add_exception_handler(InvalidLabel, _invalid)
    app.add_exception_handler(UserError, _conflict)  # e.g. an override with nothing to override
    app.add_exception_handler(RequestValidationError, inputs.validation_error)
    app.add_exception_handler(Exception, inputs.server_error)
    # The last added runs first: the size limit, then the input rule, then the routes.
    app.add_middleware(inputs.StrictInput)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app


class _App(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        # Outside Starlette's outermost layer (ServerErrorMiddleware, which answers a bug's
        # 500 straight to the server): added with add_middleware, the headers would miss it.
        return SecurityHeaders(super().build_middleware_stack())


def _not_found(_request: Request, _exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": "no such task"}, status_code=404)


def _conflict(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)


def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)


class BodyLimit:
    """Refuse request bodies over `limit` bytes: by Content-Length before reading a byte, and
    for a chunked body (no length given) by buffering at most `limit` bytes before the app
    sees any of it (FastAPI would turn an error raised mid-read into a vague 400)."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:  # read as the input check reads it: once, any case
            length = inputs.single_header(scope, "content-length")
        except inputs.Refused as e:
            await JSONResponse({"detail": [e.error]}, status_code=422)(scope, receive, send)
            return
        if length is not None:
            if not length.isdigit() or int(length) > self.limit:
                await _too_large(send, self.limit)
                return
            await self.app(scope, receive, send)
            return
        # Whatever the method: the input check (inputs.StrictInput) reads every body whole.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await _too_large(send, self.limit)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, inputs.replaying(b"".join(chunks), receive), send)


async def _too_large(send: Send, limit: int) -> None:
    body = strict_json.dumps({"detail": f"request body over {limit} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def add(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    # same-origin, not no-referrer: with no-referrer browsers send
                    # "Origin: null" on form posts, and the login's origin check needs it.
                    (b"referrer-policy", b"same-origin"),
                    (b"cache-control", b"no-store"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, add)
