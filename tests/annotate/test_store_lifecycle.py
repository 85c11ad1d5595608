"""What the store and the server leave behind: no open file of the store after the server
stops (the token lookups' SQLite connections included), and a clear error where the
PostgreSQL driver is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.annotate.conftest import pairs, running_team


def open_files_under(folder: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed while we looked
            continue
        if target.startswith(str(folder.resolve())):
            found.append(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc (Linux)")
def test_a_stopped_server_leaves_no_connection_to_its_store_open(tmp_path):
    db_folder = tmp_path / "db"
    db_folder.mkdir()
    db = f"sqlite:///{db_folder / 'annotations.sqlite'}"
    with running_team(tmp_path, db, pairs(2)) as team:
        for name in ("ann1", "ann2", "admin"):  # token lookups, on several worker threads
            client = team.client(name)
            assert client.get("/api/admin/status" if name == "admin" else "/api/me").is_success
        assert open_files_under(db_folder)
    assert open_files_under(db_folder) == []


@pytest.mark.slow
def test_postgresql_without_its_driver_is_a_clear_error():
    """In a fresh process that cannot import psycopg: SQLite stores work, and a PostgreSQL
    URL says what is missing (importing the store module must not need the driver)."""
    script = (
        "import sys; sys.modules['psycopg'] = None\n"  # import psycopg -> ImportError
        "from rlhfkit.annotate import open_store\n"
        "from rlhfkit.errors import UserError\n"
        "try:\n"
        "    open_store('postgresql://nobody@127.0.0.1:1/none')\n"
        "except UserError as e:\n"
        "    print(e)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "PostgreSQL needs the psycopg package" in run.stdout
