"""What the gateway knows about well-known model names without being told: their strengths.

A small table curated by hand and shipped with the code (no package on PyPI
keeps model strengths; prices and limits are a separate matter). It is read
once per snapshot build to fill ``InstanceSpec.strengths``, the input of auto's
strength factor (``auto-code``). Rules:

- A model name matches an entry when, lower-cased and with any ``provider/``
  prefix removed, it starts with the entry's prefix; the longest matching
  prefix wins, so ``gpt-4o-mini`` can differ from ``gpt-4o``.
- A name matching nothing has no strengths: auto ranks it on quality tier,
  price and live figures only.
- Strength names are lower-case words: ``code``, ``reasoning``,
  ``multilingual``, ``vision``, ``long-context``.

Update it by editing ``STRENGTHS`` below (one line per family) with a test
beside any change of meaning.
"""

from __future__ import annotations

STRENGTHS: dict[str, tuple[str, ...]] = {
    # OpenAI
    "gpt-4.1": ("code", "reasoning", "long-context"),
    "gpt-4o": ("code", "multilingual", "vision"),
    "gpt-4o-mini": ("multilingual", "vision"),
    "gpt-5": ("code", "reasoning", "multilingual", "vision"),
    "o1": ("reasoning", "code"),
    "o3": ("reasoning", "code"),
    "o4-mini": ("reasoning", "code"),
    "codex": ("code",),
    # Anthropic
    "claude-opus": ("code", "reasoning", "vision"),
    "claude-sonnet": ("code", "reasoning", "vision"),
    "claude-3-5-sonnet": ("code", "reasoning", "vision"),
    "claude-3-7-sonnet": ("code", "reasoning", "vision"),
    "claude-haiku": ("vision",),
    # Google
    "gemini-2.5-pro": ("code", "reasoning", "long-context", "vision"),
    "gemini-2.5-flash": ("long-context", "vision", "multilingual"),
    # Mistral
    "codestral": ("code",),
    "devstral": ("code",),
    "mistral-large": ("multilingual", "reasoning"),
    # DeepSeek, Qwen, Llama and other open models
    "deepseek-coder": ("code",),
    "deepseek-r1": ("reasoning", "code"),
    "deepseek-reasoner": ("reasoning", "code"),
    "qwen2.5-coder": ("code",),
    "qwen3-coder": ("code",),
    "qwq": ("reasoning",),
    "starcoder": ("code",),
    "codellama": ("code",),
    "granite-code": ("code",),
    "grok-code": ("code",),
}


def strengths_for(model: str) -> tuple[str, ...]:
    """The strengths of a model name (the longest matching prefix), or () for an unknown name."""
    name = model.lower().rsplit("/", 1)[-1]
    best = ""
    for prefix in STRENGTHS:
        if name.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return STRENGTHS[best] if best else ()
