"""Fixtures for the annotation app: a project with small annotation settings, a store on
SQLite or on a real PostgreSQL server (a throwaway cluster this harness starts), and a real
uvicorn server on loopback.

PostgreSQL: Debian's `postgresql` package (the Makefile installs it where apt-get can). The
cluster runs as the `postgres` user, since postgres refuses to run as root, in a temporary
folder on a free loopback port, and is stopped when the session ends. Every test gets its own
database. The PostgreSQL variants skip, saying why, only when the binaries are missing.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from rlhfkit.annotate import Policy, add_annotator, import_items, open_store
from rlhfkit.annotate import models as m
from rlhfkit.annotate.annotators import Authenticator


def write_project(root: Path, tie: bool = False, **annotation) -> Path:
    """The example project with its [annotation] table replaced by `annotation` (defaults:
    overlap 2, no calibration, no anchors, no recalibration) and ties allowed if `tie`."""
    from rlhfkit.templates import init_project

    init_project(root)
    settings = {
        "overlap": 2,
        "calibration_size": 0,
        "agreement_threshold": 0.65,
        "anchor_rate": 0.0,
        "anchor_accuracy_threshold": 0.7,
        "recalibrate_every": 0,
    } | annotation
    spec = root / "rlhfkit.toml"
    text = spec.read_text()
    table = "[annotation]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())
    text = re.sub(r"\[annotation\]\n(?:[^\[].*\n|\n)*", table + "\n", text)
    if not tie:  # the example allows ties; most tests here want a forced choice
        text = text.replace('tie_policy = "allow"', 'tie_policy = "force_choice"')
    spec.write_text(text)
    return root


def pairs(n: int, prefix: str = "item", start: int = 0) -> list[dict]:
    return [
        {
            "id": f"{prefix}{i}",
            "prompt": f"Question {i}?",
            "response_a": f"Answer A to {i}.",
            "response_b": f"Answer B to {i}.",
        }
        for i in range(start, start + n)
    ]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# --- PostgreSQL ------------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(folder, "initdb").exists() and Path(folder, "pg_ctl").exists():
            return Path(folder)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found and shutil.which("pg_ctl") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL cluster for this test session: yields the server's base URL."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; `make test` does)")
    user = {}
    if os.geteuid() == 0:  # postgres refuses to run as root: run the cluster as `postgres`
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        user = {"user": pw.pw_uid, "group": pw.pw_gid}
    root = Path(tempfile.mkdtemp(prefix="rlhfkit-pg-"))
    if user:
        os.chown(root, user["user"], user["group"])
    data, port = root / "data", free_port()

    def run(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, **user)

    # --no-sync: a throwaway cluster need not survive a power cut while it is being created.
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
    run(*initdb, "-E", "UTF8", "--no-sync")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-l",
        str(root / "log"),
        "-w",
        "start",
    )
    try:
        import psycopg

        server = f"postgresql://postgres@127.0.0.1:{port}"
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE rlhfkit")
        yield f"{server}/rlhfkit"
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def new_pg_database(server: str) -> str:
    """An empty store location on the test server: a fresh schema, first on the search path
    (a schema costs nothing; a database per test copies a template's files each time)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return f"{server}?options=-csearch_path%3D{name}"


# the PostgreSQL variants are slow: the first one starts the server
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def db_url(request, tmp_path) -> str:
    """A fresh, empty store location on each database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'annotations.sqlite'}"
    return new_pg_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def team(db_url):
    """A store on each database with three annotators: (store, {name: annotator id})."""
    store = open_store(db_url, create=True)
    auth = Authenticator(store)
    ids = {n: auth(add_annotator(store, n)).id for n in ("ann1", "ann2", "ann3")}
    yield store, ids
    store.close()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'annotations.sqlite'}"


# --- a running app ------------------------------------------------------------------------------


class Team:
    """A project, a store with items, tokens, and a live server with a client per person."""

    def __init__(self, root: Path, db: str, base_url: str, tokens: dict[str, str]):
        self.root, self.db, self.base_url, self.tokens = root, db, base_url, tokens
        self._clients: list[httpx.Client] = []

    def client(self, name: str | None = None, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[name]}"} if name else {}
        c = httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)
        self._clients.append(c)
        return c

    def close(self) -> None:
        for c in self._clients:
            c.close()


@contextlib.contextmanager
def running_team(
    root: Path,
    db: str,
    items: list[dict],
    annotators: tuple[str, ...] = ("ann1", "ann2", "ann3"),
    anchors: list[dict] | None = None,
    task_timeout_s: float = 1800.0,
    **annotation,
):
    from rlhfkit.annotate.server import serve_in_background
    from rlhfkit.project import load_project

    write_project(root / "project", **annotation)
    policy = Policy.from_project(load_project(root / "project"))
    store = open_store(db, create=True)
    try:
        import_items(
            store,
            policy,
            items=write_jsonl(root / "items.jsonl", items) if items else None,
            anchors=write_jsonl(root / "anchors.jsonl", anchors) if anchors else None,
        )
        tokens = {name: add_annotator(store, name) for name in annotators}
        tokens["admin"] = add_annotator(store, "admin", admin=True)
    finally:
        store.close()
    with serve_in_background(db, root / "project", task_timeout_s=task_timeout_s) as url:
        team = Team(root / "project", db, url, tokens)
        try:
            yield team
        finally:
            team.close()


def label_all(
    client: httpx.Client, choice: str = "first", limit: int = 1000, shared: bool = False
) -> list[dict]:
    """Label tasks until there are none; returns the tasks seen. `shared`: another client
    of the same annotator runs at once (two tabs), so their common task may be labeled by
    the other one first (409)."""
    seen = []
    for _ in range(limit):
        r = client.get("/api/tasks/next")
        if r.status_code == 204:
            break
        task = r.json()
        seen.append(task)
        done = client.post(
            "/api/labels",
            json={"task_id": task["task_id"], "choice": choice, "client_id": uuid.uuid4().hex},
        )
        assert done.status_code == 201 or (shared and done.status_code == 409), done.text
    return seen


def count_labels(db: str) -> int:
    store = open_store(db)
    try:
        with store.read() as conn:
            return conn.execute(select(func.count()).select_from(m.Label)).scalar_one()
    finally:
        store.close()
