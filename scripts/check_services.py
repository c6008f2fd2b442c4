"""Say in one line whether the PostgreSQL and Redis that the tests need are reachable."""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlparse


def reachable(url: str, default_port: int) -> tuple[bool, str]:
    parts = urlparse(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return True, f"{host}:{port}"
    except OSError as exc:
        return False, f"{host}:{port} ({exc.strerror or exc})"


def main() -> int:
    problems = []
    for name, port in (("DATABASE_URL", 5432), ("REDIS_URL", 6379)):
        url = os.environ.get(name, "")
        if not url:
            problems.append(f"{name} is not set")
            continue
        ok, where = reachable(url, port)
        if not ok:
            problems.append(f"{name} unreachable at {where}")
    if problems:
        print("make test needs PostgreSQL and Redis: " + "; ".join(problems) + ".", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
