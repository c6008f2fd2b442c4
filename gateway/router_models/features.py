"""Text features for the fitted router model and the difficulty model (numpy only).

Two views of a text, both cheap enough for the request path:

- **static embedding**: the mean of WordLlama's token vectors, L2-normalised
  (``local.StaticEmbedder``), which carries meaning ("refund" near "chargeback");
- **hashed character n-grams**: 3-, 4- and 5-grams of the lower-cased text,
  hashed into ``2**HASH_BITS`` buckets, log-scaled counts, L2-normalised, which
  carry wording, names and formats that a 256-d average blurs.

Hashing is vectorised (a polynomial hash over a ``uint8`` view of the text), so
a 1,800-character prompt costs tens of microseconds, not a Python loop per n-gram.
"""

from __future__ import annotations

import re

import numpy as np

HASH_BITS = 14
N_BUCKETS = 1 << HASH_BITS
NGRAM_SIZES = (3, 4, 5)
_MULTIPLIER = np.uint64(0x100000001B3)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_SPACES = re.compile(r"\s+")


def ngram_buckets(text: str) -> np.ndarray:
    """The bucket of every character 3-, 4- and 5-gram of ``text`` (lower-cased, spaces folded)."""
    folded = " " + _SPACES.sub(" ", text.lower()).strip() + " "
    data = np.frombuffer(folded.encode("utf-8", "ignore"), dtype=np.uint8).astype(np.uint64)
    parts = []
    with np.errstate(over="ignore"):
        # Rolling: the 4-gram hashes extend the 3-gram ones by one byte, and so on.
        h = data
        for n in range(1, max(NGRAM_SIZES) + 1):
            if n > 1:
                h = h[:-1] * _MULTIPLIER + data[n - 1 :]
            if n in NGRAM_SIZES and len(h):
                parts.append(((h + np.uint64(n)) * _MIX) >> np.uint64(64 - HASH_BITS))
    if not parts:
        return np.zeros(0, dtype=np.intp)
    return np.concatenate(parts).astype(np.intp)


def ngram_vector(text: str) -> np.ndarray:
    """Log-scaled n-gram counts in ``N_BUCKETS`` buckets, L2-normalised (zeros if none)."""
    counts = np.bincount(ngram_buckets(text), minlength=N_BUCKETS).astype(np.float32)
    np.log1p(counts, out=counts)
    norm = float(np.linalg.norm(counts))
    return counts / norm if norm > 0 else counts


def ngram_sparse(text: str) -> tuple[np.ndarray, np.ndarray]:
    """The same vector as ``ngram_vector``, as (bucket indices, values) of its non-zeros."""
    buckets, counts = np.unique(ngram_buckets(text), return_counts=True)
    values = np.log1p(counts.astype(np.float32))
    norm = float(np.linalg.norm(values))
    return buckets, (values / norm if norm > 0 else values)


def ngram_matrix(texts: list[str]) -> np.ndarray:
    out = np.zeros((len(texts), N_BUCKETS), dtype=np.float32)
    for i, text in enumerate(texts):
        out[i] = ngram_vector(text)
    return out


# A fit's texts as (buckets, values) rows, and their dense products built this many buckets at a
# time: the dense texts x 16,384 matrix was 10.3 MiB for 165 texts (37.5 MiB for 600), held for
# the whole fit, the larger part of a refit's peak in the worker; a block is 1/8 of it.
NGRAM_BLOCK = 2048
SparseRows = list[tuple[np.ndarray, np.ndarray]]


def ngram_rows(texts: list[str]) -> SparseRows:
    """Each text's n-gram vector as ``ngram_sparse`` gives it (buckets sorted)."""
    return [ngram_sparse(text) for text in texts]


def _ngram_block(rows: SparseRows, lo: int, hi: int) -> np.ndarray:
    out = np.zeros((len(rows), hi - lo), dtype=np.float32)
    for i, (buckets, values) in enumerate(rows):
        a, b = np.searchsorted(buckets, (lo, hi))
        out[i, buckets[a:b] - lo] = values[a:b]
    return out


def ngram_gram(rows: SparseRows) -> np.ndarray:
    """The rows' n-gram vectors' dot products (n x n), ``ngram_matrix(t) @ ngram_matrix(t).T``."""
    gram = np.zeros((len(rows), len(rows)), dtype=np.float32)
    for lo in range(0, N_BUCKETS, NGRAM_BLOCK):
        block = _ngram_block(rows, lo, lo + NGRAM_BLOCK)
        gram += block @ block.T
    return gram


def ngram_project(rows: SparseRows, coefficients: np.ndarray) -> np.ndarray:
    """``ngram_matrix(t).T @ coefficients``: (N_BUCKETS x k) weights from per-text coefficients."""
    out = np.zeros((N_BUCKETS, coefficients.shape[1]), dtype=np.float32)
    for lo in range(0, N_BUCKETS, NGRAM_BLOCK):
        out[lo : lo + NGRAM_BLOCK] = _ngram_block(rows, lo, lo + NGRAM_BLOCK).T @ coefficients
    return out


# Every byte but the digits, and every byte but the symbols: ``bytes.translate`` deleting
# them leaves the digits (symbols), counted in C (a third of the time of a lookup table).
_NOT_DIGITS = bytes(b for b in range(256) if b not in b"0123456789")
_NOT_SYMBOLS = bytes(b for b in range(256) if b not in b"()[]{}=<>+-*/_%:;")


def shape_features(text: str, n_tokens: int) -> np.ndarray:
    """Length and make-up of a prompt (no words): log length, digits, newlines, symbols."""
    data = text.encode("utf-8", "ignore")
    length = max(len(data), 1)
    digits = len(data.translate(None, _NOT_DIGITS)) / length
    newlines = text.count("\n") / length * 40
    symbols = len(data.translate(None, _NOT_SYMBOLS)) / length
    return np.array(
        [np.log1p(n_tokens) / 5.0, digits * 5.0, min(newlines, 2.0), symbols * 5.0],
        dtype=np.float32,
    )
