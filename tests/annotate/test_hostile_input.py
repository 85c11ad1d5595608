"""Hostile and malformed requests through a real server, on SQLite and on PostgreSQL.

Whatever a client sends, the answer is a 4xx with a JSON error, never a 500, and the same on
both databases; every response carries the security headers; and the keep-alive connection
stays usable, or the response says `Connection: close`. Named cases first, one per class;
then a fuzz of every endpoint that takes a body: the API's (read from its OpenAPI document,
so a new endpoint is fuzzed without a change here) and the pages' form posts.
"""

from __future__ import annotations

import http.client
import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from rlhfkit.annotate import Policy, import_items, open_store, override_gate, security
from rlhfkit.annotate import models as m
from rlhfkit.errors import UserError
from rlhfkit.project import load_project
from tests.annotate.conftest import (
    new_pg_database,
    pairs,
    running_team,
    write_jsonl,
    write_project,
)
from tests.annotate.test_api import count_labels
from tests.conftest import run_cli

SECURITY_HEADERS = (
    "content-security-policy",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "cache-control",
)
JSON = "application/json"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closes: bool
    """The response said `Connection: close`."""

    def json(self):
        return strict_json(self.body)


def strict_json(raw: bytes):
    """Parse as a strict client would: UTF-8, no NaN or Infinity."""

    def refuse(token: str):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(raw.decode("utf-8"), parse_constant=refuse)


class Wire:
    """One keep-alive connection that sends exactly the body and headers given (http.client
    adds only Host and Content-Length) and, unlike httpx's pool, notices a connection that
    the server dropped: the next request on it fails."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None):
        url = urlsplit(base_url)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        self.headers = headers or {}

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = self.headers | (headers or {})
        if content_type is not None:
            sent["Content-Type"] = content_type
        self.conn.request(method, path, body=body, headers=sent)
        r = self.conn.getresponse()
        body = r.read()
        return Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, body, r.will_close)

    def close(self) -> None:
        self.conn.close()


def check(wire: Wire, answer: Answer, json_error: bool = True) -> None:
    """The answer is not a 500, carries the security headers, is a JSON error if it is one
    (`json_error`), and the connection still works unless the answer said it would not."""
    assert answer.status < 500, answer
    missing = [h for h in SECURITY_HEADERS if h not in answer.headers]
    assert not missing, (answer.status, missing)
    if json_error and answer.status >= 400:
        assert answer.headers.get("content-type", "").startswith("application/json"), answer
        assert "detail" in answer.json(), answer
    if not answer.closes:
        probe = wire.send("GET", "/no-such-page")  # on the same connection
        assert probe.status == 404


def store_secret(db: str) -> str:
    store = open_store(db)
    try:
        return store.secret
    finally:
        store.close()


# --- named cases, one per class ---------------------------------------------------------------

MALFORMED_JSON = {
    "nan": b'{"task_id": "TASK", "choice": "first", "client_id": "c", "rationale": NaN}',
    "infinity": b'{"task_id": "TASK", "choice": "first", "client_id": Infinity}',
    "minus infinity": b'{"task_id": -Infinity, "choice": "first", "client_id": "c"}',
    "float overflow": b'{"task_id": "TASK", "choice": 1e999, "client_id": "c"}',
    "float overflow nested": b'{"task_id": "TASK", "choice": "first", "client_id": "c",'
    b' "criteria": {"tone": [-1E400]}}',
    "huge integer": b'{"task_id": 1' + b"0" * 400 + b', "choice": "first", "client_id": "c"}',
    "integer past the digit limit": b'{"task_id": ' + b"9" * 5000 + b"}",
    "lone high surrogate": b'{"task_id": "TASK", "choice": "first", "client_id": "\\ud800"}',
    "lone low surrogate in a key": b'{"task_id": "TASK", "choice": "first", "client_id": "c",'
    b' "criteria": {"\\udc00": "first"}}',
    "lone surrogate in an extra key": b'{"\\ud83d": 1}',
    "invalid utf-8": b'{"task_id": "TASK", "choice": "first", "client_id": "\xff\xfe"}',
    "latin-1 text": '{"task_id": "TASK", "choice": "first", "client_id": "caf\xe9"}'.encode(
        "latin-1"
    ),
    "not json": b"{not json",
    "truncated": b'{"task_id": "TASK", "choice": ',
    "empty": b"",
    "whitespace": b"  \n ",
    "top-level array": b'["TASK", "first", "c"]',
    "top-level string": b'"TASK"',
    "top-level number": b"42",
    "top-level null": b"null",
    "deeply nested": b'{"task_id": "TASK", "choice": "first", "client_id": "c", "criteria": '
    + b'{"tone": ' * 3000
    + b"1"
    + b"}" * 3001,
    "deeply nested array": b"[" * 20000 + b"]" * 20000,
    "duplicate keys": b'{"task_id": "TASK", "choice": "first", "choice": "second",'
    b' "client_id": "c"}',
    "wrong types": b'{"task_id": ["TASK"], "choice": {"a": 1}, "client_id": 3.5, "criteria": 1}',
    "extra keys": b'{"task_id": "TASK", "choice": "first", "client_id": "c", "admin": true}',
}


def test_malformed_json_bodies_are_422_with_a_json_error(db_url, tmp_path):
    with running_team(tmp_path, db_url, pairs(3), calibration_size=2) as team:
        task = team.client("ann1").get("/api/tasks/next").json()
        wires = {
            path: Wire(team.base_url, {"Authorization": f"Bearer {team.tokens[who]}"})
            for path, who in (("/api/labels", "ann1"), ("/api/admin/override", "admin"))
        }
        for case, raw in MALFORMED_JSON.items():
            body = raw.replace(b"TASK", task["task_id"].encode())
            for path, wire in wires.items():
                for content_type in ("application/json", None):
                    r = wire.send("POST", path, body, content_type)
                    check(wire, r)
                    assert r.status == 422, (case, path, content_type, r)
                    assert isinstance(r.json()["detail"], list), (case, r)
        assert count_labels(team.db) == 0


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", "multipart/form-data"],
)
def test_a_json_endpoint_given_another_content_type_is_422(sqlite_url, tmp_path, content_type):
    with running_team(tmp_path, sqlite_url, pairs(3)) as team:
        task = team.client("ann1").get("/api/tasks/next").json()
        wire = Wire(team.base_url, {"Authorization": f"Bearer {team.tokens['ann1']}"})
        valid = {"task_id": task["task_id"], "choice": "first", "client_id": "c"}
        for body in (json.dumps(valid).encode(), b"\xff\x00\x80 binary", b"task_id=x&choice=first"):
            r = wire.send("POST", "/api/labels", body, content_type)
            check(wire, r)
            assert r.status == 422, r
        assert count_labels(team.db) == 0


NUL_LABELS = {
    "task_id": lambda task: {"task_id": task + "\x00", "choice": "first", "client_id": "c"},
    "task_id only nul": lambda task: {"task_id": "\x00", "choice": "first", "client_id": "c"},
    "client_id": lambda task: {"task_id": task, "choice": "first", "client_id": "c\x00"},
    "rationale": lambda task: {
        "task_id": task,
        "choice": "first",
        "client_id": "c",
        "rationale": "fine\x00",
    },
    "criterion name": lambda task: {
        "task_id": task,
        "choice": "first",
        "client_id": "c",
        "criteria": {"tone\x00": "first"},
    },
    "criterion value": lambda task: {
        "task_id": task,
        "choice": "first",
        "client_id": "c",
        "criteria": {"tone": "first\x00"},
    },
    "choice": lambda task: {"task_id": task, "choice": "first\x00", "client_id": "c"},
    "extra key": lambda task: {"task_id": task, "choice": "first", "client_id": "c", "\x00": 1},
}


def test_a_nul_character_is_refused_the_same_way_on_both_databases(db_url, tmp_path):
    with running_team(tmp_path, db_url, pairs(3), calibration_size=2) as team:
        ann1 = team.client("ann1")
        task = ann1.get("/api/tasks/next").json()["task_id"]
        wire = Wire(team.base_url, {"Authorization": f"Bearer {team.tokens['ann1']}"})
        for field, make in NUL_LABELS.items():
            r = wire.send("POST", "/api/labels", json.dumps(make(task)).encode(), JSON)
            check(wire, r)
            assert r.status == 422, (field, r)
        assert count_labels(team.db) == 0
        admin = Wire(team.base_url, {"Authorization": f"Bearer {team.tokens['admin']}"})
        r = admin.send("POST", "/api/admin/override", b'{"reason": "by hand\\u0000"}', JSON)
        check(admin, r)
        assert r.status == 422, r
        # The same label without the NUL is stored: the refusal was about the character.
        ok = ann1.post("/api/labels", json={"task_id": task, "choice": "first", "client_id": "c"})
        assert ok.status_code == 201, ok.text


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


def test_a_replayed_label_with_non_ascii_text_is_still_a_replay(db_url, tmp_path):
    with running_team(tmp_path, db_url, pairs(2)) as team:
        ann1 = team.client("ann1")
        task = ann1.get("/api/tasks/next").json()["task_id"]
        body = {
            "task_id": task,
            "choice": "second",
            "client_id": "c-\u00e9\u4e2d\U0001f600",
            "rationale": "\u2028 \ufeff caf\u00e9 \U0001f600 <b>&amp;</b>",
        }
        assert ann1.post("/api/labels", json=body).status_code == 201
        assert ann1.post("/api/labels", json=body).status_code == 200
        assert count_labels(team.db) == 1


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
                r = wire.send(method, path, form, FORM, headers=headers)
                check(wire, r, json_error=path.startswith("/api"))


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


# --- the fuzz --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A token written into the body as it is, valid JSON or not."""

    text: str


@dataclass(frozen=True)
class Obj:
    """A JSON object as its pairs: keys may repeat."""

    pairs: tuple


TASK, CLIENT = Raw('"$TASK"'), Raw('"$CLIENT"')
SPECIAL_CHARS = ["\x00", "\ud800", "\udfff", "\ud83d", "\ud83d\ude00", "\u2028", "\ufeff", '"']
RAW_TOKENS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1E400",
    "1" + "0" * 400,
    "-" + "9" * 5000,
    '"\\ud800"',
    '"x\\udc00"',
    '"\\u0000"',
    '"\\u0000\\ud83d"',
    "nan",
    "undefined",
    "'single'",
    "01",
    "+1",
    ".5",
    "0x10",
    "tru",
    '"' + "x" * 60_000 + '"',
    "[" * 3000 + "]" * 3000,
    '{"a":' * 2000 + "1" + "}" * 2000,
]
# Pieces, not characters: "\ud83d\ude00" is a surrogate pair, which JSON joins into one emoji.
texts = st.one_of(
    st.text(max_size=30),
    st.lists(st.one_of(st.characters(), st.sampled_from(SPECIAL_CHARS)), max_size=30).map("".join),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),  # NaN and the infinities included: json.dumps writes NaN / Infinity
    texts,
    st.sampled_from(RAW_TOKENS).map(Raw),
)
values = st.recursive(
    scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3), st.lists(st.tuples(texts, kids), max_size=3).map(Obj)
    ),
    max_leaves=8,
)


def dump(value) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Obj):
        return "{" + ",".join(json.dumps(k) + ":" + dump(v) for k, v in value.pairs) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)  # ensure_ascii: NUL and lone surrogates become \u escapes


# A well-formed value for each field name an endpoint declares (others get "x"), as JSON
# and in the pages' forms.
GOOD_VALUES = {
    "task_id": TASK,
    "client_id": CLIENT,
    "choice": "first",
    "criteria": Obj((("tone", "tie"),)),
    "rationale": "because",
    "reason": "calibrated by hand",
}
GOOD_FORM = {"csrf": "$CSRF", "reason": "calibrated by hand", "token": "$TOKEN", "name": "ann2"}
FORM_FIELDS = tuple(GOOD_FORM)


@st.composite
def mutated(draw, fields: tuple[str, ...], good: dict, kids) -> list[tuple[str, object]]:
    """The endpoint's fields, up to two of them replaced, dropped or repeated, and now and
    then one more: mostly well-formed, since a body with one odd field gets further into
    the app than one with five."""
    k = min(len(fields), draw(st.sampled_from([0, 1, 1, 1, 2])))
    changed = draw(st.sets(st.sampled_from(fields), min_size=k, max_size=k)) if k else set()
    out = []
    for name in fields:
        value = good.get(name, "x")
        change = (
            draw(st.sampled_from(["text", "value", "drop", "twice"])) if name in changed else ""
        )
        if change == "text":
            out.append((name, draw(texts)))
        elif change == "value":
            out.append((name, draw(kids)))
        elif change == "twice":
            out += [(name, value), (name, draw(kids))]
        elif change != "drop":
            out.append((name, value))
    if draw(st.sampled_from([False, False, False, True])):
        out.append(draw(st.tuples(texts, kids)))
    return out


def json_bodies(fields: tuple[str, ...]):
    shaped = mutated(fields, GOOD_VALUES, values).map(
        lambda ps: dump(Obj(tuple(ps))).encode("utf-8", "surrogatepass")
    )
    raw = st.one_of(
        values.map(lambda v: dump(v).encode("utf-8", "surrogatepass")),
        st.binary(max_size=40),
        st.sampled_from([b"", b"\xff\xfe{}", b'{"a": "\xc3\x28"}', b"\xef\xbb\xbf{}", b"{}"]),
    )
    # Three in four shaped: sampled_from draws uniformly, where one_of leans to the simplest.
    return st.sampled_from([shaped, shaped, shaped, raw]).flatmap(lambda strategy: strategy)


CONTENT_TYPES = ["application/json"] * 8 + [
    None,
    "",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "application/json; charset=utf-16",
    "application/merge-patch+json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
]
FORM = "application/x-www-form-urlencoded"
FORM_TYPES = [FORM] * 6 + [None, "text/plain", "application/json", "multipart/form-data"]


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate: bytes that are not UTF-8


def well_formed_form(raw: bytes) -> bool:
    try:
        fields = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        return False
    return not any("\x00" in k + v for k, v in fields)


def form_bodies(fields: tuple[str, ...]):
    shaped = mutated(fields, GOOD_FORM, texts).map(
        lambda ps: urlencode([(_utf8(k), _utf8(v)) for k, v in ps])
    )
    typed = st.text(st.sampled_from("=&%0fFx+;\x00é"), max_size=20)
    # Bytes as str: send_form writes them back with surrogateescape, byte for byte.
    binary = st.binary(max_size=30).map(lambda b: b.decode("utf-8", "surrogateescape"))
    known = st.sampled_from(["reason=%00&csrf=$CSRF", "token=%ff", "csrf=$CSRF&reason=\udcff"])
    return st.one_of(shaped, shaped, typed, binary, known)


def api_endpoints(base_url: str) -> list[tuple[str, str, tuple[str, ...] | None]]:
    """(method, path, body fields or None) of every API operation, from the OpenAPI document."""
    wire = Wire(base_url)
    spec = wire.send("GET", "/api/openapi.json").json()
    wire.close()
    found = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            fields = None
            if body is not None:
                ref = body["schema"].get("$ref", "")
                schema = spec["components"]["schemas"].get(ref.rpartition("/")[2], {})
                fields = tuple(schema.get("properties", {}))
            found.append((method.upper(), path, fields))
    return found


class Server:
    """One running team, as the fuzz talks to it: an annotator's and the admin's
    connections, the admin's page cookie and CSRF token."""

    def __init__(self, team):
        self.team = team
        self.ann1 = Wire(team.base_url, {"Authorization": f"Bearer {team.tokens['ann1']}"})
        self.admin = Wire(team.base_url, {"Authorization": f"Bearer {team.tokens['admin']}"})
        token = team.tokens["admin"]
        self.page = Wire(team.base_url, {"Cookie": f"rlhfkit_token={token}"})
        self.csrf = security.csrf_token(store_secret(team.db), security.hash_token(token))
        self.seen: Counter[tuple[str, int]] = Counter()
        """(path, status) answered: the fuzz must reach the database, not only be refused."""

    def task(self) -> str:
        r = self.ann1.send("GET", "/api/tasks/next")
        return r.json()["task_id"] if r.status == 200 else "f" * 32

    def send_json(self, method, path, body: bytes, content_type) -> Answer:
        body = body.replace(b"$TASK", self.task().encode())
        body = body.replace(b"$CLIENT", uuid.uuid4().hex.encode())
        wire = self.admin if path.startswith("/api/admin") else self.ann1
        r = wire.send(method, path, body, content_type)
        check(wire, r)
        self.seen[path, r.status] += 1
        return r

    def send_form(self, path: str, body: str, content_type: str | None) -> Answer:
        for name, value in (("CSRF", self.csrf), ("TOKEN", self.team.tokens["admin"])):
            body = body.replace(f"${name}", value).replace(f"%24{name}", value)
        raw = body.encode("utf-8", "surrogateescape")
        r = self.page.send("POST", path, raw, content_type)
        # The pages answer a wrong token or an empty reason with a page; a form that is not
        # UTF-8 or holds a NUL is refused before any page, in JSON. (A body sent as JSON is
        # held to the JSON rule instead: the named cases above test that.)
        if content_type == JSON:
            check(self.page, r, json_error=r.status == 422)
        elif not well_formed_form(raw):
            check(self.page, r)
            assert r.status == 422, (body, r)
        else:
            check(self.page, r, json_error=False)
            assert r.status in (200, 303, 401, 403, 404, 422), (body, r)
        self.seen[path, r.status] += 1
        return r


FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz_api(servers: list[Server], method: str, path: str, fields: tuple[str, ...]) -> None:
    @FUZZ
    @given(body=json_bodies(fields), content_type=st.sampled_from(CONTENT_TYPES))
    def run(body, content_type):
        codes = [s.send_json(method, path, body, content_type).status for s in servers]
        assert codes[0] == codes[1], (method, path, body[:300], content_type, codes)

    run()


def fuzz_form(servers: list[Server], template: str) -> None:
    # A path parameter (the dashboard's /admin/annotators/{action}) is fuzzed too.
    names = re.findall(r"{(\w+)}", template)
    param = st.one_of(st.sampled_from(["revoke", "rotate"]), texts.map(lambda t: quote(_utf8(t))))

    @FUZZ
    @given(
        body=form_bodies(FORM_FIELDS),
        content_type=st.sampled_from(FORM_TYPES),
        values=st.tuples(*[param] * len(names)),
    )
    def run(body, content_type, values):
        path = template.format(**dict(zip(names, values, strict=True)))
        codes = [s.send_form(path, body, content_type).status for s in servers]
        assert codes[0] == codes[1], (path, body[:300], codes)

    run()


def form_posts() -> list[str]:
    """The pages' form posts: not in the OpenAPI document, so read from their router."""
    from rlhfkit.annotate.routes import pages

    return [route.path for route in pages.router.routes if "POST" in route.methods]


def test_fuzz_every_body_endpoint_on_both_databases(pg_server, tmp_path):
    """Each example goes to a server on SQLite and one on PostgreSQL, in the same state: both
    must answer below 500, with the same status."""
    dbs = (f"sqlite:///{tmp_path / 'fuzz.sqlite'}", new_pg_database(pg_server))
    items = pairs(60)
    with (
        running_team(tmp_path / "s", dbs[0], items, calibration_size=2) as sqlite_team,
        running_team(tmp_path / "p", dbs[1], items, calibration_size=2) as pg_team,
    ):
        servers = [Server(sqlite_team), Server(pg_team)]
        for s in servers:  # open the main queue, so that labels keep finding tasks
            r = s.admin.send("POST", "/api/admin/override", b'{"reason": "fuzz"}', JSON)
            assert r.status == 200, r
        endpoints = [e for e in api_endpoints(sqlite_team.base_url) if e[2] is not None]
        assert {path for _, path, _ in endpoints} >= {"/api/labels", "/api/admin/override"}
        for method, path, fields in endpoints:
            # A path parameter gets its own name as its value: the body is what is fuzzed.
            fuzz_api(servers, method, path.replace("{", "").replace("}", ""), fields)
        for path in form_posts():
            fuzz_form(servers, path)
        for s in servers:
            assert s.task()  # both still serve tasks
            assert s.seen["/api/labels", 201] and s.seen["/api/labels", 422], s.seen
            assert s.seen["/api/admin/override", 200] and s.seen["/admin/override", 303], s.seen


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
