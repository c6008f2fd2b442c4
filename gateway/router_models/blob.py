"""A fitted router model as bytes, to share it between gateway workers (plain Python and numpy).

One worker fits a balancer's router and stores the result (gateway.hotpath.router_share);
the others load it instead of fitting again. What is loaded came from outside the process
(Redis), so it is read as untrusted input, never unpickled:

    MAGIC | FORMAT | HMAC-SHA256(key, rest) | header length (4 bytes) | header (JSON) | arrays

The header names each array's dtype and shape, and the arrays are raw little-endian bytes
in that order. ``unpack`` refuses (``BlobRefused``) a blob that is too big, has another magic
or format, fails the HMAC (corrupt, or written by someone without the key), has a header
that is not what ``pack`` writes, or whose arrays do not fill the rest exactly. The caller
then checks the meaning (shapes against its routes, finite values) and fits on a refusal.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import struct
from typing import Any

import numpy as np

MAGIC = b"SBRM"
FORMAT = 1
MAX_BYTES = 16 * 1024 * 1024  # a router of 100 routes x 50 examples is about 3 MB
_DTYPES = ("<f4", "<i4")
_PREFIX = len(MAGIC) + 1 + 32 + 4


class BlobRefused(ValueError):
    """Not a blob this process will load: fit locally instead."""


def pack(key: bytes, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """``header`` (JSON-able) and the named arrays (float32 or int32), signed with ``key``."""
    layout = []
    chunks = []
    for name, array in arrays.items():
        dtype = np.dtype(array.dtype).newbyteorder("<").str
        if dtype not in _DTYPES:
            raise ValueError(f"{name}: {dtype} is not stored")
        layout.append([name, dtype, list(array.shape)])
        chunks.append(np.ascontiguousarray(array, dtype=dtype).tobytes())
    head = json.dumps({"meta": header, "arrays": layout}, sort_keys=True).encode()
    rest = struct.pack("<I", len(head)) + head + b"".join(chunks)
    mac = hmac.new(key, MAGIC + bytes([FORMAT]) + rest, hashlib.sha256).digest()
    return MAGIC + bytes([FORMAT]) + mac + rest


def unpack(key: bytes, blob: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header and arrays of a blob ``pack`` wrote with ``key``; ``BlobRefused`` otherwise."""
    if len(blob) > MAX_BYTES:
        raise BlobRefused(f"{len(blob)} bytes, over {MAX_BYTES}")
    if len(blob) < _PREFIX or blob[: len(MAGIC)] != MAGIC:
        raise BlobRefused("not a router blob")
    if blob[len(MAGIC)] != FORMAT:
        raise BlobRefused(f"format {blob[len(MAGIC)]}, not {FORMAT}")
    mac = blob[len(MAGIC) + 1 : len(MAGIC) + 33]
    rest = blob[len(MAGIC) + 33 :]
    expected = hmac.new(key, MAGIC + bytes([FORMAT]) + rest, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise BlobRefused("signature does not match (corrupt, or not written with this key)")
    (head_length,) = struct.unpack("<I", rest[:4])
    try:
        head = json.loads(rest[4 : 4 + head_length])
        meta, layout = head["meta"], head["arrays"]
        if not isinstance(meta, dict) or not isinstance(layout, list):
            raise TypeError("header")
        offset = 4 + head_length
        arrays: dict[str, np.ndarray] = {}
        for name, dtype, shape in layout:
            if dtype not in _DTYPES or not all(isinstance(d, int) and d >= 0 for d in shape):
                raise TypeError(f"{name}: {dtype} {shape}")
            size = math.prod(shape) * 4
            if offset + size > len(rest):
                raise TypeError(f"{name}: past the end")
            data = np.frombuffer(rest, dtype=dtype, count=math.prod(shape), offset=offset)
            arrays[str(name)] = data.reshape(shape)
            offset += size
        if offset != len(rest):
            raise TypeError("bytes after the last array")
    except (TypeError, ValueError, KeyError) as exc:
        raise BlobRefused(f"malformed: {exc}") from None
    return meta, arrays
