"""Simulated annotators at work: each labels through the annotation app's JSON API, exactly
as the app's pages do (``GET /api/tasks/next`` -> decide -> ``POST /api/labels``).

An annotator is anything with a ``name`` and a ``label(prompt, first, second, *, allow_tie,
allow_both_bad)`` answering 'first', 'second', 'tie' or 'both_bad' (and, optionally,
``criteria(prompt, first, second)``: an answer per rubric criterion). The demo's panel
(`rlhfkit.demo.panel`) is one kind; `judge_panel` makes another from any pairwise judge, the
``[run] labeler`` of a project that tries the loop before people label it.

By default the annotators take turns (reproducible against a seeded server); `concurrent`
gives each its own thread. Standard library only: no HTTP client dependency. Everything here
is a simulation, and the annotators' names say so (``sim-``).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from rlhfkit import strict_json
from rlhfkit.errors import UserError
from rlhfkit.evaluate.judges import Judgement


class SimulatedAnnotator(Protocol):
    name: str

    def label(
        self, prompt: Any, first: str, second: str, *, allow_tie: bool, allow_both_bad: bool
    ) -> str: ...


Judge = Callable[[Any, str, str], Any]
"""(prompt, response_a, response_b) -> 'a' | 'b' | 'tie' | 'both_bad', or that with a
rationale: a (preference, rationale) tuple or a `Judgement`."""


@dataclass
class JudgeAnnotator:
    """A simulated annotator that applies a judge, with the demo panel's failings: a lapse
    (`position_bias`: picks the reply shown first without reading), a taste for length
    (`length_bias`: picks the longer reply instead of the judge's verdict; the demo's panel
    weighs length into a score, a verdict has none, so here it is a probability), slips
    (`noise`: the answer flips; a tie or 'both bad' becomes a random side) and drift (after
    `drift_after` labels the noise rises to `drift_noise` over `drift_span` labels). Where the
    rubric forbids a tie or 'both bad', it picks a side at random. Seeded: same inputs, same
    labels. A judge answers a preference, or (preference, rationale)."""

    name: str
    judge: Judge
    noise: float = 0.05
    seed: int = 0
    position_bias: float = 0.0
    length_bias: float = 0.0
    drift_after: int | None = None
    drift_noise: float = 0.45
    drift_span: int = 20
    judge_name: str | None = None
    """How describe() and each label's rationale name the judge (default: module:function)."""
    labelled: int = 0
    last_rationale: str | None = None
    """Why the last label is what it is (sent with the label, marked simulated)."""
    _rng: random.Random = field(init=False, repr=False)
    _called: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for what in ("noise", "position_bias", "length_bias", "drift_noise"):
            if not 0.0 <= getattr(self, what) <= 1.0:
                raise ValueError(f"{self.name}: {what} must be within [0, 1]")
        self._rng = random.Random(f"{self.name}:{self.seed}")
        qualname = getattr(self.judge, "__qualname__", type(self.judge).__qualname__)
        self._called = self.judge_name or qualname  # how errors name the judge
        if self.judge_name is None:
            self.judge_name = f"{self.judge.__module__}:{qualname}"

    def describe(self) -> dict[str, Any]:
        """Who this annotator is, for the run's panel.json."""
        out: dict[str, Any] = {"name": self.name, "judge": self.judge_name, "noise": self.noise}
        for what in ("position_bias", "length_bias"):
            if getattr(self, what):
                out[what] = getattr(self, what)
        if self.drift_after is not None:
            out |= {"drift_after": self.drift_after, "drift_noise": self.drift_noise}
        return out

    def current_noise(self) -> float:
        if self.drift_after is None or self.labelled <= self.drift_after:
            return self.noise
        ramp = min(1.0, (self.labelled - self.drift_after) / max(self.drift_span, 1))
        return self.noise + ramp * (self.drift_noise - self.noise)

    def label(
        self, prompt: Any, first: str, second: str, *, allow_tie: bool, allow_both_bad: bool
    ) -> str:
        self.labelled += 1
        rng = self._rng  # no draw for a failing this annotator does not have: same labels
        if self.position_bias and rng.random() < self.position_bias:
            self._why("picked the reply shown first without reading (position bias)")
            return "first"
        choice, why = self._verdict(prompt, first, second)
        if self.length_bias and len(first) != len(second) and rng.random() < self.length_bias:
            longer = "first" if len(first) > len(second) else "second"
            why = f"picked the longer reply (length bias); the judge said {choice}"
            choice = longer
        if not {"tie": allow_tie, "both_bad": allow_both_bad}.get(choice, True):
            self._why(f"the judge said {choice}, which the rubric forbids: a side at random")
            return rng.choice(("first", "second"))
        if rng.random() < self.current_noise():
            flipped = {"first": "second", "second": "first"}
            why = f"slipped (noise): the judge said {choice}"
            choice = flipped.get(choice) or rng.choice(("first", "second"))
        self._why(why)
        return choice

    def _verdict(self, prompt: Any, first: str, second: str) -> tuple[str, str]:
        """The judge's answer as a choice ('first', ...) and its rationale."""
        try:
            verdict = self.judge(prompt, first, second)
        except UserError:
            raise
        except Exception as e:  # the user's judge: say which and why, no traceback
            raise UserError(f"labeler {self._called!r} raised {type(e).__name__}: {e}") from None
        why = ""
        if isinstance(verdict, tuple) and len(verdict) == 2:
            verdict, why = verdict
        if isinstance(verdict, Judgement):
            verdict, why = verdict.preference, verdict.rationale
        answers = {"a": "first", "b": "second", "tie": "tie", "both_bad": "both_bad"}
        if verdict not in answers:
            raise UserError(
                f"labeler {self._called!r} answered {verdict!r}; "
                "a judge answers 'a', 'b', 'tie' or 'both_bad'"
            )
        return answers[verdict], str(why)

    def _why(self, why: str) -> None:
        self.last_rationale = f"SIMULATED by {self.name} ({self.judge_name})" + (
            f": {why}" if why else ""
        )


def judge_panel(judge: Judge, k: int, noise: float, seed: int = 0) -> list[JudgeAnnotator]:
    """k simulated annotators sharing one judge, each slipping on its own (`sim-1`, ...)."""
    return [JudgeAnnotator(f"sim-{i + 1}", judge, noise, seed) for i in range(k)]


class PanelError(RuntimeError):
    """The annotation server refused a request (other than 'no work': that is a 204)."""


@dataclass
class PanelRun:
    """What a `run_panel` call did."""

    labels: dict[str, int]
    """Labels each annotator stored (201; a replayed 200 is not counted twice)."""
    last_reason: dict[str, str]
    """Why each annotator's last request found no work: 'done' or 'calibration_gate'."""
    passes: int
    """Turns taken (one task each per turn); when concurrent, passes of 'label until 204'
    until one in which nobody labelled anything."""
    seconds: float


class _Client:
    """One annotator's keep-alive connection to the app (standard library only: the demo's
    runtime has no HTTP client dependency)."""

    def __init__(self, base_url: str, token: str, timeout: float):
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https"):
            raise ValueError(f"{base_url}: expected http://HOST:PORT")
        self._conn_args = (url.hostname, url.port, timeout)
        self._https = url.scheme == "https"
        self._prefix = url.path.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any, dict]:
        """(status, parsed JSON or None, headers); reconnects and retries twice when the
        connection drops (every POST carries a client_id, so a retry never labels twice)."""
        data = None if body is None else strict_json.dumps(body).encode()
        headers = self._headers | ({"Content-Type": "application/json"} if data else {})
        for attempt in range(3):
            try:
                if self._conn is None:
                    host, port, timeout = self._conn_args
                    cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
                    self._conn = cls(host, port, timeout=timeout)
                self._conn.request(method, self._prefix + path, data, headers)
                resp = self._conn.getresponse()
                raw = resp.read()
                parsed = json.loads(raw) if raw else None
                return resp.status, parsed, {k.lower(): v for k, v in resp.getheaders()}
            except (ConnectionError, http.client.HTTPException, TimeoutError, OSError):
                self.close()
                if attempt == 2:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def response_text(value: Any) -> str:
    """A response as the API sends it: text, or chat messages (their contents joined)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(str(m.get("content", "")) for m in value if isinstance(m, dict))
    return str(value)


class _Waiting:
    """Which annotators have no task right now. An annotator told to wait for the
    calibration gate keeps polling, as a person would come back later, while anyone else
    is still labelling (their last calibration label may open the gate); once everyone
    waits, nobody can change anything and all stop."""

    def __init__(self, names: Sequence[str]):
        self._lock = threading.Lock()
        self._idle: set[str] = set()
        self._n = len(names)

    def mark(self, name: str, idle: bool) -> bool:
        """Record `name`'s state; True when every annotator is idle."""
        with self._lock:
            if idle:
                self._idle.add(name)
            else:
                self._idle.discard(name)
            return len(self._idle) == self._n


def _next_task(client: _Client, annotator: SimulatedAnnotator) -> tuple[dict | None, str]:
    """(the next task, "") or (None, the 204's reason) when there is no work right now."""
    status, task, headers = client.request("GET", "/api/tasks/next")
    if status == 204:
        return None, headers.get("x-rlhfkit-reason", "")
    if status != 200:
        raise PanelError(f"{annotator.name}: GET /api/tasks/next answered {status}: {task}")
    return task, ""


def _label(client: _Client, annotator: SimulatedAnnotator, task: dict) -> int:
    """Decide and submit, with an answer per rubric criterion the panel can judge: 1 when a
    new label was stored, 0 for a replay."""
    rubric = task["rubric"]
    choices = task.get("choices") or rubric.get("choices") or []
    prompt, first, second = (
        task["prompt"],
        response_text(task["first"]),
        response_text(task["second"]),
    )
    choice = annotator.label(
        prompt,
        first,
        second,
        allow_tie="tie" in choices,
        allow_both_bad="both_bad" in choices,
    )
    asked = {c["name"] for c in rubric.get("criteria", [])}
    criteria = getattr(annotator, "criteria", None)
    answers = criteria(prompt, first, second) if criteria else {}
    body = {
        "task_id": task["task_id"],
        "choice": choice,
        "criteria": {k: v for k, v in answers.items() if k in asked},
        "client_id": uuid.uuid4().hex,
    }
    rationale = getattr(annotator, "last_rationale", None)  # a JudgeAnnotator's, marked simulated
    if rationale:
        body["rationale"] = rationale[:5000]
    status, answer, _ = client.request("POST", "/api/labels", body)
    if status not in (200, 201):
        raise PanelError(f"{annotator.name}: POST /api/labels answered {status}: {answer}")
    return int(status == 201)


def _label_until_idle(
    client: _Client, annotator: SimulatedAnnotator, waiting: _Waiting
) -> tuple[int, str]:
    """Label the annotator's tasks until the server has none: (labels stored, 204 reason)."""
    stored = 0
    while True:
        task, reason = _next_task(client, annotator)
        if task is not None:
            waiting.mark(annotator.name, False)  # before labelling: holding a task is busy
            stored += _label(client, annotator, task)
            continue
        everyone_idle = waiting.mark(annotator.name, True)
        if reason == "calibration_gate" and not everyone_idle:
            time.sleep(0.05)  # someone is still labelling: their label may open the gate
            continue
        return stored, reason


def run_panel(
    base_url: str,
    tokens: dict[str, str],
    panel: Sequence[SimulatedAnnotator],
    *,
    concurrent: bool = False,
    timeout: float = 30.0,
    progress: Callable[[int], None] | None = None,
) -> PanelRun:
    """Have the simulated annotators label through the annotation app's JSON API until none
    of them gets any more work.

    By default the annotators take turns, one task each per turn, in the panel's order
    (``GET /api/tasks/next`` -> decide -> ``POST /api/labels``), as a team working at the same
    pace would. One request at a time makes the run reproducible: against a server started
    with a seed, the same panel labels the same tasks the same way every time. A 204
    'calibration_gate' means waiting for the others to finish calibrating; the run ends after
    a turn in which every annotator was told 204 ('done', or 'calibration_gate' when the gate
    failed and nobody overrode it).

    `concurrent` gives each annotator a thread that labels until the server has no work for
    it (closer to a real team's load, but which annotator gets which item then depends on
    timing). Passes repeat until one in which nobody labelled anything.

    `tokens` maps annotator names to their login tokens: the panel's names. `progress` is
    told the labels stored so far after each turn (taking turns only).
    """
    panel = list(panel)
    names = {a.name for a in panel}
    if names != set(tokens):
        raise ValueError(
            f"the panel's annotators {sorted(names)} and the tokens' names {sorted(tokens)} "
            "must be the same"
        )
    clients = [(a, _Client(base_url, tokens[a.name], timeout)) for a in panel]
    started = time.time()
    try:
        if concurrent:
            totals, reasons, passes = _label_concurrently(clients)
        else:
            totals, reasons, passes = _take_turns(clients, progress)
    finally:
        for _, client in clients:
            client.close()
    return PanelRun(totals, reasons, passes, time.time() - started)


_Team = list[tuple[SimulatedAnnotator, _Client]]


def _take_turns(
    team: _Team, progress: Callable[[int], None] | None = None
) -> tuple[dict[str, int], dict[str, str], int]:
    """One task each per turn, in order, until a turn in which nobody got one."""
    totals = {a.name: 0 for a, _ in team}
    reasons: dict[str, str] = {}
    turns = 0
    while True:
        turns += 1
        idle = 0
        for annotator, client in team:
            task, reason = _next_task(client, annotator)
            if task is None:
                reasons[annotator.name] = reason
                idle += 1
            else:
                totals[annotator.name] += _label(client, annotator, task)
        if progress is not None:
            progress(sum(totals.values()))
        if idle == len(team):
            return totals, reasons, turns


def _label_concurrently(team: _Team) -> tuple[dict[str, int], dict[str, str], int]:
    """A thread per annotator, each labelling until idle; passes until one labels nothing."""
    totals = {a.name: 0 for a, _ in team}
    reasons: dict[str, str] = {}
    passes = 0
    while True:
        passes += 1
        waiting = _Waiting([a.name for a, _ in team])
        with ThreadPoolExecutor(len(team), thread_name_prefix="sim-annotator") as pool:
            futures = {
                a.name: pool.submit(_label_until_idle, client, a, waiting) for a, client in team
            }
            done = {name: f.result() for name, f in futures.items()}
        for name, (n, reason) in done.items():
            totals[name] += n
            reasons[name] = reason
        if not any(n for n, _ in done.values()):
            return totals, reasons, passes
