"""The method x set table of docs/routing.md, measured in one run.

    python -m gateway.router_models.table [--split test] [--sets snips,mmlu_subjects] [--methods
    ...]
        [--repeat N]

For every set in tests/data and every method of ``evaluation.METHODS`` it
builds the router from the set's routes (with or without their examples, as
the method says), classifies the chosen split and prints one Markdown row:
accuracy, decision wall time p50/p99 and CPU time p50/p99 (``time.thread_time``,
which leaves out waiting for a core on a busy machine). ``dev`` lines chose the
methods and settings; ``test`` lines were held out until the final run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.router_models.evaluation import (
    METHODS,
    build_method,
    load_route_set,
    load_split,
    percentile,
)

DATA = Path(__file__).resolve().parents[2] / "tests" / "data"
# mmlu_unseen has test lines only: nothing was chosen on it (docs/routing-data.md).
SETS = ("support", "mmlu_families", "snips", "mmlu_subjects", "easy_hard", "mmlu_unseen")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--split", choices=("dev", "test", "all"), default="test")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--methods", default=",".join(m for m in METHODS if m != "auto"))
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="classify the split N times over and time each prompt by its fastest run (on a shared "
        "machine: the decision's own cost, without other jobs' interruptions)",
    )
    parser.add_argument(
        "--memory",
        metavar="METHOD",
        help="instead: peak RSS of this process after fitting METHOD to mmlu_subjects and 200 "
        "decisions (run once per method: the peak never goes down)",
    )
    args = parser.parse_args(argv)
    if args.memory:
        return memory(args.memory)

    from gateway.router_models.local import warm_up

    warm_up()
    build_method("difficulty", []).classify("warm up")
    print(
        f"split {args.split}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        + (f"; each prompt's fastest of {args.repeat} runs" if args.repeat > 1 else "")
    )
    print(
        "| method | set | routes | prompts | accuracy | wall p50 / p99 ms | CPU p50 / p99 ms | fit "
        "ms |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.sets.split(","):
        routes, default = load_route_set(DATA / f"{name}.routes.json")
        items = load_split(DATA / f"{name}.jsonl", args.split)
        if not items:
            continue
        for method in args.methods.split(","):
            if method == "difficulty" and {r.name for r in routes} != {"efficient", "reasoning"}:
                continue
            started = time.perf_counter()
            classifier = build_method(method, routes)
            fit_ms = (time.perf_counter() - started) * 1000
            hits = 0
            wall = [float("inf")] * len(items)
            cpu = [float("inf")] * len(items)
            for repeat in range(args.repeat):
                for i, item in enumerate(items):
                    t0, c0 = time.perf_counter(), time.thread_time()
                    decision = classifier.classify(item.prompt)
                    cpu[i] = min(cpu[i], (time.thread_time() - c0) * 1000)
                    wall[i] = min(wall[i], (time.perf_counter() - t0) * 1000)
                    if repeat == 0:
                        hits += (decision.route or default) == item.route
            print(
                f"| {method} | {name} | {len(routes)} | {len(items)} | {hits / len(items):.1%} | "
                f"{percentile(wall, 50):.2f} / {percentile(wall, 99):.2f} | "
                f"{percentile(cpu, 50):.2f} / {percentile(cpu, 99):.2f} | {fit_ms:.0f} |",
                flush=True,
            )
    return 0


def memory(method: str) -> int:
    import resource

    from gateway.router_models.local import warm_up

    def peak_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    warm_up()
    build_method("difficulty", []).classify("warm up")
    loaded = peak_mib()
    routes, _ = load_route_set(DATA / "mmlu_subjects.routes.json")
    classifier = build_method(method, routes)
    for item in load_split(DATA / "mmlu_subjects.jsonl", "dev")[:200]:
        classifier.classify(item.prompt)
    print(
        f"{method}: peak RSS {loaded:.0f} MiB with the vectors loaded, "
        f"{peak_mib():.0f} MiB after the 10-route fit and 200 decisions"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
