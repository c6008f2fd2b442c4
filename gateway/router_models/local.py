"""The built-in local router model, ``intent-classifier``.

It runs in the gateway process, on the CPU and offline. A prompt is turned into
one vector by averaging static token embeddings (WordLlama's ``l2_supercat``
256-d table, which ships inside the ``wordllama`` wheel, so nothing is
downloaded at run time and no neural network runs per request) and compared
with each route:

1. **Intent** (zero-shot): cosine similarity with the whole intent sentence,
   blended with a soft maximum over its phrases ("disputes, refunds,
   escalations" match separately), so a list-like intent works; plus a small
   lexical term, the share of the prompt's tokens that occur in the intent
   sentence (the token ids the embedding already has, so it costs a lookup),
   so a prompt that uses the intent's own words ("playlist", "weather") gets
   credit the averaged vectors blur.
2. **Examples** (when a route has them): a soft maximum of the similarities to
   its example prompts, blended with the intent score.
3. **Difficulty**: topic vectors cannot tell "easy" from "hard", which is the
   point of an efficient/reasoning split. Routes whose intent says *simple,
   short, quick...* or *multi-step, careful, complex...* get a bonus for
   prompts whose length and wording point the same way; with examples, the
   examples' own difficulty refines it.

A route whose intent only says "anything else" (or "other", "fallback",
"default"...) is a catch-all: it scores a fixed baseline, so it wins exactly
when no specific route fits better.

The per-route logits go through a softmax with a temperature fitted on the
public evaluation sets in ``tests/data`` (see ``docs/routing-data.md``), so
``confidence`` (the winning probability) is roughly calibrated and a threshold
on it means something.

Pure Python + numpy (+ ``tokenizers`` to read the shipped tokenizer; the
vectors are read from their safetensors file by ``vectors.py``); no Django.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gateway.router_models.vectors import TensorRows, TokenVectors

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# Long prompts are cut to their head and tail: the task is nearly always stated
# at the start or at the very end, and tokenising costs ~0.45 µs per character.
HEAD_CHARS = 1500
TAIL_CHARS = 300
# Examples only need their gist, and a config snapshot must compile fast.
EXAMPLE_HEAD_CHARS = 400
EXAMPLE_TAIL_CHARS = 100
CUE_HEAD_CHARS = 400
CUE_TAIL_CHARS = 200

# Scoring knobs, chosen on the even lines of the evaluation sets in tests/data
# and checked on the odd ones (scripts/build_eval_sets.py builds them).
PHRASE_WEIGHT = 0.5  # whole intent vs. soft maximum over its phrases
INTENT_WEIGHT = 0.5  # with examples: intent score vs. examples score
SOFTMAX_SHARPNESS = 20.0  # of the soft maximum over phrases and examples
DIFFICULTY_WEIGHT = 0.15
# Of the lexical term: (prompt tokens found in the intent) / sqrt(prompt tokens x distinct
# intent tokens), a cosine of token bags. Chosen on the dev lines of snips, mmlu_subjects,
# easy_hard, support and mmlu_families (docs/routing.md).
LEXICAL_WEIGHT = 0.1
CATCH_ALL_SIMILARITY = 0.1  # about where unrelated and weakly related prompts meet
TEMPERATURE = 0.05
# The prompt's difficulty: the learned score (``difficulty.py``, mapped to
# -1.5..1.5) or, with False, the length-and-wording heuristic below.
LEARNED_DIFFICULTY = False

# Below this best similarity nothing matches at all (and no catch-all exists).
NO_MATCH_SIMILARITY = 0.0


# Wording that says a task is easy or hard: in an intent it tells which routes
# want which prompts; in a prompt it nudges its difficulty. Word sets, not one
# big regular expression: they cost a few microseconds instead of a tenth of a ms.
@dataclass(frozen=True)
class _Cues:
    words: frozenset[str]
    prefixes: tuple[str, ...]
    pairs: frozenset[tuple[str, str]]

    def count(self, words: list[str]) -> int:
        pairs = zip(["", *words], words, strict=False)
        return sum(
            w in self.words or w.startswith(self.prefixes) or pair in self.pairs
            for w, pair in zip(words, pairs, strict=True)
        )


_EASY = _Cues(
    words=frozenset(
        "simple short quick quickly brief briefly easy greeting greetings casual draft drafts "
        "basic trivial faq faqs chitchat".split()
    ),
    prefixes=("summar", "rewrit", "reword", "paraphras"),
    pairs=frozenset({("small", "talk"), ("chit", "chat"), ("one", "liner"), ("one", "liners")}),
)
_HARD = _Cues(
    words=frozenset(
        "complex complicated careful carefully hard difficult advanced detailed proof proofs prove "
        "rigorous rigorously deep deeply expert tricky derive derivation derivations dispute "
        "disputes multistep".split()
    ),
    prefixes=("reason", "analy"),
    pairs=frozenset(
        {
            ("multi", "step"),
            ("multi", "steps"),
            ("in", "depth"),
            ("edge", "case"),
            ("edge", "cases"),
            ("step", "by"),
        }
    ),
)
_WORD = re.compile(r"[a-z]+")


def _cue_counts(text: str) -> tuple[int, int]:
    """How many easy and how many hard cue words ``text`` has."""
    words = _WORD.findall(text.lower())
    return _EASY.count(words), _HARD.count(words)


_CATCH_ALL = re.compile(
    r"^(?:(?:anything|everything|all|any)(?: other| else)*|others?|default|fallback"
    r"|catch[- ]?all|general|misc(?:ellaneous)?|none of the above)"
    r"(?: (?:requests?|prompts?|questions?|tasks?|topics?|traffic))?$"
)
_PHRASE_SPLIT = re.compile(r"[:;,.()/]|\b(?:and|or|such as|e\.g|like)\b", re.IGNORECASE)
# WordLlama's shipped files, inside the installed wheel.
_WEIGHTS_FILE = ("weights", "l2_supercat_256.safetensors")
_TOKENIZER_FILE = ("tokenizers", "l2_supercat_tokenizer_config.json")


class RouterModelUnavailable(RuntimeError):
    """The static embeddings could not be loaded (the ``wordllama`` wheel is missing)."""


@dataclass(frozen=True)
class RouteIntent:
    name: str
    intent: str
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class Classification:
    route: str | None  # None: nothing matches at all (the gateway takes the default)
    confidence: float  # probability of ``route`` in [0, 1]; 0.0 when route is None
    scores: dict[str, float]  # probability per route, summing to 1; {} for an empty prompt
    difficulty: float | None = None  # P(the prompt is hard), 0..1; None when not scored


def truncate_prompt(text: str, head: int = HEAD_CHARS, tail: int = TAIL_CHARS) -> str:
    """The head and tail of a long prompt, joined by a newline."""
    if len(text) <= head + tail:
        return text
    return text[:head] + "\n" + text[-tail:]


def is_catch_all(intent: str) -> bool:
    """True for an empty intent or one that only says "anything else", "other"..."""
    words = re.sub(r"[^a-z -]+", " ", intent.lower())
    return _CATCH_ALL.match(" ".join(words.split())) is not None or not words.strip()


def intent_difficulty(intent: str) -> float:
    """-1 (the intent asks for easy prompts) .. +1 (hard ones); 0 when it says neither."""
    easy, hard = _cue_counts(intent)
    return 0.0 if easy + hard == 0 else (hard - easy) / (hard + easy)


def prompt_difficulty(text: str, n_tokens: int) -> float:
    """About -1 (a few words) .. +1.5 (long, or worded as a hard task).

    Length carries most of it (24 tokens is neutral); an explicit easy or hard
    wording in the prompt moves it by half a step. Only the prompt's start and
    end are searched for wording: that is where a task is stated, and scanning
    all of a long prompt would cost more than the rest of the decision.
    """
    length = math.tanh((math.log2(max(n_tokens, 1)) - math.log2(24)) / 2)
    if len(text) > CUE_HEAD_CHARS + CUE_TAIL_CHARS:
        text = text[:CUE_HEAD_CHARS] + " " + text[-CUE_TAIL_CHARS:]
    easy, hard = _cue_counts(text)
    wording = 0.5 * ((hard > easy) - (easy > hard))
    return max(-1.5, min(1.5, length + wording))


def intent_phrases(intent: str) -> list[str]:
    parts = [p.strip() for p in _PHRASE_SPLIT.split(intent)]
    phrases = [p for p in parts if len(p) > 2]
    return phrases or [intent]


def _wordllama_file(parts: tuple[str, str]) -> Path:
    # find_spec locates the package without importing it: wordllama's own
    # modules configure root logging on import, which a gateway must not get.
    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise RouterModelUnavailable(
            "the local router model needs the 'wordllama' package (it ships the vectors)"
        )
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise RouterModelUnavailable(f"wordllama does not ship {path.name}")
    return path


class StaticEmbedder:
    """Mean-pooled static token embeddings, L2-normalised."""

    def __init__(self, tokenizer: Tokenizer, table: np.ndarray | TensorRows) -> None:
        self._tokenizer = tokenizer
        # The shipped float16 rows (read from the file by from_wordllama), widened to
        # float32 once per row on first use: sums are exactly what a float32 table gives.
        self._vectors = TokenVectors(table)
        self.dim = self._vectors.shape[1]
        # encode_batch_fast skips the character offsets that encode() computes and nothing
        # here reads: 25% less CPU per prompt (125 against 168 us at the p50 mmlu_subjects
        # prompt). Only without the tokenizers' thread pool, which would run even a batch of
        # one on another thread (a hand-off per decision); from_wordllama turns it off.
        self._fast = hasattr(tokenizer, "encode_batch_fast") and os.environ.get(
            "TOKENIZERS_PARALLELISM", ""
        ).lower() in ("false", "0", "off", "no")

    @classmethod
    def from_wordllama(cls) -> StaticEmbedder:
        # The gateway tokenises one prompt at a time on the calling thread: no rayon pool
        # (the variable is read by the tokenizers library at every call). An operator's
        # own setting wins.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - both are wordllama dependencies
            raise RouterModelUnavailable(str(exc)) from exc
        tokenizer = Tokenizer.from_file(str(_wordllama_file(_TOKENIZER_FILE)))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        # This tokenizer has no pre-tokenizer, so BPE's word cache (10,000 entries by default)
        # keys whole prompts: with a different prompt on every request it grew the worker by
        # ~39 MiB and never hit. The gateway caches decisions per prompt itself (decision.py).
        if hasattr(tokenizer.model, "_resize_cache"):
            tokenizer.model._resize_cache(0)
        try:
            table = TensorRows(_wordllama_file(_WEIGHTS_FILE), "embedding.weight")
        except (OSError, ValueError) as exc:
            raise RouterModelUnavailable(str(exc)) from exc
        return cls(tokenizer, table)

    def token_ids(self, text: str) -> list[int]:
        if self._fast:
            return self._tokenizer.encode_batch_fast([text], add_special_tokens=False)[0].ids
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def embed(self, text: str) -> tuple[np.ndarray, int]:
        """The unit vector of ``text`` (zeros when it has no tokens) and its token count."""
        return self.embed_ids(self.token_ids(text))

    def embed_ids(self, ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, int]:
        """``embed`` for a text already tokenised to ``ids``."""
        if not len(ids):
            return np.zeros(self.dim, dtype=np.float32), 0
        vector = self._vectors.rows(np.asarray(ids, dtype=np.intp)).sum(axis=0)
        norm = float(np.linalg.norm(vector))
        return (vector / norm if norm > 0 else vector), len(ids)

    def embed_many(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """Unit vectors of ``texts`` (one row each) and their token counts."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        counts = []
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        for i, encoding in enumerate(encodings):
            ids = encoding.ids
            counts.append(len(ids))
            if ids:
                vector = self._vectors.rows(np.asarray(ids, dtype=np.intp)).sum(axis=0)
                norm = float(np.linalg.norm(vector))
                out[i] = vector / norm if norm > 0 else vector
        return out, counts


_embedder: StaticEmbedder | None = None
_embedder_lock = threading.Lock()


def default_embedder() -> StaticEmbedder:
    """The process-wide embedder: loaded once (the tokenizer ~15 MiB; vectors.py), then shared."""
    global _embedder
    if _embedder is None:
        with _embedder_lock:
            if _embedder is None:
                _embedder = StaticEmbedder.from_wordllama()
    return _embedder


def warm_up() -> None:
    """Load the vectors now (e.g. at process start) rather than on the first decision."""
    default_embedder()


def _soft_max_by_group(sims: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """log(mean(exp(k*s)))/k within each group: between the mean and the max."""
    shifted = np.exp(SOFTMAX_SHARPNESS * (sims - 1.0))
    sums = np.add.reduceat(shifted, starts)
    counts = np.diff(np.append(starts, sims.shape[0]))
    return 1.0 + np.log(sums / counts) / SOFTMAX_SHARPNESS


class LocalIntentClassifier:
    """Routes a prompt to one of ``routes`` by meaning. Build once per config snapshot."""

    def __init__(
        self, routes: Sequence[RouteIntent], *, embedder: StaticEmbedder | None = None
    ) -> None:
        names = [r.name for r in routes]
        if len(set(names)) != len(names):
            raise ValueError(f"route names must be unique: {names}")
        self.routes = tuple(routes)
        self.names = tuple(names)
        self._embedder = embedder or default_embedder()
        self._n = len(routes)
        self._catch_all = np.array([is_catch_all(r.intent) for r in routes], dtype=bool)

        phrase_texts: list[str] = []
        phrase_starts: list[int] = []
        example_texts: list[str] = []
        example_starts: list[int] = []
        has_examples: list[bool] = []
        for route in routes:
            phrase_starts.append(len(phrase_texts))
            phrase_texts.extend(intent_phrases(route.intent))
            examples = [e for e in route.examples if e.strip()]
            has_examples.append(bool(examples))
            example_starts.append(len(example_texts))
            # A route without examples gets its intent as its one "example" so the
            # grouped arithmetic stays uniform; the blend below ignores it.
            example_texts.extend(examples or [route.intent])
        # Lexical term: the intents' distinct tokens (sorted ids) and, for each, a row of
        # 1/sqrt(distinct tokens of the intent) in the routes whose intent has it. A
        # catch-all's column stays empty.
        weights: dict[int, np.ndarray] = {}
        for column, route in enumerate(routes):
            if self._catch_all[column]:
                continue
            distinct = set(self._embedder.token_ids(route.intent))
            for token in distinct:
                row = weights.setdefault(token, np.zeros(self._n, dtype=np.float32))
                row[column] = 1.0 / math.sqrt(len(distinct))
        self._lexical_tokens = np.array(sorted(weights), dtype=np.intp)
        self._lexical_table = np.zeros((len(weights), self._n), dtype=np.float32)
        for i, token in enumerate(self._lexical_tokens):
            self._lexical_table[i] = weights[int(token)]
        texts = [r.intent for r in routes] + phrase_texts + example_texts
        cut = [truncate_prompt(t, EXAMPLE_HEAD_CHARS, EXAMPLE_TAIL_CHARS) for t in texts]
        # One matrix for everything a prompt is compared with: a single mat-vec.
        self._matrix, counts = self._embedder.embed_many(cut)
        # Token counts of the whole texts, estimated where they were cut.
        counts = [
            round(n * len(t) / len(c)) if c else n
            for n, t, c in zip(counts, texts, cut, strict=True)
        ]
        self._n_phrases = len(phrase_texts)
        self._phrase_starts = np.array(phrase_starts, dtype=np.intp)
        self._example_starts = np.array(example_starts, dtype=np.intp)
        self._has_examples = np.array(has_examples, dtype=bool)

        difficulty = np.array([intent_difficulty(r.intent) for r in routes], dtype=np.float64)
        if self._has_examples.any():
            # The examples show how hard each route's traffic really is: their
            # mean difficulty against the other routes', averaged with the intent's.
            offset = self._n + self._n_phrases
            seen = np.full(self._n, np.nan)
            for k in np.flatnonzero(self._has_examples):
                lo = offset + example_starts[k]
                hi = offset + (example_starts[k + 1] if k + 1 < self._n else len(example_texts))
                seen[k] = np.mean([prompt_difficulty(cut[i], counts[i]) for i in range(lo, hi)])
            centred = np.clip(seen - np.nanmean(seen), -1.0, 1.0)
            difficulty = np.where(self._has_examples, (difficulty + centred) / 2, difficulty)
        self._difficulty = difficulty
        from gateway.router_models.difficulty import default_difficulty_model

        self._difficulty_model = default_difficulty_model()

    def _lexical_score(self, tokens: np.ndarray) -> np.ndarray:
        """Per route: prompt tokens found in its intent / sqrt(prompt tokens x intent's tokens)."""
        keys = self._lexical_tokens
        if not len(keys) or not len(tokens):
            return np.zeros(self._n, dtype=np.float32)
        at = np.minimum(np.searchsorted(keys, tokens), len(keys) - 1)
        found = at[keys[at] == tokens]
        counts = np.bincount(found, minlength=len(keys)).astype(np.float32)
        out: np.ndarray = counts @ self._lexical_table / math.sqrt(len(tokens))
        return out

    def similarities(self, text: str) -> tuple[np.ndarray, np.ndarray, float] | None:
        """Per-route semantic scores, logits and prompt difficulty; None if no tokens."""
        result = self._score(text)
        return None if result is None else result[:3]

    def _score(self, text: str) -> tuple[np.ndarray, np.ndarray, float, float] | None:
        """Semantic scores, logits, difficulty (-1.5..1.5) and P(hard); None if no tokens."""
        if self._n == 0 or not text.strip():
            return None
        cut = truncate_prompt(text)
        ids = np.asarray(self._embedder.token_ids(cut), dtype=np.intp)
        vector, n_tokens = self._embedder.embed_ids(ids)
        if n_tokens == 0:
            return None
        lexical = self._lexical_score(ids) if LEXICAL_WEIGHT else 0.0
        if len(cut) < len(text):  # estimate the length the cut removed
            n_tokens = round(n_tokens * len(text) / len(cut))
        sims = self._matrix @ vector
        n, p = self._n, self._n_phrases
        whole = sims[:n]
        phrases = _soft_max_by_group(sims[n : n + p], self._phrase_starts)
        intent = (1 - PHRASE_WEIGHT) * whole + PHRASE_WEIGHT * phrases + LEXICAL_WEIGHT * lexical
        intent = np.where(self._catch_all, CATCH_ALL_SIMILARITY, intent)
        examples = _soft_max_by_group(sims[n + p :], self._example_starts)
        semantic = np.where(
            self._has_examples, INTENT_WEIGHT * intent + (1 - INTENT_WEIGHT) * examples, intent
        )
        hard = self._difficulty_model.score(cut, vector, n_tokens)
        if LEARNED_DIFFICULTY:
            difficulty = 3.0 * (hard - 0.5)
        else:
            difficulty = prompt_difficulty(cut, n_tokens)
        logits = semantic + DIFFICULTY_WEIGHT * self._difficulty * difficulty
        return semantic, logits, difficulty, hard

    def classify(self, text: str) -> Classification:
        result = self._score(text)
        if result is None:
            return Classification(route=None, confidence=0.0, scores={})
        semantic, logits, _, hard = result
        z = logits / TEMPERATURE
        probs = np.exp(z - z.max())
        probs /= probs.sum()
        scores = {name: float(p) for name, p in zip(self.names, probs, strict=True)}
        if float(semantic.max()) <= NO_MATCH_SIMILARITY:
            return Classification(route=None, confidence=0.0, scores=scores, difficulty=hard)
        best = int(np.argmax(probs))
        return Classification(
            route=self.names[best], confidence=float(probs[best]), scores=scores, difficulty=hard
        )
