"""Where the gateway's worker processes keep their Prometheus numbers (prometheus-client's
multiprocess mode), set up before anything imports prometheus_client.

Every worker of one server writes its counters to files in one directory, and `/metrics`,
whichever worker answers it, sums them: a scrape never sees one worker's numbers at random.

- `PROMETHEUS_MULTIPROC_DIR` set by the operator: used as it is and never emptied (the
  operator owns it, e.g. with gunicorn's `child_exit` hook).
- Otherwise the directory is `GATEWAY_METRICS_DIR` (default: the system temp directory's
  `smart-balancers-metrics`) / `<server pid>-<its start time>`, where the server is the
  uvicorn supervisor for `--workers N` (the workers' parent) or the process itself. All the
  workers of one server agree on it without talking to each other; a restarted worker goes on
  adding to its server's totals; a new server starts from zero. At start, each process removes
  the directories of servers that are no longer running (the start time tells a reused pid
  apart), and a single-process server removes its own at exit.

Only the ASGI entry point (config/asgi.py) calls this: `manage.py`, Celery and the test
suite keep prometheus-client's ordinary in-process mode.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), '' elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def _server_running(name: str) -> bool:
    pid_text, _, started = name.partition("-")
    if not pid_text.isdigit():
        return True  # not one of ours: leave it alone
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not started or _start_time(pid) in ("", started)


def prepare_metrics_dir() -> str:
    """Set PROMETHEUS_MULTIPROC_DIR for this process (see the module docstring); return it."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        os.makedirs(given, exist_ok=True)
        return given
    base = Path(
        os.environ.get("GATEWAY_METRICS_DIR")
        or Path(tempfile.gettempdir()) / "smart-balancers-metrics"
    )
    base.mkdir(parents=True, exist_ok=True)
    parent = (
        multiprocessing.parent_process()
    )  # uvicorn --workers spawns its workers through multiprocessing
    server = parent.pid if parent is not None and parent.pid is not None else os.getpid()
    name = f"{server}-{_start_time(server)}"
    for entry in base.iterdir():
        if entry.name != name and entry.is_dir() and not _server_running(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
    path = base / name
    path.mkdir(exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    if server == os.getpid():
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    return str(path)
