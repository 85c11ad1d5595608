"""Judges: the OpenAI-compatible one against a real HTTP server this test starts (retries,
timeouts, the disk cache, both orders), and the code judges by hand."""

import contextlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rlhfkit.errors import UserError
from rlhfkit.evaluate.judges import (
    CallableJudge,
    EndpointConfig,
    Judgement,
    OpenAIJudge,
    RewardModelJudge,
    RubricJudge,
    parse_judge,
    parse_preference,
    parse_yes_no,
)


class Server:
    """A tiny /v1/chat/completions server. Its judge prefers the response that contains
    'GOOD' (or, in `biased` mode, always answers A); `fail_next` requests get a 500 and
    `slow_next` requests sleep past the client's timeout."""

    def __init__(self):
        self.requests: list[dict] = []
        self.fail_next = 0
        self.slow_next = 0
        self.biased = False
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body,
                                       "auth": self.headers.get("Authorization")})  # fmt: skip
                if outer.slow_next:
                    outer.slow_next -= 1
                    time.sleep(0.6)
                if outer.fail_next:
                    outer.fail_next -= 1
                    return self._send(500, {"error": "overloaded"})
                if outer.status != 200:
                    return self._send(outer.status, {"error": {"message": "bad model"}})
                return self._send(200, outer.answer(body["messages"][-1]["content"]))

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)  # unless the client timed out and left

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, user: str) -> dict:
        if "[Question]" in user:
            content = json.dumps({"rationale": "checked", "answer": "yes" if "GOOD" in user
                                  else "no"})  # fmt: skip
        else:
            a = re.search(r"\[Response A\]\n(.*?)\n\n\[Response B\]", user, re.S).group(1)
            pref = "A" if self.biased or "GOOD" in a else "B"
            content = f'Let me think.\n{{"rationale": "{pref} acts", "preference": "{pref}"}}'
        return {"choices": [{"message": {"role": "assistant", "content": content}}]}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def judge_for(server, tmp_path, **kw):
    cfg = EndpointConfig(server.url, "judge-model", api_key="k", timeout=kw.pop("timeout", 5),
                         backoff=0.01, cache_dir=tmp_path / "cache", **kw)  # fmt: skip
    return OpenAIJudge(cfg, task="Answer support emails.", rubric=[("helpful", "acts")])


def test_openai_judge_asks_both_orders_and_caches(server, tmp_path):
    judge = judge_for(server, tmp_path)
    j = judge.judge("Where is my lamp?", "It ships today. GOOD", "Maybe later.")
    assert j == Judgement("a", "A acts")
    assert len(server.requests) == 2  # (a, b) and (b, a)
    first, second = (r["body"]["messages"][-1]["content"] for r in server.requests)
    assert first.index("GOOD") < first.index("Maybe later")
    assert second.index("Maybe later") < second.index("GOOD")
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer k"
    assert req["body"]["model"] == "judge-model" and req["body"]["temperature"] == 0
    assert "helpful: acts" in req["body"]["messages"][0]["content"]
    swapped = judge.judge("Where is my lamp?", "Maybe later.", "It ships today. GOOD")
    assert swapped.preference == "b"
    assert len(server.requests) == 2  # the same two orders: both answered from the cache

    again = judge_for(server, tmp_path)  # a new judge, the same disk cache
    assert again.judge("Where is my lamp?", "It ships today. GOOD", "Maybe later.") == j
    assert again.stats["cache_hits"] == 2 and again.stats["requests"] == 0
    assert len(server.requests) == 2


def test_position_bias_becomes_a_tie(server, tmp_path):
    server.biased = True  # always 'A', whichever response is shown first
    j = judge_for(server, tmp_path).judge("q", "GOOD one", "other")
    assert j.preference == "tie" and "position bias" in j.rationale


def test_retries_on_500_and_timeouts_then_gives_up(server, tmp_path):
    server.fail_next = 2
    judge = judge_for(server, tmp_path)
    assert judge.ask("Is it good?", "q", "GOOD reply") is True
    assert judge.stats["retries"] == 2 and len(server.requests) == 3

    server.slow_next = 1
    slow = judge_for(server, tmp_path, timeout=0.2)
    assert slow.ask("Is it good?", "q", "a plain reply") is False
    assert slow.stats["retries"] == 1

    server.fail_next = 10
    with pytest.raises(UserError, match="failed 3 times; last: HTTP 500"):
        judge_for(server, tmp_path, retries=2).ask("Is it good?", "q", "another reply")


def test_a_client_error_is_not_retried(server, tmp_path):
    server.status = 404
    judge = judge_for(server, tmp_path)
    with pytest.raises(UserError, match="HTTP 404"):
        judge.judge("q", "a", "b")
    assert len(server.requests) == 1


def test_nothing_listening_is_a_clear_error(tmp_path):
    cfg = EndpointConfig("http://127.0.0.1:9/v1", "m", retries=1, backoff=0.01, timeout=1)
    with pytest.raises(UserError, match="cannot connect"):
        OpenAIJudge(cfg).judge("q", "a", "b")


def test_endpoint_from_env(monkeypatch, tmp_path):
    monkeypatch.delenv("RLHFKIT_JUDGE_MODEL", raising=False)
    with pytest.raises(UserError, match="RLHFKIT_JUDGE_MODEL"):
        EndpointConfig.from_env()
    monkeypatch.setenv("RLHFKIT_JUDGE_MODEL", "m")
    monkeypatch.setenv("RLHFKIT_JUDGE_BASE_URL", "http://localhost:8000/v1")
    monkeypatch.setenv("RLHFKIT_CACHE", str(tmp_path))
    cfg = EndpointConfig.from_env()
    assert (cfg.base_url, cfg.model, cfg.cache_dir) == (
        "http://localhost:8000/v1",
        "m",
        tmp_path / "judge",
    )


def test_parsing_answers():
    assert parse_preference('{"rationale": "x", "preference": "B"}') == ("b", "x")
    assert parse_preference("Reasoning...\nPreference: tie")[0] == "tie"
    assert parse_preference("no idea")[0] is None
    assert parse_yes_no('{"answer": "Yes"}') is True and parse_yes_no("No, it does not.") is False
    assert parse_yes_no("unclear") is None


def test_code_judges():
    rm = RewardModelJudge(lambda ps, rs: [len(r) for r in rs], tie_margin=0.5)
    assert [j.preference for j in rm.judge_many([("p", "long one", "short"), ("p", "ab", "ab")])
            ] == ["a", "tie"]  # fmt: skip
    rubric = RubricJudge(lambda p, r: {"helpful": float("ships" in r), "tone": 0.5})
    j = rubric.judge("p", "It ships.", "Sorry.")
    assert j.preference == "a"
    assert "helpful 1.00" in j.rationale
    from rlhfkit.demo.panel import rubric_judge

    panel = CallableJudge(rubric_judge, name="panel")
    email = [{"role": "user", "content": "My kettle (order #48213) arrived broken."}]
    good = ("I have sent a replacement kettle for order #48213 today.\n\nBest regards,\n"
            "The Northwind Support Team")  # fmt: skip
    assert panel.judge(email, good, "I think maybe it is broken.").preference == "a"
    biased = CallableJudge(lambda p, a, b: ("a", "first"), name="first", both_orders=True)
    assert biased.judge("p", "x", "y").preference == "tie"
    with pytest.raises(UserError, match="answered 'A'"):
        CallableJudge(lambda p, a, b: ("A", ""), name="bad").judge("p", "x", "y")


def test_parse_judge_values():
    assert parse_judge("rm:runs/rm/final").target == "runs/rm/final"
    assert parse_judge("panel").kind == "panel" and parse_judge("openai").kind == "openai"
    assert parse_judge("callable:my.mod:fn").target == "my.mod:fn"
    with pytest.raises(UserError, match="give rm:DIR"):
        parse_judge("gpt4")
