"""What the hostile-input tests share: a raw keep-alive connection (`Wire`) that sends exactly
the bytes and headers given, the check every answer must pass, and the app's endpoints as a
fuzz finds them (the API's from its OpenAPI document, the pages' form posts from their router).
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from rlhfkit.annotate import open_store

SECURITY_HEADERS = (
    "content-security-policy",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "cache-control",
)
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


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


Lines = tuple[tuple[str, str], ...]
"""Header lines as sent: a name may repeat, in any case."""


class Wire:
    """One keep-alive connection that sends exactly the body and headers given (http.client
    adds only Host, Accept-Encoding and Content-Length, each unless given) and, unlike httpx's
    pool, notices a connection that the server dropped: the next request on it fails."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None):
        url = urlsplit(base_url)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        self.headers = headers or {}

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | Lines | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """`content_type`: the Content-Type, or header lines to send as they are (a
        Content-Type twice, a Content-Length of their own)."""
        sent = self.headers | (headers or {})
        if isinstance(content_type, str):
            sent["Content-Type"] = content_type
        lines = [*sent.items(), *(content_type if isinstance(content_type, tuple) else ())]
        # http.client.request, less its one header per name
        names = {name.lower() for name, _ in lines}
        self.conn.putrequest(
            method,
            path,
            skip_host="host" in names,
            skip_accept_encoding="accept-encoding" in names,
        )
        for name, value in lines:
            self.conn.putheader(name, value)
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        if body is not None and "content-length" not in names:
            self.conn.putheader("Content-Length", str(len(body)))
        self.conn.endheaders(body)
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


def form_posts() -> list[str]:
    """The pages' form posts: not in the OpenAPI document, so read from their router."""
    from rlhfkit.annotate.routes import pages

    return [route.path for route in pages.router.routes if "POST" in route.methods]
