"""Hostile pages, headers, URLs and imports, through a real server and the CLI, on SQLite
and on PostgreSQL: a NUL or bytes that are not UTF-8 in a form, a URL or a path parameter are
refused alike on both databases; no header makes a 500; every response carries the security
headers; an import row the store cannot keep is FILE:LINE. JSON bodies and the fuzz:
test_hostile_json.py.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote, urlencode

import anyio
import pytest
from sqlalchemy import select

from rlhfkit.annotate import Policy, import_items, inputs, open_store, override_gate, security
from rlhfkit.annotate import models as m
from rlhfkit.annotate.app import BodyLimit
from rlhfkit.errors import UserError
from rlhfkit.project import load_project
from tests.annotate.conftest import count_labels, pairs, running_team, write_jsonl, write_project
from tests.annotate.wire import (
    FORM,
    JSON,
    SECURITY_HEADERS,
    Wire,
    api_endpoints,
    check,
    form_posts,
    store_secret,
)
from tests.conftest import run_cli


def test_a_nul_in_a_page_form_or_a_url_is_refused_on_both_databases(db_url, tmp_path):
    with running_team(tmp_path, db_url, pairs(3), calibration_size=2) as team:
        token = team.tokens["admin"]
        csrf = security.csrf_token(store_secret(team.db), security.hash_token(token))
        wire = Wire(team.base_url, {"Cookie": f"rlhfkit_token={token}"})
        form = FORM
        cases = [
            ("/admin/override", urlencode({"csrf": csrf, "reason": "by hand\x00"})),
            ("/admin/override", f"csrf={csrf}&reason=%00"),
            ("/admin/override", f"csrf={csrf}&re%00son=x"),
            ("/login", urlencode({"token": token + "\x00"})),
            ("/logout", f"csrf={csrf}%00"),
        ]
        for path, body in cases:
            r = wire.send("POST", path, body.encode(), form)
            check(wire, r)
            assert r.status == 422, (path, body, r)
        for body in (f"csrf={csrf}&reason=%ff%fe", b"reason=\xff".decode("latin-1")):
            r = wire.send("POST", "/admin/override", body.encode("latin-1"), form)
            check(wire, r)
            assert r.status == 422, (body, r)
        api = Wire(team.base_url, {"Authorization": f"Bearer {token}"})
        for path in ("/api/tasks/next%00", "/api/me?x=%00", "/api/admin/status?%00=1"):
            r = api.send("GET", path)
            check(api, r)
            assert r.status == 422, (path, r)
        # Without the NUL the override goes through.
        r = wire.send(
            "POST", "/admin/override", urlencode({"csrf": csrf, "reason": "ok"}).encode(), form
        )
        assert r.status == 303, r


HOSTILE_HEADERS = [
    {"Origin": "http://["},  # not a URL: urlsplit raises
    {"Origin": "http://a]"},
    {"Origin": "null"},
    {"Origin": "http://evil.example"},
    {"Host": "["},
    {"Cookie": 'rlhfkit_token="\\000"'},  # a quoted cookie's octal escape: NUL
    {"Cookie": "rlhfkit_token=" + "x" * 5000},
    {"Cookie": 'rlhfkit_token=\u00ff\u00fe; other="unterminated'},
    {"Authorization": "Bearer " + "\u00ff" * 10},
    {"Authorization": "Bearer"},
    {"Authorization": "Basic " + "x" * 5000},
    {"X-CSRF-Token": "\u00ff" * 100},
    {"Content-Type": "application/json; charset=\u00ff"},
    {"Content-Type": "multipart/form-data; boundary="},
]


def test_hostile_headers_are_never_a_500(sqlite_url, tmp_path):
    with running_team(tmp_path, sqlite_url, pairs(3)) as team:
        wire = Wire(team.base_url)
        form = b"token=x&csrf=y&reason=z"
        for headers in HOSTILE_HEADERS:
            for method, path in [
                ("POST", p.replace("{", "").replace("}", "")) for p in form_posts()
            ] + [
                ("GET", "/label"),
                ("GET", "/admin"),
                ("GET", "/api/me"),
                ("POST", "/api/labels"),
            ]:
                # A hostile Content-Type is sent instead of the form's, not beside it.
                content_type = None if "Content-Type" in headers else FORM
                r = wire.send(method, path, form, content_type, headers=headers)
                check(wire, r, json_error=path.startswith("/api"))


# Content-Type said twice, or in a spelling FastAPI reads as JSON: the input check must read
# the header as the app does (Starlette: the first; FastAPI: as email.message parses it) or
# refuse it, or a body the app parses as JSON passes the check as a form. Before that rule, a
# NUL task id after "JSON, then text" was a 500 on PostgreSQL and a 404 on SQLite.
TWICE = {
    "JSON, then text": (("Content-Type", JSON), ("Content-Type", "text/plain")),
    "text, then JSON": (("Content-Type", "text/plain"), ("Content-Type", JSON)),
    "two spellings": (("content-type", JSON), ("CONTENT-TYPE", "text/plain")),
    "the same twice": (("Content-Type", JSON), ("Content-Type", JSON)),
    "JSON, then a form": (("Content-Type", JSON), ("Content-Type", FORM)),
}
SPELLED_AS_JSON = [
    "application/json\xa0",  # str.strip() drops a no-break space; bytes.strip() does not
    "application/json\x85",
    "Application/JSON ; charset=utf-8",
    'application/json;charset="utf\xa0-8"',
]
HOSTILE_LABELS = [
    b'{"task_id": "\\u0000", "choice": "first", "client_id": "c"}',
    b'{"task_id": "TASK", "choice": "first", "client_id": "c", "rationale": "x\\ud800"}',
    b'{"task_id": "TASK", "choice": "first", "client_id": "c", "rationale": NaN}',
]


def test_a_content_type_sent_twice_is_refused_on_both_databases(db_url, tmp_path):
    with running_team(tmp_path, db_url, pairs(3), calibration_size=2) as team:
        task = team.client("ann1").get("/api/tasks/next").json()["task_id"].encode()
        api = Wire(team.base_url, {"Authorization": f"Bearer {team.tokens['ann1']}"})
        valid = b'{"task_id": "TASK", "choice": "first", "client_id": "c"}'
        for case, lines in TWICE.items():
            for body in [*HOSTILE_LABELS, valid]:
                r = api.send("POST", "/api/labels", body.replace(b"TASK", task), lines)
                check(api, r)
                assert r.status == 422, (case, body, r)
                assert r.json()["detail"][0]["type"] == "header_invalid", (case, r)
        assert count_labels(team.db) == 0
        token = team.tokens["admin"]
        csrf = security.csrf_token(store_secret(team.db), security.hash_token(token))
        page = Wire(team.base_url, {"Cookie": f"rlhfkit_token={token}"})
        form = urlencode({"csrf": csrf, "reason": "by hand"}).encode()
        r = page.send("POST", "/admin/override", form, TWICE["JSON, then a form"])
        check(page, r)
        assert r.status == 422, r
        assert page.send("POST", "/admin/override", form, FORM).status == 303


def test_a_content_type_fastapi_reads_as_json_is_held_to_the_json_rule(db_url, tmp_path):
    with running_team(tmp_path, db_url, pairs(3)) as team:
        task = team.client("ann1").get("/api/tasks/next").json()["task_id"].encode()
        api = Wire(team.base_url, {"Authorization": f"Bearer {team.tokens['ann1']}"})
        for content_type in SPELLED_AS_JSON:
            for body in HOSTILE_LABELS:
                r = api.send("POST", "/api/labels", body.replace(b"TASK", task), content_type)
                check(api, r)
                assert r.status == 422, (content_type, body, r)
                assert r.json()["detail"][0]["type"] in ("string_nul", "json_invalid"), r
        assert count_labels(team.db) == 0
        valid = b'{"task_id": "TASK", "choice": "first", "client_id": "c"}'
        r = api.send("POST", "/api/labels", valid.replace(b"TASK", task), SPELLED_AS_JSON[0])
        assert r.status == 201, r  # read as JSON, as FastAPI reads it


def test_a_content_length_sent_twice_is_refused_before_the_body_is_read(sqlite_url, tmp_path):
    """The server refuses it (uvicorn's parser: 400); so does the input check, for a server
    that passes it on, before it reads a byte: the body limit reads one length, the server
    may frame the body by the other."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/labels",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
    }
    checks = (inputs.StrictInput(never_called), BodyLimit(never_called, limit=1000))
    for lengths in ([b"5", b"100000000"], [b"100000000", b"5"], [b"5", b"5"]):
        headers = scope["headers"] + [(b"content-length", n) for n in lengths]
        for guard in checks:  # the body limit reads the length as the input check does
            sent = asgi_call(guard, {**scope, "headers": headers})
            assert sent[0]["status"] == 422, (guard, lengths, sent)
            assert b"header_invalid" in sent[1]["body"], sent
    with running_team(tmp_path, sqlite_url, pairs(3)) as team:
        api = Wire(team.base_url, {"Authorization": f"Bearer {team.tokens['ann1']}"})
        body = b'{"task_id": "\\u0000", "choice": "first", "client_id": "c"}'
        lines = (
            ("Content-Type", JSON),
            ("Content-Length", "5"),
            ("Content-Length", str(len(body))),
        )
        r = api.send("POST", "/api/labels", body, lines)
        assert r.status in (400, 422) and r.closes, r


async def never_called(scope, receive, send):
    raise AssertionError("the app saw a request the input check should refuse")


def asgi_call(app, scope) -> list[dict]:
    """Run one request through an ASGI app whose body must not be read; the messages sent."""
    sent = []

    async def receive():
        raise AssertionError("the body was read")

    async def send(message):
        sent.append(message)

    anyio.run(app, scope, receive, send)
    return sent


# --- headers on every kind of response ---------------------------------------------------------


def test_every_response_carries_the_security_headers(sqlite_url, tmp_path, monkeypatch):
    from rlhfkit.annotate.routes import tasks

    with running_team(tmp_path, sqlite_url, pairs(3)) as team:
        bearer = {"Authorization": f"Bearer {team.tokens['ann1']}"}
        wire = Wire(team.base_url, bearer)
        big = b'{"rationale": "' + b"x" * 70_000 + b'"}'
        kinds = [
            ("GET", "/api/tasks/next", None, {}, 200),
            ("GET", "/api/me", None, {}, 200),
            ("GET", "/api/me", None, {"Authorization": "Bearer nope"}, 401),
            ("GET", "/api/admin/status", None, {}, 403),
            ("GET", "/api/no-such-thing", None, {}, 404),
            ("GET", "/api/labels", None, {}, 405),
            ("DELETE", "/api/labels", None, {}, 405),
            ("POST", "/api/labels", b"{", {"Content-Type": "application/json"}, 422),
            ("POST", "/api/labels", big, {"Content-Type": "application/json"}, 413),
            ("GET", "/", None, {}, 303),
            ("GET", "/login", None, {}, 200),
            ("HEAD", "/login", None, {}, 405),
            ("GET", "/static/style.css", None, {}, 200),
            ("HEAD", "/static/style.css", None, {}, 200),
            ("GET", "/static/nothing.css", None, {}, 404),
            ("GET", "/static/../app.py", None, {}, 404),
            ("OPTIONS", "/api/labels", None, {}, 405),
            ("GET", "/api/openapi.json", None, {}, 200),
        ]
        for method, path, body, headers, code in kinds:
            r = wire.send(method, path, body, headers=headers)
            assert r.status == code, (method, path, r)
            missing = [h for h in SECURITY_HEADERS if h not in r.headers]
            assert not missing, (method, path, r.status, missing)
            if r.closes:
                wire = Wire(team.base_url, bearer)
        # A chunked body over the limit (no Content-Length) is refused the same way.
        client = team.client("ann1")
        chunks = (big[i : i + 8192] for i in range(0, len(big), 8192))
        r = client.post("/api/labels", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert all(h in r.headers for h in SECURITY_HEADERS)
        # So is one sent with a GET: every body is read whole before the app sees it.
        chunks = (big[i : i + 8192] for i in range(0, len(big), 8192))
        r = client.request("GET", "/api/me", content=chunks)
        assert r.status_code == 413
        # A bug: the answer is a JSON 500 with the headers, and says the connection closes.

        async def broken(*_args, **_kwargs):
            raise RuntimeError("a bug in the scheduler")

        monkeypatch.setattr(tasks, "next_task_async", broken)
        wire = Wire(team.base_url, bearer)
        r = wire.send("GET", "/api/tasks/next")
        assert r.status == 500
        assert r.json() == {"detail": "internal server error"}
        assert all(h in r.headers for h in SECURITY_HEADERS), r.headers
        assert r.closes, r.headers


# --- imports ---------------------------------------------------------------------------------


UNSTORABLE_ROWS = [
    {"prompt": "Question\x00?"},
    {"response_a": "\x00"},
    {"response_b": "B\x00"},
    {"tags": ["fine", ["nested\x00"]]},
    {"id": "item\x00"},
    {"source_model": "m\x00"},
    {"prompt": "lone \ud800 surrogate"},
    {"id": "\udfff"},
    {"meta": {"k\x00": 1}},
]


def test_an_import_row_the_store_cannot_keep_is_a_file_line_error(db_url, tmp_path):
    project = write_project(tmp_path / "p")
    policy = Policy.from_project(load_project(project))
    good = pairs(3)
    store = open_store(db_url, create=True)
    try:
        for n, row in enumerate(UNSTORABLE_ROWS):
            path = tmp_path / f"items{n}.jsonl"
            # ensure_ascii: the file holds the escapes \u0000 and \ud800, as JSON writers do.
            rows = [good[0], good[1] | row, good[2]]
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            with pytest.raises(UserError) as error:
                import_items(store, policy, items=path)
            message = str(error.value)
            assert f"items{n}.jsonl:2:" in message, (row, message)
            assert f"items{n}.jsonl:1" not in message and f"items{n}.jsonl:3" not in message
        imported = import_items(store, policy, items=write_jsonl(tmp_path / "ok.jsonl", good))
        assert imported.items == 3  # nothing of the refused files was written
    finally:
        store.close()


def test_annotate_import_refuses_a_nul_with_file_and_line(db_url, tmp_path):
    project = write_project(tmp_path / "p")
    rows = pairs(3)
    rows[1]["response_b"] = "B\x00"
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = run_cli("annotate", "import", str(items), "--project", str(project), "--db", db_url)
    assert r.code == 2, r
    assert "items.jsonl:2: response_b: text holds a NUL character" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_cli_text_from_argv_that_is_not_utf8_is_refused_or_kept_escaped(db_url, tmp_path):
    """Python turns argv and file-name bytes that are not UTF-8 into lone surrogates
    (\udcff): an override's reason is refused, a file name is kept with its escape."""
    project = write_project(tmp_path / "p", calibration_size=2)
    policy = Policy.from_project(load_project(project))
    store = open_store(db_url, create=True)
    try:
        path = write_jsonl(tmp_path / "items\udcff.jsonl", pairs(3))
        assert import_items(store, policy, items=path).items == 3
        with store.read() as conn:
            sources = conn.execute(select(m.Item.source)).scalars().all()
        assert all("items\\udcff.jsonl:" in s for s in sources), sources
        with pytest.raises(UserError, match="surrogate"):
            override_gate(store, "by hand \udcff")
        with pytest.raises(UserError, match="NUL"):
            override_gate(store, "by hand \x00")
        assert override_gate(store, "by hand") == 1
    finally:
        store.close()


def test_path_parameters_with_hostile_text_are_refused_or_not_found(db_url, tmp_path):
    """Every route with a path parameter (the static files, the API's, the pages') gets NUL,
    bytes that are not UTF-8, overlong and odd text: never a 500."""
    with running_team(tmp_path, db_url, pairs(2)) as team:
        wire = Wire(team.base_url, {"Authorization": f"Bearer {team.tokens['admin']}"})
        endpoints = [("GET", "/static/{path}")] + [("POST", p) for p in form_posts()]
        endpoints += [(m, p) for m, p, _ in api_endpoints(team.base_url)]
        endpoints = [(m, p) for m, p in endpoints if "{" in p]
        assert len(endpoints) >= 2
        values = ("%00", "a%00b", "%ed%a0%80", "%ff", "x" * 3000, quote("é\u2028"), "%2e%2e", "%20")
        for method, template in endpoints:
            for value in values:
                path = re.sub(r"{\w+}", value, template)
                r = wire.send(method, path, b"{}" if method != "GET" else None, JSON)
                check(wire, r, json_error=path.startswith("/api"))
                if "%00" in value:
                    assert r.status == 422, (path, r)
