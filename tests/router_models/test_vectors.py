"""The token vectors: read from the shipped file row by row, widened to float32 once per row."""

from __future__ import annotations

import json
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from gateway.router_models.local import (
    _WEIGHTS_FILE,
    StaticEmbedder,
    _wordllama_file,
    default_embedder,
    truncate_prompt,
)
from gateway.router_models.vectors import TensorRows, TokenVectors, VectorFileError

DATA = Path(__file__).resolve().parents[1] / "data"


def _write_safetensors(path: Path, array: np.ndarray, name: str = "embedding.weight") -> None:
    data = array.astype("<f2").tobytes()
    header = json.dumps(
        {name: {"dtype": "F16", "shape": list(array.shape), "data_offsets": [0, len(data)]}}
    ).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


def test_the_shipped_table_is_read_row_by_row_not_loaded() -> None:
    from safetensors.numpy import load_file

    path = _wordllama_file(_WEIGHTS_FILE)
    rows = TensorRows(path, "embedding.weight")
    loaded = load_file(str(path))["embedding.weight"]
    assert rows.dtype == loaded.dtype and rows.shape == loaded.shape
    ids = np.array([0, 1, 31_999, 17, 17, 5000], dtype=np.intp)
    assert np.array_equal(rows[ids], loaded[ids])
    assert np.array_equal(rows[np.arange(0, 32_000, 7)], loaded[::7])
    assert rows[np.zeros(0, dtype=np.intp)].shape == (0, loaded.shape[1])
    with pytest.raises(IndexError):
        rows[np.array([32_000])]
    with pytest.raises(IndexError):
        rows[np.array([-1])]
    # The process-wide embedder holds the file, not an array of the table.
    assert isinstance(default_embedder()._vectors.source, TensorRows)


def test_a_malformed_file_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "good.safetensors"
    _write_safetensors(good, np.arange(12).reshape(4, 3))
    assert np.array_equal(
        TensorRows(good, "embedding.weight")[np.array([3, 0])], [[9, 10, 11], [0, 1, 2]]
    )
    with pytest.raises(VectorFileError):
        TensorRows(good, "other")
    short = tmp_path / "short.safetensors"
    short.write_bytes(good.read_bytes()[:-2])  # the data ends early
    with pytest.raises(VectorFileError):
        TensorRows(short, "embedding.weight")
    (tmp_path / "tiny.safetensors").write_bytes(b"\x01")
    with pytest.raises(VectorFileError):
        TensorRows(tmp_path / "tiny.safetensors", "embedding.weight")
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(VectorFileError):
        TensorRows(huge, "embedding.weight")


@pytest.mark.parametrize("capacity", [0, 1, 5, 1000])
def test_rows_are_exactly_the_widened_source_rows_whatever_the_capacity(capacity: int) -> None:
    rng = np.random.default_rng(7)
    source = rng.standard_normal((50, 8)).astype(np.float16)
    vectors = TokenVectors(source, capacity=capacity)
    seen: set[int] = set()
    for _ in range(20):
        ids = rng.integers(0, 50, int(rng.integers(0, 30))).astype(np.intp)
        seen.update(ids.tolist())
        rows = vectors.rows(ids)
        assert rows.dtype == np.float32 and rows.shape == (len(ids), 8)
        assert np.array_equal(rows, source[ids].astype(np.float32))
    assert vectors.widened == min(capacity, len(seen))


def test_threads_widening_at_once_see_complete_rows() -> None:
    rng = np.random.default_rng(3)
    source = rng.standard_normal((4000, 64)).astype(np.float16)
    vectors = TokenVectors(source, capacity=3000)
    errors: list[str] = []

    def work(seed: int) -> None:
        local = np.random.default_rng(seed)
        for _ in range(200):
            ids = local.integers(0, 4000, 40).astype(np.intp)
            if not np.array_equal(vectors.rows(ids), source[ids].astype(np.float32)):
                errors.append(f"thread {seed}")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert vectors.widened == 3000


def test_embeddings_are_bit_identical_to_widening_the_gathered_float16_rows() -> None:
    from safetensors.numpy import load_file

    embedder = StaticEmbedder.from_wordllama()
    source = load_file(str(_wordllama_file(_WEIGHTS_FILE)))["embedding.weight"]
    prompts = [json.loads(line)["prompt"] for line in (DATA / "snips.jsonl").open()][:300]
    prompts += ["", "héllo wörld ✓ 中文", "\x00\x00 nul", "x" * 5000]
    vectors, counts = embedder.embed_many([truncate_prompt(p) for p in prompts])
    for prompt, batch_vector, count in zip(prompts, vectors, counts, strict=True):
        cut = truncate_prompt(prompt)
        ids = np.asarray(embedder.token_ids(cut), dtype=np.intp)
        vector, n = embedder.embed(cut)
        assert n == count == len(ids)
        if not len(ids):
            assert not vector.any()
            continue
        expected = source[ids].astype(np.float32).sum(axis=0)
        expected /= np.linalg.norm(expected)
        assert np.array_equal(vector, expected)
        assert np.array_equal(batch_vector, expected)


def test_prompts_are_tokenised_on_the_calling_thread_by_the_fast_path_with_the_same_ids() -> None:
    import os

    embedder = StaticEmbedder.from_wordllama()
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    assert embedder._fast
    tokenizer = embedder._tokenizer
    prompts = [json.loads(line)["prompt"] for line in (DATA / "mmlu_subjects.jsonl").open()][:200]
    prompts += ["", " ", "héllo wörld ✓ 中文", "a\x00b", "  two  spaces ", "x" * 3000]
    threads = len(os.listdir("/proc/self/task"))
    for prompt in prompts:
        assert embedder.token_ids(prompt) == tokenizer.encode(prompt, add_special_tokens=False).ids
    assert len(os.listdir("/proc/self/task")) == threads  # no tokenizer thread pool started


def _shape_features_with_lookup_tables(text: str, n_tokens: int) -> np.ndarray:
    """shape_features as it was first written (numpy lookup tables), the reference."""
    digits_table = np.zeros(256, dtype=np.float32)
    digits_table[list(b"0123456789")] = 1.0
    symbols_table = np.zeros(256, dtype=np.float32)
    symbols_table[list(b"()[]{}=<>+-*/_%:;")] = 1.0
    data = np.frombuffer(text.encode("utf-8", "ignore"), dtype=np.uint8)
    length = max(len(data), 1)
    digits = float(digits_table[data].sum()) / length
    newlines = text.count("\n") / length * 40
    symbols = float(symbols_table[data].sum()) / length
    return np.array(
        [np.log1p(n_tokens) / 5.0, digits * 5.0, min(newlines, 2.0), symbols * 5.0],
        dtype=np.float32,
    )


def test_shape_features_count_exactly_as_the_lookup_tables_did() -> None:
    from gateway.router_models.features import shape_features

    texts = [json.loads(line)["prompt"] for line in (DATA / "support.jsonl").open()]
    texts += ["", "\x00", "\x00" * 10, "é中🙂 {x} = 1 + 2;", "\n" * 50, "9" * 100_000, "a:b" * 999]
    for n, text in enumerate(texts):
        assert np.array_equal(
            shape_features(text, n), _shape_features_with_lookup_tables(text, n)
        ), text[:80]
