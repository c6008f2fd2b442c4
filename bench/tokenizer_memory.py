"""The router model's tokenizer under distinct prompts: resident memory and encode time.

    .venv/bin/python -m bench.tokenizer_memory              # as the gateway runs it (cache off)
    .venv/bin/python -m bench.tokenizer_memory --bpe-cache  # BPE's default 10,000-entry cache on

The tokenizer has no pre-tokenizer, so BPE's cache keys whole prompts; a gateway sees a
different prompt on nearly every request (docs/benchmarks.md, "Issue 11 ... before and after").
"""

from __future__ import annotations

import argparse
import gc
import time

from gateway.router_models.local import StaticEmbedder

PROMPTS = (
    "Summarise this email in two lines.",
    "Analyse the trade-offs of caching decisions per prompt versus per user.",
    "Decide whether this customer qualifies for a refund under our policy, given the orders.",
)


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=20_000)
    parser.add_argument("--bpe-cache", action="store_true", help="BPE's default cache back on")
    args = parser.parse_args()
    embedder = StaticEmbedder.from_wordllama()
    tokenizer = embedder._tokenizer
    if args.bpe_cache:
        tokenizer.model._resize_cache(10_000)
    embedder.token_ids(PROMPTS[0])
    gc.collect()
    before = rss_mib()
    started = time.process_time()
    for i in range(args.prompts):
        embedder.token_ids(f"{PROMPTS[i % 3]} (request {i})")
    spent = time.process_time() - started
    gc.collect()
    print(
        f"BPE cache {'on' if args.bpe_cache else 'off'}: {args.prompts:,} distinct prompts, "
        f"resident +{rss_mib() - before:.1f} MiB, {spent / args.prompts * 1e6:.1f} us CPU per "
        "encode"
    )


if __name__ == "__main__":
    main()
