"""A fitted router as bytes: loaded back exactly, and refused when it is not what was stored."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.router_models import blob
from gateway.router_models.fitted import FittedIntentClassifier
from gateway.router_models.local import RouteIntent

KEY = b"k" * 32
ROUTES = [
    RouteIntent(
        "cooking",
        "Questions about cooking.",
        ("How long should I boil an egg?", "Give me a recipe for tomato soup.", "Roast a chicken?"),
    ),
    RouteIntent(
        "football",
        "Questions about football.",
        ("Who won the last World Cup?", "Explain the offside rule.", "How many players?"),
    ),
    RouteIntent("other", "Anything else."),
]
PROMPTS = ["How do I bake bread?", "When does the Premier League start?", "Tell me about tax law."]


@pytest.fixture(scope="module")
def fitted() -> FittedIntentClassifier:
    return FittedIntentClassifier(ROUTES)


def test_a_stored_model_loads_back_with_the_same_decisions(fitted):
    loaded = FittedIntentClassifier.from_blob(ROUTES, fitted.to_blob(KEY), KEY)
    assert loaded.temperature == fitted.temperature
    for prompt in PROMPTS:
        assert loaded.classify(prompt) == fitted.classify(prompt)


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def test_a_corrupt_or_foreign_blob_is_refused(fitted):
    data = fitted.to_blob(KEY)
    broken = {
        "another key": (data, b"x" * 32),
        "a byte flipped in the weights": (flipped(data, len(data) - 5), KEY),
        "a byte flipped in the header": (flipped(data, 45), KEY),
        "truncated": (data[: len(data) // 2], KEY),
        "empty": (b"", KEY),
        "another magic": (b"XXXX" + data[4:], KEY),
        "another format": (data[:4] + bytes([9]) + data[5:], KEY),
        "too big": (data + b"\0" * blob.MAX_BYTES, KEY),
    }
    for what, (wrong, key) in broken.items():
        with pytest.raises(blob.BlobRefused):
            FittedIntentClassifier.from_blob(ROUTES, wrong, key)
            pytest.fail(f"{what}: loaded")


def test_a_blob_for_other_routes_is_refused(fitted):
    other = [ROUTES[1], ROUTES[0], ROUTES[2]]  # same routes, other order: other classes
    with pytest.raises(blob.BlobRefused, match="other routes"):
        FittedIntentClassifier.from_blob(other, fitted.to_blob(KEY), KEY)


def signed(fitted: FittedIntentClassifier, **changes: object) -> bytes:
    """A blob signed with the right key whose contents are wrong (a writer that has the key)."""
    meta, arrays = blob.unpack(KEY, fitted.to_blob(KEY))
    for name, value in changes.items():
        if name in arrays:
            arrays[name] = value  # type: ignore[assignment]
        else:
            meta[name] = value
    return blob.pack(KEY, meta, arrays)


def test_a_signed_blob_with_wrong_shapes_or_values_is_refused(fitted):
    _, arrays = blob.unpack(KEY, fitted.to_blob(KEY))
    nan_bias = arrays["bias"].copy()
    nan_bias[0] = np.nan
    bad = {
        "bias": nan_bias,
        "embedding_weights": arrays["embedding_weights"][:, :1],
        "ngram_rows": arrays["ngram_rows"][::-1].copy(),
        "labels": arrays["labels"] + 5,
        "temperature": -1.0,
        "fingerprint": "0" * 64,
    }
    for name, value in bad.items():
        with pytest.raises(blob.BlobRefused):
            FittedIntentClassifier.from_blob(ROUTES, signed(fitted, **{name: value}), KEY)
            pytest.fail(f"{name}: loaded")
