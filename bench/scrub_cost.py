"""What scrubbing upstream secrets costs on the hot path: `python -m bench.scrub_cost`."""

from __future__ import annotations

import secrets
import timeit

import orjson

from gateway.hotpath.scrub import Scrubber

keys = ["sk-proj-" + secrets.token_urlsafe(36) for _ in range(10)]
s = Scrubber(keys)
body = orjson.dumps(
    {
        "id": "c",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "A fairly normal answer. " * 40},
            }
        ],
        "usage": {"prompt_tokens": 11},
    }
)
event = (
    b"data: "
    + orjson.dumps(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": " word"}}],
        }
    )
    + b"\n\n"
)
error = (
    "Incorrect API key provided: "
    + keys[3][:20]
    + "****. You sent Authorization: Bearer "
    + keys[3]
)
n = 20000
print(
    f"answer of {len(body)} bytes, 10 keys: "
    f"{timeit.timeit(lambda: s.body(body), number=n) / n * 1e6:.1f} us"
)
print(
    f"stream event of {len(event)} bytes, 10 keys: "
    f"{timeit.timeit(lambda: s.body(event), number=n) / n * 1e6:.2f} us"
)
print(
    f"error message of {len(error)} chars, 10 keys: "
    f"{timeit.timeit(lambda: s.text(error), number=n) / n * 1e6:.1f} us"
)
print(s.text(error))
