from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.router_models.evaluation import load_labelled, load_route_set, load_split
from gateway.router_models.local import (
    Classification,
    LocalIntentClassifier,
    RouteIntent,
    intent_difficulty,
    is_catch_all,
    prompt_difficulty,
    truncate_prompt,
)

DATA = Path(__file__).resolve().parents[1] / "data"
ROOT = Path(__file__).resolve().parents[2]

EFFICIENT = RouteIntent(
    "efficient",
    "Simple, short tasks: summaries, drafts, rewording and quick replies.",
    (
        "Summarise this email in two lines.",
        "Draft a short thank-you reply.",
        "Rewrite this sentence more politely.",
    ),
)
REASONING = RouteIntent(
    "reasoning",
    "Multi-step support decisions that need careful reasoning: disputes, refunds, escalations, "
    "policy edge cases.",
    (
        "Decide whether this customer qualifies for a refund under our policy.",
        "Work out the root cause from these three conflicting support logs.",
    ),
)
FALLBACK = RouteIntent("fallback", "Anything else.")
DEMO_ROUTES = (EFFICIENT, REASONING, FALLBACK)


def zero_shot(routes: tuple[RouteIntent, ...] | list[RouteIntent]) -> list[RouteIntent]:
    return [RouteIntent(r.name, r.intent) for r in routes]


@pytest.fixture(scope="module")
def demo_with_examples() -> LocalIntentClassifier:
    return LocalIntentClassifier(DEMO_ROUTES)


@pytest.fixture(scope="module")
def demo_zero_shot() -> LocalIntentClassifier:
    return LocalIntentClassifier(zero_shot(DEMO_ROUTES))


def test_it_routes_the_support_summary_to_efficient_zero_shot(demo_zero_shot):
    assert demo_zero_shot.classify("Summarise this support reply.").route == "efficient"


def test_it_routes_the_refund_dispute_to_reasoning_zero_shot(demo_zero_shot):
    assert demo_zero_shot.classify("Resolve a multi-step refund dispute.").route == "reasoning"


def test_it_routes_the_support_summary_to_efficient_with_examples(demo_with_examples):
    assert demo_with_examples.classify("Summarise this support reply.").route == "efficient"


def test_it_routes_the_refund_dispute_to_reasoning_with_examples(demo_with_examples):
    decision = demo_with_examples.classify("Resolve a multi-step refund dispute.")
    assert decision.route == "reasoning"


@pytest.mark.parametrize(
    ("prompt", "route"),
    [
        ("Please draft a quick reply saying we received the ticket.", "efficient"),
        ("Rewrite this paragraph so it sounds friendlier.", "efficient"),
        (
            "The customer was double charged and threatens a chargeback; decide whether to refund "
            "or escalate.",
            "reasoning",
        ),
        ("What's the weather like on Mars?", "fallback"),
    ],
)
def test_it_routes_other_demo_prompts_as_an_operator_would(demo_with_examples, prompt, route):
    assert demo_with_examples.classify(prompt).route == route


def test_the_demo_decisions_are_confident(demo_zero_shot, demo_with_examples):
    for classifier in (demo_zero_shot, demo_with_examples):
        assert classifier.classify("Summarise this support reply.").confidence > 0.9
        assert classifier.classify("Resolve a multi-step refund dispute.").confidence > 0.9


def test_confidence_is_the_winning_probability_and_scores_sum_to_one(demo_with_examples):
    decision = demo_with_examples.classify("Summarise this support reply.")
    assert set(decision.scores) == {"efficient", "reasoning", "fallback"}
    assert sum(decision.scores.values()) == pytest.approx(1.0)
    assert all(0.0 <= p <= 1.0 for p in decision.scores.values())
    assert decision.confidence == max(decision.scores.values())
    assert decision.scores[decision.route] == decision.confidence


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_an_empty_prompt_matches_no_route(demo_with_examples, prompt):
    assert demo_with_examples.classify(prompt) == Classification(None, 0.0, {})


def test_a_balancer_without_routes_matches_no_route():
    assert LocalIntentClassifier([]).classify("Hello").route is None


def test_route_names_must_be_unique():
    with pytest.raises(ValueError, match="unique"):
        LocalIntentClassifier([RouteIntent("a", "Refunds."), RouteIntent("a", "Greetings.")])


@pytest.mark.parametrize(
    "intent",
    ["Anything else.", "anything else", "Everything else", "Other requests", "Fallback", ""],
)
def test_an_intent_that_only_says_anything_else_is_a_catch_all(intent):
    assert is_catch_all(intent)


@pytest.mark.parametrize(
    "intent", ["Refund disputes.", "Anything about invoices", "Other languages"]
)
def test_a_specific_intent_is_not_a_catch_all(intent):
    assert not is_catch_all(intent)


@pytest.mark.parametrize(
    "prompt", ["Tell me about the history of the Roman empire.", "Which planet is the largest?"]
)
def test_a_catch_all_wins_when_no_specific_route_fits(demo_zero_shot, demo_with_examples, prompt):
    assert demo_zero_shot.classify(prompt).route == "fallback"
    assert demo_with_examples.classify(prompt).route == "fallback"


def test_it_names_no_route_when_nothing_is_similar_and_there_is_no_catch_all():
    classifier = LocalIntentClassifier(
        [RouteIntent("billing", "Invoices, payments and refunds."), RouteIntent("hr", "Holidays.")]
    )
    decision = classifier.classify("What's the weather like on Mars?")
    assert decision.route is None
    assert decision.confidence == 0.0


def test_intent_wording_says_which_routes_want_easy_or_hard_prompts():
    assert intent_difficulty(EFFICIENT.intent) < 0 < intent_difficulty(REASONING.intent)
    assert intent_difficulty("Questions about our invoices.") == 0


def test_long_or_hard_worded_prompts_count_as_harder():
    assert prompt_difficulty("Hi", 1) < prompt_difficulty("x", 300)
    assert prompt_difficulty("Prove it step by step.", 6) > prompt_difficulty("Do it.", 6)
    assert prompt_difficulty("Summarise it briefly.", 6) < prompt_difficulty("Do it.", 6)


def test_a_long_prompt_keeps_its_head_and_tail():
    text = "start " + "filler " * 5000 + "Summarise the above."
    cut = truncate_prompt(text)
    assert len(cut) < 2000
    assert cut.startswith("start ") and cut.endswith("Summarise the above.")
    assert truncate_prompt("short prompt") == "short prompt"


def test_examples_improve_on_the_intent_alone_on_a_public_set():
    routes, default = load_route_set(DATA / "support.routes.json")
    items = load_labelled(DATA / "support.jsonl")[::3]

    def accuracy(classifier: LocalIntentClassifier) -> float:
        hits = 0
        for item in items:
            route = classifier.classify(item.prompt).route
            hits += (route if route is not None else default) == item.route
        return hits / len(items)

    without = accuracy(LocalIntentClassifier(zero_shot(routes)))
    with_examples = accuracy(LocalIntentClassifier(routes))
    # Measured: about 0.89 zero-shot and 0.95 with examples (docs/routing-data.md).
    assert without > 0.8
    assert with_examples > 0.9
    assert with_examples > without


def test_it_loads_its_vectors_offline_without_django():
    """The vectors ship inside the installed wheel: no network, no model hub, no Django."""
    script = """
import socket, sys
def refuse(*args, **kwargs):
    raise OSError("network disabled in this test")
socket.socket.connect = refuse
socket.create_connection = refuse
from gateway.router_models.local import LocalIntentClassifier, RouteIntent
c = LocalIntentClassifier([RouteIntent("a", "Refund disputes."), RouteIntent("b", "Greetings.")])
assert c.classify("Hello there, good morning!").route == "b"
assert "django" not in sys.modules, "router models must not import Django"
assert "wordllama" not in sys.modules, "wordllama's modules configure root logging"
assert "torch" not in sys.modules
print("ok")
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_distinct_prompts_do_not_grow_the_tokenizer() -> None:
    """The tokenizer keys BPE's cache on whole prompts (it has no pre-tokenizer): with the cache
    on, 5,000 distinct prompts added ~10 MiB to the process; with it off, next to nothing."""
    import gc

    from gateway.router_models.local import StaticEmbedder

    def rss_mib() -> float:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    embedder = StaticEmbedder.from_wordllama()
    prompt = (
        "Decide whether this customer qualifies for a refund under our policy, given the orders"
    )
    embedder.token_ids(prompt)
    gc.collect()
    before = rss_mib()
    for i in range(5000):
        embedder.token_ids(f"{prompt} (request {i})")
    gc.collect()
    assert rss_mib() - before < 4, rss_mib() - before


def test_a_prompt_in_an_intents_own_words_gets_lexical_credit(monkeypatch):
    from gateway.router_models import local

    classifier = LocalIntentClassifier(
        [
            RouteIntent("playlists", "Add a song to one of my playlists."),
            RouteIntent("weather", "Weather forecasts: rain, snow or sun."),
        ]
    )
    prompt = "put this track on the road trip playlists"
    with_lexical = classifier.similarities(prompt)
    monkeypatch.setattr(local, "LEXICAL_WEIGHT", 0.0)
    without = classifier.similarities(prompt)
    assert with_lexical is not None and without is not None
    gain = with_lexical[0] - without[0]
    assert gain[0] > 0.01  # "▁play" and "lists" are tokens of that intent
    assert gain[1] == pytest.approx(0.0, abs=1e-6)  # no token of the weather intent


def test_zero_shot_accuracy_on_unseen_dev_lines():
    """From one intent sentence per route, dev lines only (the test lines stay unseen here).

    Measured: snips 84.3%, easy_hard 90.7% (82.7% and 86.0% before the lexical term)."""
    for name, floor in (("snips", 0.84), ("easy_hard", 0.9)):
        routes, default = load_route_set(DATA / f"{name}.routes.json")
        classifier = LocalIntentClassifier(zero_shot(routes))
        items = load_split(DATA / f"{name}.jsonl", "dev")
        hits = sum((classifier.classify(i.prompt).route or default) == i.route for i in items)
        assert hits / len(items) >= floor, name
