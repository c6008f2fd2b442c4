from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from balancers.demo import seed_demo

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("evaluate_routing", *args, stdout=out)
    return out.getvalue()


def test_it_reports_accuracy_confusion_latency_and_cost(tmp_path: Path):
    seed_demo()
    data = tmp_path / "labelled.jsonl"
    data.write_text(
        "\n".join(
            json.dumps(line)
            for line in [
                {"prompt": "Summarise this support reply.", "route": "efficient"},
                {"prompt": "Resolve a multi-step refund dispute.", "route": "reasoning"},
                {"prompt": "Draft a short thank-you note.", "route": "efficient"},
            ]
        )
    )
    report = json.loads(run("support-balancer", str(data), "--json"))
    assert report["total"] == 3
    assert report["correct"] == 3
    assert set(report["confusion"]) == {"efficient", "reasoning", "fallback"}
    assert report["latency_ms"]["count"] == 3
    assert report["cost"]["baseline_route"] == "reasoning"
    assert report["cost"]["routed_usd"] < report["cost"]["baseline_usd"]
    text = run("support-balancer", str(data), "--zero-shot")
    assert "accuracy" in text and "zero-shot" in text


def test_labels_that_are_not_routes_are_refused(tmp_path: Path):
    seed_demo()
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"prompt": "x", "route": "nope"}))
    with pytest.raises(CommandError, match="nope"):
        run("support-balancer", str(data))
