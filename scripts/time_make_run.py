"""Time `make run` in a checkout until it answers /healthz, printing its output with offsets.

    git clone /path/to/repo /tmp/coldrun
    python3 scripts/time_make_run.py /tmp/coldrun /tmp/coldrun-var         # cold: no .venv yet
    python3 scripts/time_make_run.py /tmp/coldrun /tmp/coldrun-var         # warm: run it again
    python3 scripts/time_make_run.py --tty /tmp/coldrun /tmp/coldrun-var   # under a terminal
    (script(1))

The checkout gets its own VAR_DIR and a free PORT; DATABASE_URL and REDIS_URL are
unset (embedded mode). The server is stopped once it answers.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkout")
    parser.add_argument("var_dir")
    parser.add_argument("--tty", action="store_true", help="run under script(1), as on a terminal")
    args = parser.parse_args()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(VAR_DIR=args.var_dir, PORT=str(port))
    command = ["script", "-qfec", "make run", "/dev/null"] if args.tty else ["make", "run"]
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=args.checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    first: list[float] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            offset = time.monotonic() - started
            if not first:
                first.append(offset)
            print(f"{offset:7.2f}s  {line.decode(errors='replace').rstrip()}", flush=True)

    threading.Thread(target=pump, daemon=True).start()
    ready = None
    while time.monotonic() - started < 900 and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                if response.status == 200:
                    ready = time.monotonic() - started
                    break
        except OSError:
            time.sleep(0.2)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    process.wait(30)
    print(
        f"first output after {first[0] if first else float('nan'):.2f} s; "
        f"answering after {ready:.1f} s"
        if ready
        else "make run never answered"
    )


if __name__ == "__main__":
    main()
