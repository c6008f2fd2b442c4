"""What content rules cost per request, on one core (figures quoted in docs/routing.md).

    .venv/bin/python scripts/measure_content_rules.py

Ten rules, one of each kind, none matching (the worst case: every rule is checked), on
a 200-word chat prompt; then RE2 against a hostile pattern on a 1 MB prompt.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from balancers.rule_syntax import compile_keywords, compile_pattern, parse_keywords
from gateway.engine.rules import first_match, request_facts, rule_kinds
from gateway.engine.types import BalancerSpec, GroupSpec, RouteSpec, RuleSpec


def balancer(rules: tuple[RuleSpec, ...]) -> BalancerSpec:
    group = GroupSpec(name="g", selection_policy="round_robin", enabled=True, members=())
    routes = tuple(
        RouteSpec(
            name=n,
            intent="",
            examples=(),
            group=group,
            priority=i,
            weight=1,
            is_default=i == 1,
            enabled=True,
        )
        for i, n in enumerate(("main", "special"), start=1)
    )
    return BalancerSpec(
        pk=1,
        name="b",
        serving_name="b",
        workload_kind="chat",
        routing_mode="ordered",
        auto_preference="balanced",
        router_model=None,
        classifier_timeout=1,
        confidence_threshold=0,
        attempt_budget=3,
        request_timeout=60,
        enabled=True,
        routes=routes,
        rules=rules,
    )


def timed(spec: BalancerSpec, payload: dict, runs: int) -> list[float]:
    kinds = rule_kinds(spec.rules)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        facts = request_facts(payload, endpoint="chat", key_name="web", tags="a, b", kinds=kinds)
        first_match(spec, facts)
        samples.append((time.perf_counter() - started) * 1e6)
    return sorted(samples)


def main() -> None:
    rules = (
        RuleSpec("r1", "regex", "special", pattern=compile_pattern(r"INV-\d{4}")),
        RuleSpec(
            "r2",
            "keywords",
            "special",
            pattern=compile_keywords(parse_keywords("refund, chargeback, credit card")),
        ),
        RuleSpec("r3", "prompt_tokens", "special", min_tokens=5000),
        RuleSpec("r4", "tools", "special"),
        RuleSpec("r5", "images", "special"),
        RuleSpec("r6", "response_format", "special"),
        RuleSpec("r7", "metadata", "special", metadata_key="tier", value="gold"),
        RuleSpec("r8", "user", "special", value="vip"),
        RuleSpec("r9", "tag", "special", value="batch"),
        RuleSpec("r10", "api_key", "special", value="etl"),
    )
    words = (
        "the customer asked about the parcel that arrived late and wants to know what happens next "
        * 13
    ).split()
    payload = {
        "model": "b",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": " ".join(words[:200])},
        ],
    }
    for label, spec in (
        ("10 rules, none matching", balancer(rules)),
        ("the 9 other rules (no prompt_tokens)", balancer(rules[:2] + rules[3:])),
        ("1 prompt_tokens rule", balancer(rules[2:3])),
        ("1 keywords rule", balancer(rules[1:2])),
        ("no rules", dataclasses.replace(balancer(()), rules=())),
    ):
        samples = timed(spec, payload, 20_000)
        p50, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99)]
        print(
            f"{label}: p50 {p50:.1f} us, p99 {p99:.1f} us, mean {statistics.fmean(samples):.1f} us"
        )
    hostile = compile_pattern("(a+)+$")
    text = "a" * 1_000_000 + "!"
    started = time.perf_counter()
    hostile.search(text)
    print(f"RE2 (a+)+$ on 1,000,001 characters: {(time.perf_counter() - started) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
