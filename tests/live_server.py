"""The gateway in a real ASGI server process (uvicorn), against the test database and Redis."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    db = settings.DATABASES["default"]
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return (
        f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}"
        f":{db.get('PORT') or 5432}/{db['NAME']}"
    )


class LiveGateway:
    def __init__(self, *, extra_env: dict[str, str] | None = None, workers: int = 1) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "SECRET_KEY": settings.SECRET_KEY,
            "GATEWAY_ENCRYPTION_KEYS": ",".join(settings.GATEWAY_ENCRYPTION_KEYS),
            "GATEWAY_CONFIG_POLL_SECONDS": "0.1",
            "GATEWAY_USAGE_FLUSH_SECONDS": "0.2",
            "GATEWAY_MAX_BODY_BYTES": str(256 * 1024),
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"gateway-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--no-access-log",
                "--log-level",
                "warning",
                "--timeout-graceful-shutdown",
                "10",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited at start:\n{self.log_path.read_text()}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"gateway did not start:\n{self.log_path.read_text()}")

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def wait_for_config(self, timeout: float = 5.0) -> None:
        """Block until the server routes from the newest committed configuration."""
        from gateway.hotpath.config_version import config_version_from_db

        wanted = config_version_from_db()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # /v1/models forces a first load; /healthz reports the version in use.
            httpx.get(self.v1 + "/models", timeout=2)
            if httpx.get(self.base_url + "/healthz", timeout=2).json()["config_version"] == wanted:
                return
            time.sleep(0.05)
        raise AssertionError(f"gateway did not pick up config version {wanted}")

    def _sockets(self, match: Callable[[int, int, str], bool]) -> set[str]:
        """The inodes ("socket:[n]") of the TCP sockets whose (local port, remote port, state)
        match."""
        found = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError):
                for line in Path(table).read_text().splitlines()[1:]:
                    fields = line.split()
                    local, remote = fields[1].rsplit(":", 1)[1], fields[2].rsplit(":", 1)[1]
                    if match(int(local, 16), int(remote, 16), fields[3]):
                        found.add(f"socket:[{fields[9]}]")
        return found

    def _holders(self, inodes: set[str]) -> set[int]:
        """The server's child processes holding any of these sockets."""
        pid = self.process.pid
        holders = set()
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(OSError):
                for fd in Path(f"/proc/{child}/fd").iterdir():
                    with contextlib.suppress(OSError):
                        if os.readlink(fd) in inodes:
                            holders.add(int(child))
                            break
        return holders

    def worker_pids(self) -> set[int]:
        """The uvicorn worker processes: the children holding the listening socket (Linux /proc;
        multiprocessing's resource tracker is a child too, and holds none)."""
        return self._holders(
            self._sockets(lambda local, _, state: local == self.port and state == "0A")
        )

    def worker_serving(self, client_port: int) -> int | None:
        """The worker holding the server end of the open connection from `client_port`."""
        holders = self._holders(
            self._sockets(lambda local, remote, _: local == self.port and remote == client_port)
        )
        return holders.pop() if len(holders) == 1 else None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
