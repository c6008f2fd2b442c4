"""The fit's n-gram products, built a block of buckets at a time from sparse rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gateway.router_models.features import (
    N_BUCKETS,
    ngram_gram,
    ngram_matrix,
    ngram_project,
    ngram_rows,
)

DATA = Path(__file__).resolve().parents[1] / "data"

HOSTILE = [
    "",
    " ",
    "ab",
    "\x00\x00\x00 nul \x00",
    "héllo wörld ✓ 中文 🙂" * 20,
    "x" * 20_000,
    "\t\n\r  spaces \n\n",
    "\udcff lone surrogate",
]


def test_the_blocked_products_equal_the_dense_ones_on_real_and_hostile_texts() -> None:
    texts = [json.loads(line)["prompt"] for line in (DATA / "snips.jsonl").open()][:120]
    texts += HOSTILE
    rows = ngram_rows(texts)
    for buckets, _ in rows:
        assert np.all(np.diff(buckets) > 0)  # sorted and distinct: the blocks slice them
        assert not len(buckets) or (buckets[0] >= 0 and buckets[-1] < N_BUCKETS)
    dense = ngram_matrix(texts)
    assert np.allclose(ngram_gram(rows), dense @ dense.T, atol=1e-5)
    coefficients = np.random.default_rng(5).standard_normal((len(texts), 7)).astype(np.float32)
    assert np.allclose(ngram_project(rows, coefficients), dense.T @ coefficients, atol=1e-5)
    assert ngram_gram([]).shape == (0, 0)
    assert ngram_project([], np.zeros((0, 3), dtype=np.float32)).shape == (N_BUCKETS, 3)
