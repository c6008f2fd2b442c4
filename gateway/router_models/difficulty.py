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

``--calibrate JSONL`` Platt-scales the output (one scale and one offset of the
logit, minimising the log-loss) on that set's **dev** lines. Tried on
``easy_hard.jsonl`` and not kept (docs/routing.md): it raised the score alone
from 87.3% to 91.7% on those dev lines (89.0% on the test lines, 87.7% without
it) but pushed everyday rewording requests over 0.5 ("Rewrite this paragraph so
it sounds friendlier." 0.48 -> 0.78), and the demo balancer then sent one to
its reasoning route.
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


def platt(logits: np.ndarray, hard: np.ndarray) -> tuple[float, float]:
    """Scale and offset of ``logits`` that minimise the log-loss against ``hard`` (0/1).

    Newton's method on the two parameters (a convex problem), from (1, 0).
    """
    x = np.stack([logits, np.ones_like(logits)], axis=1)
    theta = np.array([1.0, 0.0])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(x @ theta)))
        grad = x.T @ (p - hard) / len(hard)
        hessian = (x * (p * (1 - p))[:, None]).T @ x / len(hard) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, grad)
        theta -= step
        if float(np.abs(step).max()) < 1e-10:
            break
    return float(theta[0]), float(theta[1])


def calibrated(
    model: DifficultyModel, texts: Sequence[str], hard: Sequence[bool]
) -> DifficultyModel:
    """``model`` with its logit Platt-scaled on these labelled prompts."""
    embedder = default_embedder()
    logits = np.array(
        [math.log(p / (1 - p)) for p in (model.score_text(t, embedder) for t in texts)]
    )
    scale, offset = platt(logits, np.asarray(hard, dtype=np.float64))
    return DifficultyModel(model.weights * scale, model.bias * scale + offset)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train the difficulty model and write difficulty.json."
    )
    parser.add_argument("prompts", type=Path, help="a JSONL file of {prompt, route}")
    parser.add_argument(
        "routes", type=Path, nargs="?", help="its *.routes.json (examples join the training)"
    )
    parser.add_argument(
        "--calibrate",
        type=Path,
        metavar="JSONL",
        help="Platt-scale the output on this set's dev lines (routes 'efficient' / 'reasoning')",
    )
    parser.add_argument("--out", type=Path, default=WEIGHTS_FILE)
    args = parser.parse_args(argv)

    from gateway.router_models.evaluation import load_labelled, load_route_set, load_split

    pairs = [(i.prompt, i.route) for i in load_labelled(args.prompts)]
    if args.routes:
        routes, _ = load_route_set(args.routes)
        pairs += [(e, r.name) for r in routes for e in r.examples]
    texts = [strip_options(p) for p, _ in pairs]
    hard = [route in HARD_ROUTES for _, route in pairs]
    model = train(texts, hard, default_embedder())
    calibrated_on: list[str] = []
    if args.calibrate:
        dev = load_split(args.calibrate, "dev")
        model = calibrated(model, [i.prompt for i in dev], [i.route in HARD_ROUTES for i in dev])
        calibrated_on = [f"{args.calibrate} (dev lines)"]
    args.out.write_text(
        json.dumps(
            {
                "trained_on": [str(args.prompts), *([str(args.routes)] if args.routes else [])],
                "calibrated_on": calibrated_on,
                "hard_routes": sorted(HARD_ROUTES),
                "features": "static embedding (256) + shape (log tokens, digits, newlines, "
                "symbols)",
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
