"""The fitted router model: learns each balancer's routes from its intents and examples.

Built once per config snapshot (never on the request path), from what the
operator wrote:

1. **Training texts**: every route's intent sentence, its phrases ("disputes,
   refunds, escalations" one by one) and its example prompts, labelled with
   the route.
2. **Features**: the static embedding of a text and its hashed character
   n-grams (``features``), weighted ``EMBEDDING_WEIGHT`` : ``NGRAM_WEIGHT``.
3. **Model**: a multinomial logistic regression with an L2 penalty, solved in
   the span of the training texts (there are far fewer texts than features), so
   a fit is a small dense problem: a power iteration on the texts' kernel
   matrix and a few hundred Nesterov steps.
4. **Calibration**: the examples are split into folds; a model fitted without
   each fold scores it, and one temperature is chosen to minimise the
   log-loss of those held-out scores. The fold models and the final one are
   solved together, in one loop (``_fit_duals``): the same steps, one matrix
   product per step for all of them rather than one each, which made a fit of
   a small balancer several times cheaper (docs/routing.md). ``confidence`` is the winning
   probability at that temperature, so a ``confidence_threshold`` of 0.8
   means "right about 8 times in 10 or more".
5. **Catch-all**: a route whose intent only says "anything else" and has no
   examples is not a class: it wins when the prompt is far, in meaning, from
   every other route's texts (``CATCH_ALL_SIMILARITY``).

A decision is one embedding, one n-gram hash and two small matrix products.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gateway.router_models import blob
from gateway.router_models.difficulty import DifficultyModel, default_difficulty_model
from gateway.router_models.features import (
    N_BUCKETS,
    ngram_gram,
    ngram_project,
    ngram_rows,
    ngram_sparse,
)
from gateway.router_models.local import (
    EXAMPLE_HEAD_CHARS,
    EXAMPLE_TAIL_CHARS,
    Classification,
    LocalIntentClassifier,
    RouteIntent,
    StaticEmbedder,
    default_embedder,
    intent_phrases,
    is_catch_all,
    truncate_prompt,
)

# Chosen on the dev lines of tests/data (docs/routing.md has the table).
EMBEDDING_WEIGHT = 1.0
NGRAM_WEIGHT = 2.0
DIFFICULTY_WEIGHT = 1.0  # of the learned difficulty (centred, -1..1) as one more feature
L2_PENALTY = 1e-3
STEPS = 300
FOLDS = 5
# Max cosine (static embeddings) to a route's texts under which a prompt is
# "about none of them" and a catch-all route takes it.
CATCH_ALL_SIMILARITY = 0.35
CATCH_ALL_SHARPNESS = 0.03
# Temperatures tried on the held-out folds. With fewer than MIN_HELD_OUT examples
# per route the folds say too little, and DEFAULT_TEMPERATURE (the median of the
# dev sets' fitted temperatures) is used; the floor keeps a fold set that
# happened to be all right from making every later decision look certain.
_TEMPERATURES = np.exp(np.linspace(np.log(0.1), np.log(50.0), 81))
DEFAULT_TEMPERATURE = 0.28
MIN_HELD_OUT = 3


@dataclass(frozen=True)
class _Texts:
    texts: list[str]
    labels: np.ndarray  # class index per text
    fold: np.ndarray  # -1: always in training (intents, phrases); else the example's fold


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def _fit_duals(
    kernel: np.ndarray, labels: np.ndarray, n_classes: int, masks: np.ndarray
) -> np.ndarray:
    """Dual coefficients of an L2-penalised multinomial logistic regression, one per subset of the
    texts: ``masks`` (subsets x texts, bool); answers (subsets x texts x classes).

    The optimum's weights are a combination of the training texts' features
    (logits = K @ alpha), so a fit runs on the texts' kernel matrix K alone:
    Nesterov's accelerated gradient, in the kernel's own geometry, on a
    strongly convex objective (a few hundred steps of N x N products).

    Each subset's problem is the one on the kernel restricted to it: a coefficient
    outside the subset starts at zero and its gradient (the L2 term alone) stays
    zero, and the kernel's product with those zeros adds nothing. So all the fits
    run as one loop whose one matrix product per step covers every subset.
    """
    n = kernel.shape[0]
    k = kernel.astype(np.float64)
    inside = masks.T.astype(np.float64)  # texts x subsets
    counts = inside.sum(axis=0)
    targets = np.zeros((n, n_classes))
    targets[np.arange(n), labels] = 1.0
    v = inside / np.sqrt(counts)
    for _ in range(30):
        w = (k @ v) * inside
        v = w / np.maximum(np.linalg.norm(w, axis=0), 1e-12)
    top = np.einsum("if,if->f", v, k @ v)
    lipschitz = top / counts + L2_PENALTY
    step = (1.0 / lipschitz)[None, :, None]
    root_l, root_mu = np.sqrt(lipschitz), np.sqrt(L2_PENALTY)
    momentum = ((root_l - root_mu) / (root_l + root_mu))[None, :, None]
    weight = (inside / counts)[:, :, None]  # 1/n on a subset's texts, 0 elsewhere
    shape = (n, len(counts), n_classes)
    alpha = np.zeros(shape)
    previous = alpha
    for _ in range(STEPS):
        look = alpha + momentum * (alpha - previous)
        logits = (k @ look.reshape(n, -1)).reshape(shape)
        grad = (_softmax(logits) - targets[:, None, :]) * weight + L2_PENALTY * look
        previous, alpha = alpha, look - step * grad
    out: np.ndarray = alpha.transpose(1, 0, 2)
    return out


def _best_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    best, best_loss = 1.0, np.inf
    rows = np.arange(len(labels))
    for t in _TEMPERATURES:
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        loss = float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, labels]))
        if loss < best_loss:
            best, best_loss = float(t), loss
    return best


class FittedIntentClassifier:
    """Routes a prompt with a model fitted to the routes' intents and examples."""

    def __init__(
        self,
        routes: Sequence[RouteIntent],
        *,
        embedder: StaticEmbedder | None = None,
        difficulty: DifficultyModel | None = None,
    ) -> None:
        self._setup(routes, embedder, difficulty)
        data = self._training_texts()
        cut = [truncate_prompt(t, EXAMPLE_HEAD_CHARS, EXAMPLE_TAIL_CHARS) for t in data.texts]
        embeddings, counts = self._embedder.embed_many(cut)
        ngrams = ngram_rows(cut)
        hardness = np.array(
            [
                2 * self._difficulty.score(t, v, n) - 1
                for t, v, n in zip(cut, embeddings, counts, strict=True)
            ]
        )
        kernel = (
            EMBEDDING_WEIGHT * (embeddings @ embeddings.T)
            + NGRAM_WEIGHT * ngram_gram(ngrams)
            + DIFFICULTY_WEIGHT * np.outer(hardness, hardness)
            + 1.0
        )
        n_classes = len(self._classes)
        held_out = self._calibration_folds(data, n_classes)
        self.fitted_on = len(data.texts)
        self.temperature = DEFAULT_TEMPERATURE
        if n_classes:
            # The final model (every text) and one per calibration fold (without its texts).
            everything = np.ones(len(data.texts), dtype=bool)
            masks = np.array([everything] + [~test for test in held_out])
            alphas = _fit_duals(kernel, data.labels, n_classes, masks)
            alpha = alphas[0]
            if held_out:
                self.temperature = self._calibrate(kernel, data, held_out, alphas[1:])
        else:
            alpha = np.zeros((len(data.texts), 0))
        # Weights in feature space, so a decision needs no kernel over the texts.
        alpha32 = alpha.astype(np.float32)
        self._embedding_weights = EMBEDDING_WEIGHT * (embeddings.T @ alpha32)
        self._ngram_weights = NGRAM_WEIGHT * ngram_project(ngrams, alpha32)
        self._bias = alpha.sum(axis=0).astype(np.float32)
        self._difficulty_weights = (DIFFICULTY_WEIGHT * hardness @ alpha).astype(np.float32)
        # Each class's texts, to tell "about this route" from "about nothing here".
        self._embeddings = embeddings
        self._labels = data.labels

    def _setup(
        self,
        routes: Sequence[RouteIntent],
        embedder: StaticEmbedder | None,
        difficulty: DifficultyModel | None,
    ) -> None:
        names = [r.name for r in routes]
        if len(set(names)) != len(names):
            raise ValueError(f"route names must be unique: {names}")
        self.routes = tuple(routes)
        self.names = tuple(names)
        self._embedder = embedder or default_embedder()
        self._difficulty = difficulty if difficulty is not None else default_difficulty_model()
        catch_all = [
            is_catch_all(r.intent) and not any(e.strip() for e in r.examples) for r in routes
        ]
        self._catch_all = next((i for i, c in enumerate(catch_all) if c), None)
        self._classes = [i for i, c in enumerate(catch_all) if not c]

    # -- shared between workers (gateway.hotpath.router_share) ------------------------------------

    def to_blob(self, key: bytes) -> bytes:
        """The fitted model as bytes (``blob``), for ``from_blob`` with the same routes and key."""
        rows = np.flatnonzero(np.any(self._ngram_weights != 0, axis=1)).astype(np.int32)
        return blob.pack(
            key,
            {"fingerprint": fit_fingerprint(self.routes), "temperature": self.temperature},
            {
                "embedding_weights": self._embedding_weights,
                "ngram_rows": rows,  # the buckets any training text has; the others are zero
                "ngram_weights": self._ngram_weights[rows],
                "bias": self._bias,
                "difficulty_weights": self._difficulty_weights,
                "embeddings": self._embeddings,
                "labels": self._labels.astype(np.int32),
            },
        )

    @classmethod
    def from_blob(
        cls,
        routes: Sequence[RouteIntent],
        data: bytes,
        key: bytes,
        *,
        embedder: StaticEmbedder | None = None,
        difficulty: DifficultyModel | None = None,
    ) -> FittedIntentClassifier:
        """The model ``to_blob`` stored for these routes; ``blob.BlobRefused`` when ``data`` is not
        one (corrupt, signed with another key, fitted for other routes or by other code, or
        with shapes or values that do not fit these routes)."""
        meta, arrays = blob.unpack(key, data)
        model = cls.__new__(cls)
        model._setup(routes, embedder, difficulty)
        if meta.get("fingerprint") != fit_fingerprint(model.routes):
            raise blob.BlobRefused("fitted for other routes, settings or code")
        expected = {
            "embedding_weights",
            "ngram_rows",
            "ngram_weights",
            "bias",
            "difficulty_weights",
            "embeddings",
            "labels",
        }
        if set(arrays) != expected:
            raise blob.BlobRefused(f"arrays {sorted(arrays)}")
        k, dim = len(model._classes), model._embedder.dim
        n = len(arrays["labels"])
        rows = arrays["ngram_rows"]
        shapes = {
            "embedding_weights": (dim, k),
            "ngram_rows": (len(rows),),
            "ngram_weights": (len(rows), k),
            "bias": (k,),
            "difficulty_weights": (k,),
            "embeddings": (n, dim),
            "labels": (n,),
        }
        for name, shape in shapes.items():
            if arrays[name].shape != shape:
                raise blob.BlobRefused(f"{name}: shape {arrays[name].shape}, not {shape}")
        temperature = meta.get("temperature")
        if not isinstance(temperature, float) or not 0 < temperature < 1e6:
            raise blob.BlobRefused(f"temperature {temperature!r}")
        floats = [a for a in arrays.values() if a.dtype.kind == "f"]
        if not all(np.isfinite(a).all() for a in floats):
            raise blob.BlobRefused("values that are not finite")
        labels = arrays["labels"]
        if n == 0 or labels.min() < 0 or labels.max() >= max(k, 1):
            raise blob.BlobRefused("labels out of range")
        if len(rows) and (rows.min() < 0 or rows.max() >= N_BUCKETS or np.any(np.diff(rows) <= 0)):
            raise blob.BlobRefused("n-gram rows out of range or unordered")
        model.temperature = temperature
        model.fitted_on = n
        model._embedding_weights = arrays["embedding_weights"].astype(np.float32)
        model._ngram_weights = np.zeros((N_BUCKETS, k), dtype=np.float32)
        model._ngram_weights[rows] = arrays["ngram_weights"]
        model._bias = arrays["bias"].astype(np.float32)
        model._difficulty_weights = arrays["difficulty_weights"].astype(np.float32)
        model._embeddings = arrays["embeddings"].astype(np.float32)
        model._labels = labels.astype(np.intp)
        return model

    def _training_texts(self) -> _Texts:
        texts: list[str] = []
        labels: list[int] = []
        folds: list[int] = []
        for label, index in enumerate(self._classes):
            route = self.routes[index]
            own = [route.intent] if route.intent.strip() else []
            phrases = intent_phrases(route.intent) if route.intent.strip() else []
            own += [p for p in phrases if p != route.intent]
            texts += own
            labels += [label] * len(own)
            folds += [-1] * len(own)
            examples = [e for e in route.examples if e.strip()]
            texts += examples
            labels += [label] * len(examples)
            folds += [j % FOLDS for j in range(len(examples))]
            if not own and not examples:  # a nameless route still needs a text
                texts.append(route.name)
                labels.append(label)
                folds.append(-1)
        return _Texts(texts, np.array(labels, dtype=np.intp), np.array(folds, dtype=np.intp))

    def _calibration_folds(self, data: _Texts, n_classes: int) -> list[np.ndarray]:
        """The held-out texts of each fold (none: too few examples, DEFAULT_TEMPERATURE)."""
        held = data.fold >= 0
        if n_classes < 2 or held.sum() < MIN_HELD_OUT * n_classes:
            return []
        return [data.fold == fold for fold in range(FOLDS) if (data.fold == fold).any()]

    def _calibrate(
        self, kernel: np.ndarray, data: _Texts, held_out: list[np.ndarray], alphas: np.ndarray
    ) -> float:
        """One temperature from out-of-fold scores of the examples (each fold's own model)."""
        held = data.fold >= 0
        logits = np.zeros((len(data.texts), alphas.shape[2]))
        for test, alpha in zip(held_out, alphas, strict=True):
            logits[test] = kernel[test] @ alpha
        return _best_temperature(logits[held], data.labels[held])

    def classify(self, text: str) -> Classification:
        if not self.routes or not text.strip():
            return Classification(route=None, confidence=0.0, scores={})
        cut = truncate_prompt(text)
        vector, n_tokens = self._embedder.embed(cut)
        if n_tokens == 0:
            return Classification(route=None, confidence=0.0, scores={})
        difficulty = self._difficulty.score(cut, vector, n_tokens)
        n = len(self.names)
        probs = np.zeros(n)
        nearest = float((self._embeddings @ vector).max()) if len(self._labels) else 0.0
        if self._classes:
            logits = vector @ self._embedding_weights
            # N-grams of the prompt's gist, cut as the examples were (and cheaper).
            buckets, values = ngram_sparse(
                truncate_prompt(cut, EXAMPLE_HEAD_CHARS, EXAMPLE_TAIL_CHARS)
            )
            logits = logits + values @ self._ngram_weights[buckets] + self._bias
            logits = logits + (2 * difficulty - 1) * self._difficulty_weights
            probs[self._classes] = _softmax(logits.astype(np.float64) / self.temperature)
        if self._catch_all is not None:
            other = 1.0 / (1.0 + np.exp((nearest - CATCH_ALL_SIMILARITY) / CATCH_ALL_SHARPNESS))
            probs *= 1.0 - other
            probs[self._catch_all] = other if self._classes else 1.0
        scores = {name: float(p) for name, p in zip(self.names, probs, strict=True)}
        if self._catch_all is None and nearest <= 0.0:
            return Classification(route=None, confidence=0.0, scores=scores, difficulty=difficulty)
        best = int(np.argmax(probs))
        return Classification(
            route=self.names[best],
            confidence=float(probs[best]),
            scores=scores,
            difficulty=difficulty,
        )


LocalRouter = LocalIntentClassifier | FittedIntentClassifier


@functools.cache
def _code_revision() -> str:
    """The fit's code, settings and data files: a blob fitted by other code is not loaded."""
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ("fitted.py", "features.py", "local.py", "difficulty.py", "difficulty.json"):
        digest.update((here / name).read_bytes())
    embedder = default_embedder()
    digest.update(f"{type(embedder).__name__}:{embedder.dim}".encode())
    return digest.hexdigest()


def fit_fingerprint(routes: Sequence[RouteIntent]) -> str:
    """What a fit depends on: the routes' names, intents and examples in order, and the code.

    Two workers with the same fingerprint fit the same model, so one may load the other's.
    """
    content: list[Any] = [_code_revision()]
    content += [[r.name, r.intent, list(r.examples)] for r in routes]
    return hashlib.sha256(json.dumps(content, ensure_ascii=False).encode()).hexdigest()


def build_local_router(routes: Sequence[RouteIntent]) -> LocalRouter:
    """The built-in router for these routes: fitted when any route has examples, else zero-shot."""
    if any(e.strip() for r in routes for e in r.examples):
        return FittedIntentClassifier(routes)
    return LocalIntentClassifier(routes)
