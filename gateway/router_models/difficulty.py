"""How hard a prompt is: a learned score in [0, 1] (0 easy, 1 hard).

Easy: small talk, quick questions, help-desk lines, short requests. Hard:
multi-step reasoning, math, law, science, code. The score is a logistic
regression over the prompt's static embedding and its shape (length, share of
digits, newlines and symbols; no word lists), trained on public labelled data
and shipped as ``difficulty.json`` beside this module (a few KB):

    python -m gateway.router_models.difficulty tests/data/support.jsonl \\
        tests/data/support.routes.json  # rewrites difficulty.json

The training lines are the ``support`` set's (chatterbot small talk and help-desk
lines = easy; hard MMLU subjects and HumanEval / coding requests = hard), with
MMLU's lettered options removed so the model cannot learn "has options = hard".
It is measured on ``easy_hard.jsonl``: SNIPS requests against BIG-bench
reasoning tasks, sources it never saw (docs/routing.md).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gateway.router_models.features import shape_features
from gateway.router_models.local import StaticEmbedder, default_embedder, truncate_prompt

WEIGHTS_FILE = Path(__file__).with_name("difficulty.json")
HARD_ROUTES = frozenset({"reasoning", "coding"})
L2_PENALTY = 1e-3
_OPTIONS = re.compile(r"\n[A-D]\. [^\n]*", re.MULTILINE)


def strip_options(prompt: str) -> str:
    """An MMLU question without its lettered options."""
    return _OPTIONS.sub("", prompt).strip()


class DifficultyModel:
    def __init__(self, weights: np.ndarray, bias: float) -> None:
        self.weights = weights.astype(np.float32)
        self.bias = float(bias)

    @classmethod
    def load(cls, path: Path = WEIGHTS_FILE) -> DifficultyModel:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return cls(np.array(doc["weights"], dtype=np.float32), float(doc["bias"]))

    def score(self, text: str, vector: np.ndarray, n_tokens: int) -> float:
        """P(hard) for a prompt whose unit embedding is ``vector``."""
        features = np.concatenate([vector, shape_features(text, n_tokens)])
        z = float(features @ self.weights) + self.bias
        return 1.0 / (1.0 + math.exp(-z))

    def score_text(self, text: str, embedder: StaticEmbedder | None = None) -> float:
        cut = truncate_prompt(text)
        vector, n_tokens = (embedder or default_embedder()).embed(cut)
        return self.score(cut, vector, n_tokens)


_model: DifficultyModel | None = None
_lock = threading.Lock()


def default_difficulty_model() -> DifficultyModel:
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                _model = DifficultyModel.load()
    return _model


def feature_rows(texts: Sequence[str], embedder: StaticEmbedder) -> np.ndarray:
    cut = [truncate_prompt(t) for t in texts]
    vectors, counts = embedder.embed_many(cut)
    shapes = np.stack([shape_features(t, n) for t, n in zip(cut, counts, strict=True)])
    out: np.ndarray = np.concatenate([vectors, shapes], axis=1)
    return out


def train(texts: Sequence[str], hard: Sequence[bool], embedder: StaticEmbedder) -> DifficultyModel:
    """Fit the logistic regression (balanced classes, L2 penalty, plain gradient descent)."""
    x = feature_rows(texts, embedder).astype(np.float64)
    y = np.asarray(hard, dtype=np.float64)
    weight = np.where(y == 1, 0.5 / max(y.mean(), 1e-9), 0.5 / max(1 - y.mean(), 1e-9))
    w = np.zeros(x.shape[1])
    b = 0.0
    step = 2.0
    for _ in range(3000):
        p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        g = weight * (p - y) / len(y)
        w -= step * (x.T @ g + L2_PENALTY * w)
        b -= step * float(g.sum())
    return DifficultyModel(w.astype(np.float32), b)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train the difficulty model and write difficulty.json."
    )
    parser.add_argument("prompts", type=Path, help="a JSONL file of {prompt, route}")
    parser.add_argument(
        "routes", type=Path, nargs="?", help="its *.routes.json (examples join the training)"
    )
    parser.add_argument("--out", type=Path, default=WEIGHTS_FILE)
    args = parser.parse_args(argv)

    from gateway.router_models.evaluation import load_labelled, load_route_set

    pairs = [(i.prompt, i.route) for i in load_labelled(args.prompts)]
    if args.routes:
        routes, _ = load_route_set(args.routes)
        pairs += [(e, r.name) for r in routes for e in r.examples]
    texts = [strip_options(p) for p, _ in pairs]
    hard = [route in HARD_ROUTES for _, route in pairs]
    model = train(texts, hard, default_embedder())
    args.out.write_text(
        json.dumps(
            {
                "trained_on": [str(args.prompts), *([str(args.routes)] if args.routes else [])],
                "hard_routes": sorted(HARD_ROUTES),
                "features": "static embedding (256) + shape (log tokens, digits, newlines, symbols)",
                "bias": round(model.bias, 6),
                "weights": [round(float(v), 6) for v in model.weights],
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"wrote {args.out} from {len(texts)} prompts ({sum(hard)} hard)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
