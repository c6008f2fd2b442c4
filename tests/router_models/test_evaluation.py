from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.router_models.evaluation import (
    NO_ROUTE,
    RoutePrice,
    estimate_tokens,
    evaluate,
    format_report,
    load_labelled,
    load_route_set,
    main,
    percentile,
    project_cost,
)

DATA = Path(__file__).resolve().parents[1] / "data"

EXPECTED = ["efficient", "efficient", "efficient", "reasoning", "reasoning", "coding"]
PREDICTED = ["efficient", "efficient", "reasoning", "reasoning", "coding", "coding"]


def test_accuracy_is_the_share_of_prompts_routed_as_labelled():
    report = evaluate(EXPECTED, PREDICTED)
    assert (report.total, report.correct) == (6, 4)
    assert report.accuracy == pytest.approx(4 / 6)


def test_precision_and_recall_are_per_route():
    report = evaluate(EXPECTED, PREDICTED)
    efficient, reasoning, coding = (
        report.per_route[n] for n in ("efficient", "reasoning", "coding")
    )
    assert (efficient.precision, efficient.recall) == (1.0, pytest.approx(2 / 3))
    assert (reasoning.precision, reasoning.recall) == (0.5, 0.5)
    assert (coding.precision, coding.recall) == (0.5, 1.0)


def test_a_route_nobody_picked_has_no_precision():
    report = evaluate(["a", "b"], ["a", "a"])
    assert report.per_route["b"].precision is None
    assert report.per_route["b"].recall == 0.0


def test_the_confusion_matrix_counts_expected_against_chosen():
    report = evaluate(EXPECTED, PREDICTED, routes=["efficient", "reasoning", "coding", "spare"])
    assert report.routes == ("efficient", "reasoning", "coding", "spare")
    assert report.confusion["efficient"] == {
        "efficient": 2,
        "reasoning": 1,
        "coding": 0,
        "spare": 0,
    }
    assert report.confusion["reasoning"]["coding"] == 1
    assert report.confusion["spare"] == dict.fromkeys(report.routes, 0)


def test_no_route_predictions_get_their_own_column_and_are_wrong():
    report = evaluate(["a", "b"], ["a", None])
    assert report.confusion["b"][NO_ROUTE] == 1
    assert report.correct == 1


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="length"):
        evaluate(["a"], [])


def test_latency_percentiles_use_the_nearest_rank():
    latencies = [float(i) for i in range(1, 101)]  # 1..100 ms
    report = evaluate(["a"] * 100, ["a"] * 100, latencies_ms=latencies)
    assert report.latency is not None
    assert (report.latency.p50_ms, report.latency.p99_ms, report.latency.max_ms) == (50, 99, 100)
    assert percentile([3.0], 99) == 3.0


def test_an_evaluation_without_latencies_has_no_latency_summary():
    assert evaluate(["a"], ["a"]).latency is None


def test_cost_is_projected_against_the_most_expensive_route():
    prices = {
        "efficient": RoutePrice(input_per_million=0.1, output_per_million=0.4),
        "reasoning": RoutePrice(input_per_million=3.0, output_per_million=15.0),
    }
    cost = project_cost(
        ["efficient", "efficient", "reasoning"],
        prices,
        input_tokens=[1000, 1000, 2000],
        output_tokens=100,
    )
    assert cost is not None
    assert cost.baseline_route == "reasoning"
    assert cost.per_route_usd["efficient"] == pytest.approx(2 * (1000 * 0.1 + 100 * 0.4) / 1e6)
    assert cost.per_route_usd["reasoning"] == pytest.approx((2000 * 3.0 + 100 * 15.0) / 1e6)
    assert cost.baseline_usd == pytest.approx((4000 * 3.0 + 300 * 15.0) / 1e6)
    assert cost.savings_usd == pytest.approx(cost.baseline_usd - cost.routed_usd)
    assert 0 < cost.savings_ratio < 1


def test_prompts_routed_nowhere_priced_count_as_unpriced():
    cost = project_cost([None, "free"], {"paid": RoutePrice(1.0)}, input_tokens=[10, 10])
    assert cost is not None
    assert cost.unpriced == 2
    assert cost.routed_usd == 0.0


def test_evaluate_projects_cost_from_prices_and_token_counts():
    prompts = ["Hi", "Prove it " * 100]
    report = evaluate(
        ["efficient", "reasoning"],
        ["efficient", "reasoning"],
        prices={"efficient": RoutePrice(0.1), "reasoning": RoutePrice(3.0)},
        input_tokens=[estimate_tokens(p) for p in prompts],
    )
    assert report.cost is not None and report.cost.baseline_route == "reasoning"


def test_evaluate_needs_token_counts_to_price_traffic():
    with pytest.raises(ValueError, match="input_tokens"):
        evaluate(["a"], ["a"], prices={"a": RoutePrice(1.0)})


def test_the_report_renders_as_plain_text_tables():
    report = evaluate(
        EXPECTED,
        PREDICTED,
        latencies_ms=[0.5] * 6,
        prices={"efficient": RoutePrice(0.1), "reasoning": RoutePrice(3.0)},
        input_tokens=[100] * 6,
    )
    text = format_report(report, title="support")
    assert text.startswith("support\n")
    assert "accuracy  66.7% (4/6)" in text
    assert "efficient" in text and "precision" in text and "recall" in text
    assert "expected \\ chosen" in text
    assert "p50 0.50 ms" in text and "p99 0.50 ms" in text
    assert "all on reasoning" in text


def test_the_report_is_one_json_object():
    report = evaluate(EXPECTED, PREDICTED, latencies_ms=[1.0] * 6)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["accuracy"] == pytest.approx(4 / 6)
    assert data["routes"]["reasoning"] == {
        "support": 2,
        "predicted": 2,
        "true_positives": 1,
        "precision": 0.5,
        "recall": 0.5,
    }
    assert data["confusion"]["efficient"]["reasoning"] == 1
    assert data["latency_ms"]["p99"] == 1.0
    assert data["cost"] is None


def test_load_labelled_reads_prompt_and_route_lines(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text(
        '{"prompt": "Hi", "route": "efficient", "source": "x"}\n\n{"prompt": "Q", "route": "r"}\n'
    )
    assert [(i.prompt, i.route) for i in load_labelled(path)] == [("Hi", "efficient"), ("Q", "r")]


def test_load_labelled_names_the_bad_line(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text('{"prompt": "Hi", "route": "a"}\n{"prompt": "no route"}\n')
    with pytest.raises(ValueError, match=r"set.jsonl:2"):
        load_labelled(path)


@pytest.mark.parametrize(
    "name", ["support", "mmlu_families", "snips", "mmlu_subjects", "mmlu_unseen"]
)
def test_each_public_set_defines_its_routes_with_ten_held_out_examples(name):
    routes, default = load_route_set(DATA / f"{name}.routes.json")
    items = load_labelled(DATA / f"{name}.jsonl")
    names = {r.name for r in routes}
    assert len(routes) >= 3 and default in names
    assert all(r.intent and len(r.examples) == 10 for r in routes)
    assert {i.route for i in items} == names
    assert 500 <= len(items) <= 2000
    examples = {e for r in routes for e in r.examples}
    assert not examples & {i.prompt for i in items}


def test_the_module_command_prints_a_report(capsys, tmp_path):
    routes = tmp_path / "mini.routes.json"
    routes.write_text(
        json.dumps(
            {
                "default_route": "chat",
                "routes": [
                    {"name": "chat", "intent": "Greetings and small talk.", "examples": ["Hello!"]},
                    {
                        "name": "billing",
                        "intent": "Invoices, payments and refunds.",
                        "examples": [],
                    },
                ],
            }
        )
    )
    prompts = tmp_path / "mini.jsonl"
    prompts.write_text(
        '{"prompt": "Hi, how are you?", "route": "chat"}\n'
        '{"prompt": "Please refund my last invoice payment.", "route": "billing"}\n'
    )
    assert main([str(routes), str(prompts), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["accuracy"] == 1.0
    assert data["latency_ms"]["count"] == 2
