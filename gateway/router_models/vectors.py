"""The router model's token vectors: read from the shipped file, widened to float32 on first use.

WordLlama ships its 32,000 x 256 table as float16 in a safetensors file (16 MB).
It was the worker's largest single allocation and a tenth of a decision's time:

- **Memory**: ``safetensors.numpy.load_file`` reads the file into a buffer and
  copies it into the array, so loading took the worker's peak 27 MiB up for a
  16 MiB table it kept. Here nothing is loaded: a row is read from the file
  (``TensorRows``) when a prompt first uses it.
- **Time**: numpy widens float16 with no SIMD path (about 1.8 ns a value, so
  0.33 ms for a 700-token prompt before the sum). A row is widened once, the
  first time a prompt uses it, into a float32 table on anonymous zero pages
  (``mmap``), and a decision gathers float32 rows (5-7x faster than gathering
  and widening). At most ``WIDE_ROWS`` rows (8,192 = 8 MiB) are kept: the first
  ones seen, which are mostly the frequent tokens (95.6% of the tokens of the
  second half of tests/data's prompts, shuffled, came from the first 8,192 rows
  the first half used); a later row is widened per call, as before.

The rows are exactly the float16 values (widening is exact), so embeddings,
and every decision, are bit-identical to widening the gathered rows per call.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
from pathlib import Path

import numpy as np

# Rows kept widened to float32 (1 KiB each at 256-d): 8 MiB at most per worker.
WIDE_ROWS = 8192
_DTYPES: dict[str, np.dtype[np.floating]] = {"F16": np.dtype("<f2"), "F32": np.dtype("<f4")}


class VectorFileError(ValueError):
    """The safetensors file is not what the router model expects."""


class TensorRows:
    """The rows of one 2-d tensor of a safetensors file, read from the file when asked for.

    Nothing is loaded or mapped: ``rows[ids]`` reads each row with ``os.pread``
    (512 bytes for a float16 row of 256), so the process holds no copy of the
    table and no mapped pages of it (a memory map would: the kernel maps the
    16 pages around every page a token touches, 10 MiB of the file after a
    minute of varied prompts). The format: an 8-byte little-endian header
    length, a JSON header giving each tensor's dtype, shape and byte range, the data.
    """

    def __init__(self, path: Path, name: str) -> None:
        self._file = path.open("rb", buffering=0)
        try:
            raw = self._file.read(8)
            if len(raw) != 8:
                raise VectorFileError(f"{path.name}: too short for a safetensors file")
            (length,) = struct.unpack("<Q", raw)
            if length > 100_000_000:
                raise VectorFileError(f"{path.name}: a header of {length} bytes")
            header = json.loads(self._file.read(length))
            info = header.get(name) if isinstance(header, dict) else None
            if not isinstance(info, dict) or info.get("dtype") not in _DTYPES:
                raise VectorFileError(f"{path.name}: no float16/float32 tensor {name!r}")
            self.dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(n) for n in info["shape"])
            begin, end = (int(n) for n in info["data_offsets"])
            if len(shape) != 2 or end - begin != shape[0] * shape[1] * self.dtype.itemsize:
                raise VectorFileError(f"{path.name}: {name!r} is {shape} in {end - begin} bytes")
            self._start = 8 + length + begin
            if self._start + end - begin > os.fstat(self._file.fileno()).st_size:
                raise VectorFileError(f"{path.name}: {name!r} runs past the end of the file")
        except BaseException:
            self._file.close()
            raise
        self.shape = (shape[0], shape[1])
        self.ndim = 2
        self.size = shape[0] * shape[1]
        self._row_bytes = shape[1] * self.dtype.itemsize

    def __getitem__(self, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` (a 1-d integer array), in the file's dtype."""
        fd, size, start = self._file.fileno(), self._row_bytes, self._start
        rows = self.shape[0]
        chunks = []
        for i in ids.tolist():
            if not 0 <= i < rows:
                raise IndexError(f"row {i} of {rows}")
            chunks.append(os.pread(fd, size, start + i * size))
        data = b"".join(chunks)
        if len(data) != len(chunks) * size:
            raise VectorFileError("the vectors file changed while it was read")
        out: np.ndarray = np.frombuffer(data, dtype=self.dtype).reshape(len(chunks), self.shape[1])
        return out

    def close(self) -> None:
        self._file.close()


class TokenVectors:
    """Float32 rows of a (vocabulary x dim) table, widened from ``source`` on first use.

    ``source`` is a ``TensorRows`` or any 2-d array (``source[ids]`` gives rows).

    At most ``capacity`` rows are kept widened, the first ones seen (the
    common tokens: a prompt's first tokens are mostly the frequent ones); a
    row past that is widened per call, as before, so memory has a bound
    whatever the traffic's vocabulary.
    """

    def __init__(self, source: np.ndarray | TensorRows, capacity: int = WIDE_ROWS) -> None:
        if source.ndim != 2:
            raise ValueError(f"a token table is 2-d, not {source.shape}")
        self.source = source
        self.shape = (int(source.shape[0]), int(source.shape[1]))
        self.capacity = max(0, min(capacity, self.shape[0]))
        # Anonymous private zero pages: resident only once a row on them is written.
        size = max(self.capacity * self.shape[1] * 4, 1)
        self._buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._wide = np.frombuffer(
            self._buffer, dtype=np.float32, count=self.capacity * self.shape[1]
        ).reshape(self.capacity, self.shape[1])
        self._slot = np.full(self.shape[0], -1, dtype=np.int32)  # row -> its widened slot
        self._used = 0
        self._lock = threading.Lock()

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Float32 rows ``ids`` (a new array, one row per id, repeats kept)."""
        slots = self._slot[ids]
        missing = slots < 0
        if not missing.any():
            out: np.ndarray = self._wide[slots]
            return out
        if self._used < self.capacity:
            self._widen(ids[missing])
            slots = self._slot[ids]
            missing = slots < 0
            if not missing.any():
                out = self._wide[slots]
                return out
        if not self.capacity:
            out = np.asarray(self.source[ids], dtype=np.float32)
            return out
        out = self._wide[np.where(missing, 0, slots)]
        out[missing] = self.source[ids[missing]]
        return out

    def _widen(self, ids: np.ndarray) -> None:
        with self._lock:
            new = np.unique(ids)
            new = new[self._slot[new] < 0][: self.capacity - self._used]
            if not len(new):
                return
            end = self._used + len(new)
            # The rows are written before their slots are published, so a reader on
            # another thread never gathers a slot that is still zero.
            self._wide[self._used : end] = self.source[new]
            self._slot[new] = np.arange(self._used, end, dtype=np.int32)
            self._used = end

    @property
    def widened(self) -> int:
        """How many rows are kept widened."""
        return self._used
