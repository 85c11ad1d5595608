"""Load on the annotation server: 32 concurrent clients on loopback, each repeating
GET /api/tasks/next + POST /api/labels (one cycle) for a bounded time, against a real
`rlhfkit annotate serve` process. Optionally the server is killed with SIGKILL halfway and
restarted; clients replay what was in flight, and the store must hold every acknowledged
label exactly once.

    .venv/bin/python bench/annotate_load.py                       # SQLite, 10 s
    .venv/bin/python bench/annotate_load.py --kill                # with a kill -9 at 5 s
    .venv/bin/python bench/annotate_load.py --db postgresql://... # a PostgreSQL server

The clients are a small asyncio HTTP/1.1 keep-alive client (not httpx, whose per-request
cost on a 2-core machine would measure the client, not the server). Latencies are per
request, from writing the request to reading the whole response. Target (PRODUCT.md, 2
cores, SQLite): >= 250 cycles/s, p99 < 100 ms, stored == acknowledged.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np


def setup(folder: Path, items: int, clients: int, db: str | None) -> tuple[Path, str, list[str]]:
    """A project (overlap 3, anchors at 10%, no calibration round), a store with `items`
    pairs and 200 anchors, and one token per client."""
    from rlhfkit.annotate import Policy, add_annotator, import_items, open_store
    from rlhfkit.project import load_project
    from rlhfkit.templates import init_project

    project = folder / "project"
    init_project(project)
    spec = project / "rlhfkit.toml"
    text = re.sub(r"calibration_size = \d+", "calibration_size = 0", spec.read_text())
    spec.write_text(text)
    rows = [
        {"id": f"i{i}", "prompt": f"Email {i}: my order is late.", "response_a": f"Reply A {i}",
         "response_b": f"Reply B {i}"}
        for i in range(items)
    ]  # fmt: skip
    anchors = [dict(r, id=f"g{i}", label="A") for i, r in enumerate(rows[:200])]
    for path, data in (("items.jsonl", rows), ("anchors.jsonl", anchors)):
        (folder / path).write_text("".join(json.dumps(r) + "\n" for r in data))
    db = db or f"sqlite:///{folder / 'annotations.sqlite'}"
    store = open_store(db, create=True)
    policy = Policy.from_project(load_project(project))
    import_items(store, policy, folder / "items.jsonl", folder / "anchors.jsonl")
    tokens = [add_annotator(store, f"load{i}-{uuid.uuid4().hex[:6]}") for i in range(clients)]
    store.close()
    return project, db, tokens


def start_server(project: Path, db: str, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rlhfkit.cli", "annotate", "serve", "--port", str(port),
           "--project", str(project), "--db", db]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(proc.stderr.read().decode()) from None
            time.sleep(0.05)
    raise SystemExit("the server did not start")


class Client:
    """One keep-alive HTTP/1.1 connection; enough of the protocol for this server."""

    def __init__(self, port: int, token: str):
        self.port, self.token = port, token
        self.reader = self.writer = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        payload = json.dumps(body).encode() if body is not None else b""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.token}"
            f"\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        self.writer.write(head.encode() + payload)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed")
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        data = await self.reader.readexactly(length) if length else b""
        return status, data


async def labeler(client: Client, stats: dict, stop_at: float, pause: asyncio.Event) -> None:
    in_flight = None
    while time.monotonic() < stop_at:
        await pause.wait()
        try:
            if client.writer is None:
                await client.connect()
            if in_flight is not None:  # replay after a crash: stored at most once
                status, _ = await client.request("POST", "/api/labels", in_flight)
                if status in (200, 201):
                    stats["acknowledged"].add(in_flight["client_id"])
                    stats["replayed"] += 1
                in_flight = None
            t0 = time.perf_counter()
            status, data = await client.request("GET", "/api/tasks/next")
            t1 = time.perf_counter()
            if status == 204:
                stats["exhausted"] = True
                return
            task = json.loads(data)
            in_flight = {
                "task_id": task["task_id"],
                "choice": "first",
                "client_id": uuid.uuid4().hex,
            }
            status, _ = await client.request("POST", "/api/labels", in_flight)
            t2 = time.perf_counter()
            if status != 201:
                stats["errors"] += 1
                in_flight = None
                continue
            stats["acknowledged"].add(in_flight["client_id"])
            in_flight = None
            if not pause.is_set():
                continue
            stats["latency"].extend((t1 - t0, t2 - t1))
            stats["worst"].append(
                (max(t1 - t0, t2 - t1), t0, "get" if t1 - t0 > t2 - t1 else "post")
            )
            stats["cycles"] += 1
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
            client.writer = None  # the server died: wait for the restart, then replay
            await asyncio.sleep(0.05)


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) of a process, or of this one."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(
    port: int, tokens: list[str], seconds: float, kill, warmup: float, server_pid
) -> dict:
    stats = {"acknowledged": set(), "latency": [], "cycles": 0, "errors": 0, "replayed": 0,
             "exhausted": False, "worst": []}  # fmt: skip
    pause = asyncio.Event()
    pause.set()
    clients = [Client(port, t) for t in tokens]
    start = time.monotonic()
    tasks = [
        asyncio.create_task(labeler(c, stats, start + warmup + seconds, pause)) for c in clients
    ]
    await asyncio.sleep(warmup)
    stats.update(cycles=0, latency=[], worst=[])  # measure from here
    measure_start = time.monotonic()
    stats["t0"] = time.perf_counter()
    cpu_start = (cpu_seconds(server_pid()), cpu_seconds(None))
    if kill is not None:
        await asyncio.sleep(seconds / 2)
        await kill(pause)
    await asyncio.gather(*tasks)
    stats["elapsed"] = time.monotonic() - measure_start
    if kill is None:
        stats["cpu"] = (cpu_seconds(server_pid()) - cpu_start[0], cpu_seconds(None) - cpu_start[1])
    return stats


def count_stored(db: str, client_ids: set[str]) -> tuple[int, int]:
    from sqlalchemy import func, select

    from rlhfkit.annotate import models as m
    from rlhfkit.annotate import open_store

    store = open_store(db)
    with store.read() as conn:
        ids = conn.execute(select(m.Label.client_id)).scalars().all()
        over = conn.execute(
            select(func.count()).select_from(m.Item).where(m.Item.kind == m.MAIN, m.Item.labels > 3)
        ).scalar_one()
    store.close()
    stored = [i for i in ids if i in client_ids]
    return len(set(stored)), len(ids) - len(set(ids)) + over


def _per_cycle(stats: dict, which: int) -> float | None:
    if "cpu" not in stats or not stats["cycles"]:
        return None
    return round(1000 * stats["cpu"][which] / stats["cycles"], 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--db", default=None, help="Store URL (default: a fresh SQLite file).")
    ap.add_argument("--kill", action="store_true", help="SIGKILL the server halfway, restart.")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="rlhfkit-load-") as tmp:
        project, db, tokens = setup(Path(tmp), args.items, args.clients, args.db)
        port = socket.socket()
        port.bind(("127.0.0.1", 0))
        port_number = port.getsockname()[1]
        port.close()
        server = {"proc": start_server(project, db, port_number)}
        restart_s = None

        async def kill(pause: asyncio.Event) -> None:
            nonlocal restart_s
            pause.clear()
            server["proc"].send_signal(signal.SIGKILL)
            server["proc"].wait()
            t0 = time.monotonic()
            server["proc"] = await asyncio.to_thread(start_server, project, db, port_number)
            restart_s = time.monotonic() - t0
            pause.set()

        try:
            stats = asyncio.run(
                drive(
                    port_number,
                    tokens,
                    args.seconds,
                    kill if args.kill else None,
                    args.warmup,
                    lambda: server["proc"].pid,
                )
            )
        finally:
            server["proc"].send_signal(signal.SIGINT)
            server["proc"].wait(timeout=30)
        stored, duplicates = count_stored(db, stats["acknowledged"])
    lat = np.array(stats["latency"]) * 1000
    result = {
        "clients": args.clients,
        "seconds": round(stats["elapsed"], 2),
        "db": "sqlite" if db.startswith("sqlite") else "postgresql",
        "cpus": os.cpu_count(),
        "cycles_per_s": round(stats["cycles"] / stats["elapsed"], 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
        "max_ms": round(float(lat.max()), 2) if len(lat) else None,
        "server_cpu_ms_per_cycle": _per_cycle(stats, 0),
        "client_cpu_ms_per_cycle": _per_cycle(stats, 1),
        "load_average": round(os.getloadavg()[0], 2),
        "acknowledged": len(stats["acknowledged"]),
        "stored": stored,
        "duplicates": duplicates,
        "errors": stats["errors"],
        "killed": args.kill,
        "restart_s": round(restart_s, 2) if restart_s else None,
        "replayed_after_kill": stats["replayed"],
        "queue_exhausted": stats["exhausted"],
    }
    if os.environ.get("BENCH_WORST"):
        for lat, t, kind in sorted(stats["worst"], reverse=True)[:8]:
            print(f"worst {kind} {lat * 1000:.0f} ms at {t - stats['t0']:.2f} s", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
