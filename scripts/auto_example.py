"""The worked example of docs/routing.md ("Auto"): measure every demo chat model once, call each
goal name, then ask /v1/explain for a ranking over a pool. Run against `make run` (or any gateway on
the demo):

    GATEWAY=http://127.0.0.1:8000/v1 KEY=sb-... .venv/bin/python scripts/auto_example.py
"""

from __future__ import annotations

import json
import os

import httpx
import openai

KEY = os.environ["KEY"]
BASE = os.environ.get("GATEWAY", "http://127.0.0.1:8000/v1")
HI = [{"role": "user", "content": "Summarise this support reply."}]
DEMO_MODELS = [
    "qwen-cheap",
    "gpt-oss-120b",
    "backup-small",
    "support-a",
    "support-b",
    "qwen2.5-coder-7b",
    "llama-local",
]
POOL = ["gpt-oss-120b", "backup-small", "qwen2.5-coder-7b"]
EASY = "Hello"
HARD = (
    "Write a Python function that parses a CSV file, handles quoted fields with embedded newlines, "
    "and returns a list of dicts; include unit tests."
)
IMAGE = "https://example.com/cat.png"
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def main() -> None:
    client = openai.OpenAI(base_url=BASE, api_key=KEY, max_retries=0)
    for model in DEMO_MODELS:  # a pool of one: each model measured once
        client.chat.completions.create(
            model="auto", messages=HI, extra_body={"model_routing_config": {"models": [model]}}
        )
    for goal in ["auto", "auto-cheap", "auto-fast", "auto-code", "auto-best", "auto-free"]:
        raw = client.chat.completions.with_raw_response.create(model=goal, messages=HI)
        print(f"{goal:11} -> {raw.parse().model:18} {raw.headers['x-balancer-decision']}")
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=HI,
        extra_body={"model_routing_config": {"models": POOL, "preference": "speed"}},
    )
    print("auto, pool, speed ->", raw.parse().model, raw.headers["x-balancer-decision"])
    explained = httpx.post(
        BASE + "/explain",
        headers={"Authorization": f"Bearer {KEY}"},
        json={
            "model": "auto",
            "messages": HI,
            "model_routing_config": {"models": POOL, "preference": "balanced"},
        },
    ).json()
    print(json.dumps({k: explained[k] for k in ("reason", "ranking", "skipped")}, indent=1))
    # The prompt's difficulty: an easy and a hard prompt through `auto` (balanced).
    for label, prompt in (("easy", EASY), ("hard", HARD)):
        messages = [{"role": "user", "content": prompt}]
        explained = httpx.post(
            BASE + "/explain",
            headers={"Authorization": f"Bearer {KEY}"},
            json={"model": "auto", "messages": messages},
        ).json()
        top = explained["ranking"][0]
        served = client.chat.completions.create(model="auto", messages=messages).model
        print(
            f"{label}: difficulty {explained['difficulty']} -> {served} "
            f"(explain's first: {top['model']}, difficulty term {top['terms']['difficulty']})"
        )
    # Capabilities: an image to `auto`, tools to `auto-free` (its only model takes no tools).
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE}}]}
        ],
    )
    print(
        "image ->",
        raw.parse().model,
        "| x-balancer-skipped:",
        raw.headers.get("x-balancer-skipped"),
    )
    try:
        client.chat.completions.create(model="auto-free", messages=HI, tools=[TOOL])
    except openai.BadRequestError as exc:
        print("tools to auto-free ->", exc.status_code, exc.body)


if __name__ == "__main__":
    main()
