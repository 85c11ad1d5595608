"""What the app accepts from a client, and how it answers what it refuses.

One rule for every request, checked by one middleware before any route sees it, so an
endpoint added later is covered without a change here:

- Content-Type and Content-Length come at most once each (in any spelling of the name):
  what reads one copy and what reads the other would see two different requests.
- A JSON body (``application/json`` or ``application/*+json``, decided as FastAPI decides
  it, by the same code) must be I-JSON (RFC 7493):
  UTF-8, no duplicate names, no lone UTF-16 surrogates (``"\\ud800"``), no number a double
  cannot hold (``NaN``, ``Infinity``, ``1e999``, a 400-digit integer), and, here, nested at
  most `MAX_DEPTH` deep. Python's `json` accepts all of these; a lone surrogate cannot even
  be written back out as UTF-8, and a NaN cannot be written as JSON.
- Any other body (the pages read their posts as forms) must be UTF-8, and so must its
  percent-decoded form fields; the URL's query too.
- No string anywhere (names, values, form fields, the URL's path and query) may hold NUL
  (U+0000): PostgreSQL's text cannot store it, and SQLite can, so without this rule the
  same request is a 500 on one database and a 201 or a 404 on the other.

A refusal is a 422 in FastAPI's error format, ``{"detail": [{"type", "loc", "msg"}]}``:
type ``header_invalid``, ``json_invalid``, ``form_invalid`` or ``string_nul``. Imports
follow the same text rule (`storable`). Two handlers complete the guard: validation errors
never echo the input (FastAPI's default does, and fails on the NaN or surrogate it would
echo), and a bug answers a JSON 500 that says ``Connection: close`` (the server drops the
connection after one, so a client must not reuse it).
"""

from __future__ import annotations

import email.message
import json
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rlhfkit import strict_json
from rlhfkit.annotate.storable import NUL, first_unstorable, shown

MAX_DEPTH = 64
"""Deepest nesting a JSON body may have; the app's own bodies are two deep."""


class Refused(ValueError):
    """A request the app will not read, as one FastAPI-style error."""

    def __init__(self, kind: str, loc: list, msg: str):
        super().__init__(msg)
        self.error = {"type": kind, "loc": loc, "msg": msg}


def parse_json(raw: bytes) -> Any:
    """Parse an I-JSON body (see the module docstring); raise `Refused` if it is not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Refused("json_invalid", ["body", e.start], "the body is not UTF-8") from None
    try:
        value = strict_json.loads(text, object_pairs_hook=_unique_names)
    except json.JSONDecodeError as e:
        raise Refused("json_invalid", ["body", e.pos], f"JSON decode error: {e.msg}") from None
    except RecursionError:
        raise Refused("json_invalid", ["body"], f"nested over {MAX_DEPTH} deep") from None
    except (strict_json.NotFinite, _BadToken) as e:
        raise Refused("json_invalid", ["body"], str(e)) from None
    if _depth_over(value, MAX_DEPTH):
        raise Refused("json_invalid", ["body"], f"nested over {MAX_DEPTH} deep")
    found = first_unstorable(value, ["body"])
    if found:
        where, why = found
        kind = "string_nul" if why == NUL else "json_invalid"
        raise Refused(kind, where, f"text {why}")
    return value


class _BadToken(ValueError):
    pass


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = dict(pairs)
    if len(names) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _BadToken(f"the name {shown(name)!r} appears twice in one object")
            seen.add(name)
    return names


def _depth_over(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            items = value.values() if isinstance(value, dict) else value
            stack += [(item, depth + 1) for item in items]
    return False


def check_form(raw: bytes, where: str) -> None:
    """A form body (or query string): UTF-8 once percent-decoded, and no NUL."""
    try:
        fields = parse_qsl(
            raw.decode("utf-8"), keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except UnicodeDecodeError:
        raise Refused("form_invalid", [where], f"the {where} is not UTF-8") from None
    for name, value in fields:
        for text in (name, value):
            if "\x00" in text:
                raise Refused("string_nul", [where, shown(name)], f"text {NUL}")


def check_headers(scope: Scope) -> None:
    """Raise `Refused` for a request that sends Content-Type or Content-Length more than once
    (see `single_header`); the first check, before a byte of the body is read."""
    for name in ("content-type", "content-length"):
        single_header(scope, name)


def single_header(scope: Scope, name: str) -> bytes | None:
    """The value of a header a request may send once, its name in any case; None if absent.
    Raises `Refused` when it comes twice: Starlette reads the first, a proxy or a middleware
    may read the last (``dict(scope["headers"])`` does), and a check that reads one while the
    app reads the other checks nothing (JSON sent as text: a NUL reached the database)."""
    wanted = name.encode("latin-1")
    found = [value for key, value in scope["headers"] if key.lower() == wanted]
    if len(found) > 1:
        raise Refused("header_invalid", ["header", name], f"{name} is sent {len(found)} times")
    return found[0] if found else None


def check_request(scope: Scope, body: bytes) -> None:
    """Raise `Refused` unless the request follows the module's rule."""
    check_headers(scope)
    if "\x00" in scope["path"]:
        raise Refused("string_nul", ["path"], f"the path {NUL}")
    if scope.get("query_string"):
        check_form(scope["query_string"], "query")
    if not body:
        return
    if _read_as_json(single_header(scope, "content-type")):
        parse_json(body)
    else:
        check_form(body, "body")


def _read_as_json(content_type: bytes | None) -> bool:
    """Whether FastAPI parses a body with this Content-Type as JSON: its own test
    (fastapi.routing), step for step. A parse of our own differs somewhere: str.strip() drops
    the no-break space that bytes.strip() keeps, and "application/json\\xa0" is JSON there."""
    if not content_type:
        return False  # FastAPI's strict_content_type, on by default: not parsed as JSON
    message = email.message.Message()
    message["content-type"] = content_type.decode("latin-1")  # as Starlette decodes headers
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


class StrictInput:
    """Read the whole body (the body limit has bounded it), check it with `check_request`,
    then hand it to the app as it came; refuse with a 422 instead."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            check_headers(scope)  # before the body: the body limit may have read another length
        except Refused as e:
            await JSONResponse({"detail": [e.error]}, status_code=422)(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            check_request(scope, body)
        except Refused as e:
            await JSONResponse({"detail": [e.error]}, status_code=422)(scope, receive, send)
            return
        await self.app(scope, replaying(body, receive), send)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app `body`, already read whole, as one message, then
    whatever the client sends next (a disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, without the `input` and `ctx` it echoes: those may hold what JSON
    cannot carry (bytes that are not UTF-8, a lone surrogate in a name)."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "type": str(e.get("type", "value_error")),
            "loc": [p if isinstance(p, int) else shown(str(p)) for p in e.get("loc", ())],
            "msg": shown(str(e.get("msg", ""))),
        }
        for e in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


def server_error(_request: Request, _exc: Exception) -> JSONResponse:
    """A bug: say so in JSON, and that the connection closes (the server drops it next)."""
    return JSONResponse(
        {"detail": "internal server error"}, status_code=500, headers={"Connection": "close"}
    )
