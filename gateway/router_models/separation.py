"""How well a balancer's routes separate: which pairs the built-in router would confuse.

Shown live on the wizard's routes step while the operator types intents and
examples. Two signals, both from what the operator wrote (never from traffic):

1. **Held-out confusion** (routes with example prompts): the examples are split
   into ``FOLDS`` folds; a fitted model (``fitted.FittedIntentClassifier``)
   trained without a fold routes that fold's examples. When at least
   ``OVERLAP_SHARE`` of a route's held-out examples (and at least
   ``MIN_CONFUSED`` of them) go to one other route, the two overlap.
2. **Intent likeness** (every route): the cosine of two intent sentences in the
   static embedding space. At or above ``INTENT_SIMILARITY`` they say nearly the
   same thing, and the zero-shot scorer splits prompts between them by chance.
   (Measured: paraphrased intents score 0.71-0.79, unrelated ones 0.05-0.18.)

A catch-all route ("anything else", no examples) is left out: it is meant to
be far from everything. A fold fit costs about 40 ms for three routes of four
examples, so a check is a few tenths of a second at most; the wizard asks for
it after the typing pauses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.router_models.fitted import FittedIntentClassifier
from gateway.router_models.local import RouteIntent, StaticEmbedder, default_embedder, is_catch_all

FOLDS = 3
OVERLAP_SHARE = 0.3
MIN_CONFUSED = 2
INTENT_SIMILARITY = 0.6
MAX_ROUTES = 20  # past this the check is skipped (the wizard says so)


@dataclass(frozen=True, slots=True)
class Overlap:
    route: str
    other: str
    confused: int = 0  # held-out examples of `route` sent to `other`
    held_out: int = 0  # held-out examples of `route`
    similarity: float | None = None  # intent cosine, when the intents read alike

    @property
    def message(self) -> str:
        parts = []
        if self.held_out:
            parts.append(
                f"{self.confused} of {self.route}'s {self.held_out} example prompts would go to "
                f"{self.other}"
            )
        if self.similarity is not None:
            parts.append(
                f"their intents say nearly the same thing (similarity {self.similarity:.2f})"
            )
        return f"{self.route} and {self.other} overlap: " + "; ".join(parts) + "."


def _held_out_confusion(
    routes: Sequence[RouteIntent], embedder: StaticEmbedder | None
) -> dict[tuple[str, str], tuple[int, int]]:
    """(route, other) -> (examples of route sent to other, examples of route held out)."""
    counts: dict[tuple[str, str], int] = {}
    totals: dict[str, int] = {}
    for fold in range(FOLDS):
        held = {r.name: [e for j, e in enumerate(r.examples) if j % FOLDS == fold] for r in routes}
        if not any(held.values()):
            continue
        kept = [
            RouteIntent(
                r.name, r.intent, tuple(e for j, e in enumerate(r.examples) if j % FOLDS != fold)
            )
            for r in routes
        ]
        model = FittedIntentClassifier(kept, embedder=embedder)
        for name, examples in held.items():
            for example in examples:
                totals[name] = totals.get(name, 0) + 1
                chosen = model.classify(example).route
                if chosen is not None and chosen != name:
                    counts[(name, chosen)] = counts.get((name, chosen), 0) + 1
    return {pair: (n, totals[pair[0]]) for pair, n in counts.items()}


def route_overlaps(
    routes: Sequence[RouteIntent], *, embedder: StaticEmbedder | None = None
) -> list[Overlap]:
    """The pairs of routes the router would confuse, most confused first."""
    routes = [
        RouteIntent(r.name, r.intent.strip(), tuple(e.strip() for e in r.examples if e.strip()))
        for r in routes
        if r.name
    ]
    if len(routes) < 2 or len(routes) > MAX_ROUTES or len({r.name for r in routes}) != len(routes):
        return []
    catch_all = {r.name for r in routes if is_catch_all(r.intent) and not r.examples}
    embedder = embedder or default_embedder()
    found: dict[tuple[str, str], Overlap] = {}
    if any(r.examples for r in routes):
        for (name, other), (confused, held) in _held_out_confusion(routes, embedder).items():
            if other in catch_all or name in catch_all:
                continue
            if confused >= MIN_CONFUSED and confused / held >= OVERLAP_SHARE:
                found[(name, other)] = Overlap(name, other, confused, held)
    with_intent = [r for r in routes if r.intent and r.name not in catch_all]
    vectors = {r.name: embedder.embed(r.intent)[0] for r in with_intent}
    for i, first in enumerate(with_intent):
        for second in with_intent[i + 1 :]:
            similarity = float(vectors[first.name] @ vectors[second.name])
            if similarity < INTENT_SIMILARITY:
                continue
            pair = next(
                (p for p in ((first.name, second.name), (second.name, first.name)) if p in found),
                (first.name, second.name),
            )
            base = found.get(pair, Overlap(*pair))
            found[pair] = Overlap(
                base.route, base.other, base.confused, base.held_out, round(similarity, 2)
            )
    return sorted(
        found.values(),
        key=lambda o: (
            -(o.confused / o.held_out if o.held_out else 0),
            -(o.similarity or 0),
            o.route,
            o.other,
        ),
    )
