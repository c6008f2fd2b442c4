"""Summarise a py-spy raw (collapsed stacks) profile: self and inclusive time by function and by
package.

    python bench/profile_summary.py bench/out/profile-gateway.raw [--top 25]

Each line of py-spy's ``-f raw`` output is ``frame;frame;...;leaf COUNT``, a frame being
``function (path/file.py:line)``. *Self* time is charged to the leaf frame; *inclusive*
time to every distinct function on the stack (counted once per stack). Functions are
keyed without their line number; packages are the first component of the shortened
path py-spy prints (``django``, ``aiohttp``, ``gateway``, ``asyncio``...). The frames
above the event loop (runpy, click, uvicorn's main, ``asyncio.Runner.run``) are dropped;
a sample whose leaf is the event loop's entry is charged to "(event loop ...)": uvloop's
own C code, which py-spy cannot see into.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _frame(frame: str) -> tuple[str, str] | None:
    match = _FRAME.match(frame.strip())
    if match is None:
        return None  # process or thread pseudo-frames
    return match["func"], match["file"]


def package(path: str) -> str:
    """The package a file belongs to: ``django`` for django/db/..., the stdlib module for
    asyncio/..."""
    for marker in ("site-packages/", "dist-packages/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    path = re.sub(r"^.*/lib/python3\.\d+/", "", path)
    path = re.sub(r"^/work/main/", "", path)
    first = path.lstrip("/").split("/", 1)[0]
    return first[:-3] if first.endswith(".py") else first


def short(path: str) -> str:
    for marker in ("site-packages/", "dist-packages/"):
        if marker in path:
            return path.split(marker, 1)[1]
    path = re.sub(r"^.*/lib/python3\.\d+/", "", path)
    return re.sub(r"^/work/main/", "", path)


# Frames that only carry the process into its event loop; a sample whose leaf is one of
# them is time spent in the event loop's own C code (uvloop: polling, callbacks, transports).
_LOOP_FRAMES = {
    ("Runner.run", "asyncio/runners.py"),
    ("BaseEventLoop.run_forever", "asyncio/base_events.py"),
    ("BaseEventLoop.run_until_complete", "asyncio/base_events.py"),
}
EVENT_LOOP = ("(event loop: uvloop's C code, I/O and callbacks)", "uvloop")


def _trim(frames: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop the start-up frames above the event loop (uvicorn, click, runpy...)."""
    for index in range(len(frames) - 1, -1, -1):
        func, path = frames[index]
        if (func, short(path)) in _LOOP_FRAMES:
            rest = frames[index + 1 :]
            return rest if rest else [EVENT_LOOP]
    return frames


def summarise(text: str) -> dict[str, Any]:
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    self_pkg: Counter[str] = Counter()
    incl_pkg: Counter[str] = Counter()
    self_file: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in (_frame(x) for x in stack.split(";")) if f is not None]
        if not frames:
            continue
        frames = _trim(frames)
        total += count
        func, path = frames[-1]
        self_fn[f"{func} ({short(path)})"] += count
        self_pkg[package(path)] += count
        self_file[short(path)] += count
        seen_fn = {f"{f} ({short(p)})" for f, p in frames}
        seen_pkg = {package(p) for _, p in frames}
        for key in seen_fn:
            incl_fn[key] += count
        for key in seen_pkg:
            incl_pkg[key] += count
    return {
        "samples": total,
        "self_functions": self_fn.most_common(),
        "inclusive_functions": incl_fn.most_common(),
        "self_packages": self_pkg.most_common(),
        "self_files": self_file.most_common(),
        "inclusive_packages": incl_pkg.most_common(),
    }


def _pct(count: int, total: int) -> str:
    return f"{100 * count / total:.1f}%" if total else "\u2013"


def render_markdown(summary: dict[str, Any], top: int = 20) -> list[str]:
    total = summary["samples"]
    lines = [
        "Self time by package (the leaf frame's):",
        "",
        "| package | self | inclusive |",
        "| --- | --- | --- |",
    ]
    inclusive = dict(summary["inclusive_packages"])
    for name, count in summary["self_packages"][:top]:
        lines.append(f"| `{name}` | {_pct(count, total)} | {_pct(inclusive.get(name, 0), total)} |")
    lines += ["", "Self time by module (file):", "", "| module | self |", "| --- | --- |"]
    for name, count in summary["self_files"][:top]:
        lines.append(f"| `{name}` | {_pct(count, total)} |")
    lines += ["", "Self time by function:", "", "| function | self |", "| --- | --- |"]
    for name, count in summary["self_functions"][:top]:
        lines.append(f"| `{name}` | {_pct(count, total)} |")
    lines += [
        "",
        "Inclusive time by function (on the stack):",
        "",
        "| function | inclusive |",
        "| --- | --- |",
    ]
    for name, count in summary["inclusive_functions"][:top]:
        lines.append(f"| `{name}` | {_pct(count, total)} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Summarise a py-spy raw profile.")
    parser.add_argument("raw", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    summary = summarise(args.raw.read_text())
    print(f"{summary['samples']:,} samples")
    print("\n".join(render_markdown(summary, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
