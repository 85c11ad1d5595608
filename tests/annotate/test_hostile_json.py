"""Hostile JSON bodies through a real server, on SQLite and on PostgreSQL.

Whatever a client sends, the answer is a 4xx with a JSON error, never a 500, and the same on
both databases; every response carries the security headers; and the keep-alive connection
stays usable, or the response says `Connection: close`. Named cases first, one per class;
then a fuzz of every endpoint that takes a body: the API's (read from its OpenAPI document,
so a new endpoint is fuzzed without a change here) and the pages' form posts. Pages, headers,
URLs and imports: test_hostile_pages.py.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhfkit.annotate import security
from tests.annotate.conftest import count_labels, new_pg_database, pairs, running_team
from tests.annotate.wire import (
    FORM,
    JSON,
    Answer,
    Lines,
    Wire,
    api_endpoints,
    check,
    form_posts,
    store_secret,
)

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
    "application/json\xa0",  # JSON to FastAPI (str.strip() drops a no-break space)
    "Application/Json ;charset=utf-8",
    # Said twice: the input check and the app must not each read another copy.
    (("Content-Type", JSON), ("Content-Type", "text/plain")),
    (("Content-Type", "text/plain"), ("Content-Type", JSON)),
    (("content-type", JSON), ("CONTENT-TYPE", FORM)),
]
FORM_TYPES = [FORM] * 6 + [
    None,
    "text/plain",
    "application/json",
    "multipart/form-data",
    (("Content-Type", FORM), ("Content-Type", JSON)),
    (("Content-Type", JSON), ("content-type", FORM)),
]


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

    def send_json(self, method, path, body: bytes, content_type: str | Lines | None) -> Answer:
        body = body.replace(b"$TASK", self.task().encode())
        body = body.replace(b"$CLIENT", uuid.uuid4().hex.encode())
        wire = self.admin if path.startswith("/api/admin") else self.ann1
        r = wire.send(method, path, body, content_type)
        check(wire, r)
        self.seen[path, r.status] += 1
        return r

    def send_form(self, path: str, body: str, content_type: str | Lines | None) -> Answer:
        for name, value in (("CSRF", self.csrf), ("TOKEN", self.team.tokens["admin"])):
            body = body.replace(f"${name}", value).replace(f"%24{name}", value)
        raw = body.encode("utf-8", "surrogateescape")
        r = self.page.send("POST", path, raw, content_type)
        # The pages answer a wrong token or an empty reason with a page; a form that is not
        # UTF-8 or holds a NUL, or comes with two Content-Types, is refused before any page,
        # in JSON. (A body sent as JSON is held to the JSON rule instead: the named cases
        # above test that.)
        if content_type == JSON:
            check(self.page, r, json_error=r.status == 422)
        elif isinstance(content_type, tuple) or not well_formed_form(raw):
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


@pytest.mark.slow
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
