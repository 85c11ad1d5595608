"""Running the app: `serve` (blocking, for `rlhfkit annotate serve`) and
`serve_in_background` (a real uvicorn server in a thread, for the demo's simulated panel and
for tests).

    from rlhfkit.annotate.server import serve_in_background

    with serve_in_background(db_url, "path/to/project") as base_url:
        requests to f"{base_url}/api/tasks/next" with "Authorization: Bearer TOKEN" ...

Both bind to loopback unless told otherwise; binding anywhere else prints a warning, since
the app speaks plain HTTP and should sit behind a TLS-terminating proxy on a network.
"""

from __future__ import annotations

import contextlib
import gc
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlhfkit.annotate.app import create_app
from rlhfkit.annotate.security import is_loopback
from rlhfkit.annotate.settings import ServerSettings
from rlhfkit.annotate.store import normalise_url


def create_app_from_env():
    """App factory for ``uvicorn --factory rlhfkit.annotate.server:create_app_from_env``
    (settings from RLHFKIT_DB_URL / RLHFKIT_PROJECT; see `settings`)."""
    return create_app(ServerSettings.from_env())


def exposure_warning(host: str) -> str | None:
    if is_loopback(host):
        return None
    return (
        f"warning: listening on {host}, reachable from other machines. The app speaks plain "
        "HTTP: put it behind a TLS-terminating reverse proxy, and share tokens privately."
    )


def _config(settings: ServerSettings, **overrides):
    import uvicorn


    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        # X-Forwarded-* headers are not trusted: nothing here depends on the client's address.
        proxy_headers=False,
        timeout_keep_alive=30,
        **overrides,
    )


def serve(settings: ServerSettings) -> None:
    """Serve until interrupted (Ctrl+C stops it cleanly)."""
    import uvicorn

    warning = exposure_warning(settings.host)
    if warning:
        print(warning, file=sys.stderr)
    server = uvicorn.Server(_config(settings))
    # The ~100k objects of the loaded libraries never become garbage, but every full
    # collection walks them: 100-600 ms pauses on a busy 2-core machine, every request in
    # flight waiting (seen in bench/annotate_load.py). Frozen, the collector skips them.
    gc.collect()
    gc.freeze()
    # uvicorn shuts down gracefully, then re-raises the signal it caught: Ctrl+C is how a
    # server is meant to stop, not an interruption to report.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()


@contextlib.contextmanager
def serve_in_background(
    db_url: str,
    project: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    task_timeout_s: float = 1800.0,
    max_body_bytes: int = 64 * 1024,
    seed: int | None = None,
) -> Iterator[str]:
    """Start the app on a thread and yield its base URL (``http://127.0.0.1:PORT``); port 0
    picks a free port. The server stops when the block ends."""
    import uvicorn

    settings = ServerSettings(
        db_url=normalise_url(db_url),
        project=Path(project) if isinstance(project, str | Path) else project,
        host=host,
        port=port,
        task_timeout_s=task_timeout_s,
        max_body_bytes=max_body_bytes,
        seed=seed,
    )
    warning = exposure_warning(host)
    if warning:
        print(warning, file=sys.stderr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says
    # TCP, and without it every keep-alive response waits ~40 ms on Nagle + delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    server = uvicorn.Server(_config(settings))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="rlhfkit-annotate", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the annotation server did not start")
            time.sleep(0.01)
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
