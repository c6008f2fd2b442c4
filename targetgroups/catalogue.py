"""The model catalogue: what the gateway knows about well-known model names without being told.

For each common model of OpenAI, Anthropic, Google, Mistral, DeepSeek, xAI, Groq
(the open models it hosts), Perplexity and a few open-weight families: its
provider, context window, max output tokens, whether it takes tools, images,
JSON mode (``response_format``) and streaming, a quality tier (1 basic .. 5
frontier) and its strengths (``code``, ``reasoning``, ``multilingual``,
``vision``, ``long-context``).

Two sources, both offline:

- capabilities, tiers and strengths: the ``MODELS`` table below, curated by hand
  from the providers' model pages (no package keeps capabilities and tiers);
  update it by editing one line per family, with a test beside any change of
  meaning;
- prices (input, output, cached input, USD per 1M tokens) and, where the table
  has none, the context window: the ``genai-prices`` package (pydantic's,
  MIT), whose wheel ships its data (``genai_prices/data.py``). It is read from
  that bundled snapshot only: the package's ``UpdatePrices`` background fetch is
  never started, so nothing is downloaded at run time. Prices move when the
  dependency is upgraded (``pip install -U genai-prices``; pinned in
  pyproject.toml), like any other dependency.

The catalogue gives *defaults*. An instance's own value (instance form or API)
always wins; a value neither gives is unknown, and unknown never refuses a
request (docs/routing.md, "Capabilities").

Name matching (``lookup``): lower-cased, any ``provider/`` prefix removed
(``openai/gpt-oss-120b``, ``meta-llama/llama-4-scout...``), the longest table
prefix the name starts with, where the prefix must end at a word boundary
(the name ends there or goes on with ``-``, ``.``, ``:``, ``@`` or ``_``): so
``gpt-4o-mini-2024-07-18`` is ``gpt-4o-mini`` and ``gpt-4o`` is not ``gpt-4``.
A name matching nothing is not in the catalogue (``None``).

Plain Python, no Django: the gateway's snapshot, the instance form and API,
and provider detection by model name all read it.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

logger = logging.getLogger(__name__)

OPENAI = "openai"
ANTHROPIC = "anthropic"
GOOGLE = "google"
MISTRAL = "mistral"
DEEPSEEK = "deepseek"
XAI = "xai"
GROQ = "groq"
PERPLEXITY = "perplexity"
OPEN = "open"  # open-weight families served by many hosts (Ollama, vLLM, Together...)

# Our provider names -> genai-prices provider ids (the price list to read).
PRICE_PROVIDERS = {
    OPENAI: "openai",
    ANTHROPIC: "anthropic",
    GOOGLE: "google",
    MISTRAL: "mistral",
    DEEPSEEK: "deepseek",
    XAI: "x-ai",
    GROQ: "groq",
    PERPLEXITY: "perplexity",
}

STRENGTHS = ("code", "reasoning", "multilingual", "vision", "long-context")


@dataclass(frozen=True, slots=True)
class CatalogueModel:
    """One catalogue entry. ``None``: the catalogue does not know (never a refusal)."""

    name: str  # the table's prefix that matched, e.g. "gpt-4o-mini"
    provider: str  # openai, anthropic, google, mistral, deepseek, xai, groq, perplexity, open
    context_window: int | None
    max_output_tokens: int | None
    supports_tools: bool
    supports_vision: bool
    supports_json_mode: bool
    supports_streaming: bool
    quality_tier: int  # 1 (basic) .. 5 (frontier)
    strengths: tuple[str, ...]
    input_price_per_million: Decimal | None = None
    output_price_per_million: Decimal | None = None
    cached_input_price_per_million: Decimal | None = None


@dataclass(frozen=True, slots=True)
class _Entry:
    provider: str
    context: int | None
    max_output: int | None
    tools: bool
    vision: bool
    json: bool
    tier: int
    strengths: tuple[str, ...] = ()
    streaming: bool = True
    price_ref: str = ""  # the genai-prices model reference, when it differs from the name


def _e(
    provider: str,
    context: int | None,
    max_output: int | None,
    caps: str,
    tier: int,
    *strengths: str,
    streaming: bool = True,
    price_ref: str = "",
) -> _Entry:
    """caps: letters for what the model takes: t tools, v vision (images), j JSON mode."""
    return _Entry(
        provider,
        context,
        max_output,
        "t" in caps,
        "v" in caps,
        "j" in caps,
        tier,
        strengths,
        streaming,
        price_ref,
    )


# prefix: provider, context window, max output tokens, capabilities, tier, strengths.
# Anthropic models have no JSON mode here: the Messages API takes no `response_format`, and the
# gateway's Anthropic adapter does not emulate one.
MODELS: dict[str, _Entry] = {
    # OpenAI
    "gpt-5": _e(OPENAI, 400_000, 128_000, "tvj", 5, "code", "reasoning", "multilingual", "vision"),
    "gpt-5-mini": _e(OPENAI, 400_000, 128_000, "tvj", 4, "code", "reasoning", "vision"),
    "gpt-5-nano": _e(OPENAI, 400_000, 128_000, "tvj", 3, "reasoning"),
    "gpt-4.1": _e(OPENAI, 1_047_576, 32_768, "tvj", 4, "code", "reasoning", "long-context"),
    "gpt-4.1-mini": _e(OPENAI, 1_047_576, 32_768, "tvj", 3, "code", "long-context"),
    "gpt-4.1-nano": _e(OPENAI, 1_047_576, 32_768, "tvj", 2, "long-context"),
    "gpt-4o": _e(OPENAI, 128_000, 16_384, "tvj", 4, "code", "multilingual", "vision"),
    "gpt-4o-mini": _e(OPENAI, 128_000, 16_384, "tvj", 3, "multilingual", "vision"),
    "gpt-4-turbo": _e(OPENAI, 128_000, 4_096, "tvj", 4, "code"),
    "gpt-4": _e(OPENAI, 8_192, 8_192, "t", 3),
    "gpt-3.5-turbo": _e(OPENAI, 16_385, 4_096, "tj", 2),
    "o1": _e(OPENAI, 200_000, 100_000, "tvj", 5, "reasoning", "code"),
    "o1-mini": _e(OPENAI, 128_000, 65_536, "", 4, "reasoning", "code"),
    "o3": _e(OPENAI, 200_000, 100_000, "tvj", 5, "reasoning", "code", "vision"),
    "o3-mini": _e(OPENAI, 200_000, 100_000, "tj", 4, "reasoning", "code"),
    "o4-mini": _e(OPENAI, 200_000, 100_000, "tvj", 4, "reasoning", "code"),
    "codex-mini": _e(OPENAI, 200_000, 100_000, "tvj", 4, "code"),
    "gpt-oss-120b": _e(OPEN, 131_072, 131_072, "tj", 4, "reasoning", "code", price_ref="-"),
    "gpt-oss-20b": _e(OPEN, 131_072, 131_072, "tj", 3, "reasoning", price_ref="-"),
    "text-embedding-3-small": _e(OPENAI, 8_191, None, "", 3, streaming=False),
    "text-embedding-3-large": _e(OPENAI, 8_191, None, "", 4, streaming=False),
    "text-embedding-ada-002": _e(OPENAI, 8_191, None, "", 2, streaming=False),
    # Anthropic
    "claude-opus-4-5": _e(ANTHROPIC, 200_000, 64_000, "tv", 5, "code", "reasoning", "vision"),
    "claude-opus-4-1": _e(ANTHROPIC, 200_000, 32_000, "tv", 5, "code", "reasoning", "vision"),
    "claude-opus-4": _e(ANTHROPIC, 200_000, 32_000, "tv", 5, "code", "reasoning", "vision"),
    "claude-sonnet-4-5": _e(ANTHROPIC, 200_000, 64_000, "tv", 5, "code", "reasoning", "vision"),
    "claude-sonnet-4": _e(ANTHROPIC, 200_000, 64_000, "tv", 4, "code", "reasoning", "vision"),
    "claude-haiku-4-5": _e(ANTHROPIC, 200_000, 64_000, "tv", 3, "code", "vision"),
    "claude-3-7-sonnet": _e(ANTHROPIC, 200_000, 64_000, "tv", 4, "code", "reasoning", "vision"),
    "claude-3-5-sonnet": _e(ANTHROPIC, 200_000, 8_192, "tv", 4, "code", "reasoning", "vision"),
    "claude-3-5-haiku": _e(ANTHROPIC, 200_000, 8_192, "t", 3),
    "claude-3-opus": _e(ANTHROPIC, 200_000, 4_096, "tv", 4, "reasoning", "vision"),
    "claude-3-haiku": _e(ANTHROPIC, 200_000, 4_096, "tv", 2, "vision"),
    # Google
    "gemini-2.5-pro": _e(
        GOOGLE, 1_048_576, 65_536, "tvj", 5, "code", "reasoning", "long-context", "vision"
    ),
    "gemini-2.5-flash": _e(
        GOOGLE, 1_048_576, 65_536, "tvj", 4, "long-context", "vision", "multilingual"
    ),
    "gemini-2.5-flash-lite": _e(GOOGLE, 1_048_576, 65_536, "tvj", 3, "long-context", "vision"),
    "gemini-2.0-flash": _e(GOOGLE, 1_048_576, 8_192, "tvj", 3, "long-context", "vision"),
    "gemini-2.0-flash-lite": _e(GOOGLE, 1_048_576, 8_192, "tvj", 2, "long-context"),
    "gemini-1.5-pro": _e(GOOGLE, 2_097_152, 8_192, "tvj", 4, "long-context", "vision"),
    "gemini-1.5-flash": _e(GOOGLE, 1_048_576, 8_192, "tvj", 3, "long-context", "vision"),
    "gemma-3": _e(OPEN, 131_072, 8_192, "v", 2, "multilingual", price_ref="-"),
    # Mistral
    "mistral-large": _e(MISTRAL, 131_072, None, "tj", 4, "multilingual", "reasoning"),
    "mistral-medium": _e(MISTRAL, 131_072, None, "tvj", 4, "multilingual", "vision"),
    "mistral-small": _e(MISTRAL, 131_072, None, "tvj", 3, "multilingual"),
    "pixtral-large": _e(MISTRAL, 131_072, None, "tvj", 4, "vision"),
    "ministral-8b": _e(MISTRAL, 131_072, None, "tj", 2),
    "ministral-3b": _e(MISTRAL, 131_072, None, "tj", 1),
    "open-mistral-nemo": _e(MISTRAL, 131_072, None, "tj", 2, "multilingual"),
    "codestral": _e(MISTRAL, 256_000, None, "tj", 3, "code"),
    "devstral": _e(MISTRAL, 131_072, None, "tj", 3, "code"),
    "magistral-medium": _e(MISTRAL, 40_960, None, "tj", 4, "reasoning"),
    "magistral-small": _e(MISTRAL, 40_960, None, "tj", 3, "reasoning"),
    "mistral-embed": _e(MISTRAL, 8_192, None, "", 3, streaming=False),
    # DeepSeek
    "deepseek-chat": _e(DEEPSEEK, 128_000, 8_192, "tj", 4, "code", "multilingual"),
    "deepseek-reasoner": _e(DEEPSEEK, 128_000, 64_000, "", 4, "reasoning", "code"),
    "deepseek-r1": _e(OPEN, 128_000, 32_768, "", 4, "reasoning", "code", price_ref="-"),
    "deepseek-coder": _e(OPEN, 128_000, 8_192, "", 3, "code", price_ref="-"),
    # xAI
    "grok-4": _e(XAI, 256_000, None, "tvj", 5, "code", "reasoning", "vision"),
    "grok-3": _e(XAI, 131_072, None, "tj", 4, "reasoning"),
    "grok-3-mini": _e(XAI, 131_072, None, "tj", 3, "reasoning"),
    "grok-code-fast": _e(XAI, 256_000, 10_000, "tj", 3, "code"),
    "grok-2-vision": _e(XAI, 32_768, None, "tvj", 3, "vision"),
    # Groq (the open models it hosts, by Groq's own names)
    "llama-3.3-70b-versatile": _e(GROQ, 131_072, 32_768, "tj", 3, "multilingual"),
    "llama-3.1-8b-instant": _e(GROQ, 131_072, 131_072, "tj", 2),
    "llama-4-scout-17b-16e-instruct": _e(GROQ, 131_072, 8_192, "tvj", 3, "vision"),
    "llama-4-maverick-17b-128e-instruct": _e(GROQ, 131_072, 8_192, "tvj", 4, "vision"),
    "kimi-k2-instruct": _e(GROQ, 131_072, 16_384, "tj", 4, "code"),
    "qwen3-32b": _e(GROQ, 131_072, 40_960, "tj", 3, "reasoning", "multilingual"),
    # Perplexity
    "sonar": _e(PERPLEXITY, 127_072, None, "j", 3),
    "sonar-pro": _e(PERPLEXITY, 200_000, 8_000, "j", 4),
    "sonar-reasoning": _e(PERPLEXITY, 127_072, None, "j", 4, "reasoning"),
    "sonar-reasoning-pro": _e(PERPLEXITY, 127_072, None, "j", 4, "reasoning"),
    # Open-weight families (Ollama, vLLM, llama.cpp, Together, Fireworks...)
    "qwen2.5-coder": _e(OPEN, 32_768, 8_192, "tj", 3, "code"),
    "qwen3-coder": _e(OPEN, 262_144, 65_536, "tj", 4, "code"),
    "qwq": _e(OPEN, 131_072, 32_768, "tj", 3, "reasoning"),
    "llama3.1": _e(OPEN, 131_072, None, "tj", 2),
    "llama3.2": _e(OPEN, 131_072, None, "tj", 1),
    "llama3.3": _e(OPEN, 131_072, None, "tj", 3),
    "codellama": _e(OPEN, 16_384, None, "", 2, "code"),
    "starcoder2": _e(OPEN, 16_384, None, "", 2, "code"),
    "granite-code": _e(OPEN, 8_192, None, "", 2, "code"),
}

_BOUNDARY = frozenset("-.:@_")


def normalise(model_name: str) -> str:
    """The name the table is matched against: lower-case, without any `provider/` prefix."""
    return model_name.strip().lower().rsplit("/", 1)[-1]


def _match(name: str) -> str | None:
    best = ""
    for prefix in MODELS:
        if (
            len(prefix) > len(best)
            and name.startswith(prefix)
            and (len(name) == len(prefix) or name[len(prefix)] in _BOUNDARY)
        ):
            best = prefix
    return best or None


@functools.lru_cache(maxsize=1024)
def lookup(model_name: str) -> CatalogueModel | None:
    """The catalogue's entry for a model name (see the module docstring), or None when unknown."""
    if not isinstance(model_name, str):
        return None
    name = normalise(model_name)
    prefix = _match(name)
    if prefix is None:
        return None
    entry = MODELS[prefix]
    prices = _prices(entry, name)
    context = entry.context
    if context is None:
        context = prices.get("context_window")
    return CatalogueModel(
        name=prefix,
        provider=entry.provider,
        context_window=context,
        max_output_tokens=entry.max_output,
        supports_tools=entry.tools,
        supports_vision=entry.vision,
        supports_json_mode=entry.json,
        supports_streaming=entry.streaming,
        quality_tier=entry.tier,
        strengths=entry.strengths,
        input_price_per_million=prices.get("input"),
        output_price_per_million=prices.get("output"),
        cached_input_price_per_million=prices.get("cached_input"),
    )


def strengths_for(model_name: str) -> tuple[str, ...]:
    """The catalogue's strengths of a model name, or () for an unknown name."""
    found = lookup(model_name)
    return found.strengths if found is not None else ()


def _prices(entry: _Entry, name: str) -> dict[str, Any]:
    """USD per 1M tokens from genai-prices' bundled data ({} when it has no price for the name).

    The name itself is looked up first (a dated or `-latest` name may be priced apart), then the
    table's prefix. Open-weight families (price_ref "-") have no list price: their price is the
    host's, which only the operator knows.
    """
    provider_id = PRICE_PROVIDERS.get(entry.provider)
    if provider_id is None or entry.price_ref == "-":
        return {}
    try:
        from genai_prices import data_snapshot
    except ImportError:  # pragma: no cover - a dependency of the project
        return {}
    snapshot = data_snapshot.get_snapshot()
    model = None
    for ref in (entry.price_ref or name, entry.price_ref or _prefix_of(name)):
        try:
            _, model = snapshot.find_provider_model(ref, None, provider_id, None)
            break
        except LookupError:
            continue
    if model is None:
        return {}
    try:
        price = model.get_prices(datetime.now(tz=UTC))
    except Exception:  # a malformed entry in the data must not break the catalogue
        logger.exception("genai-prices has no usable price for %s", name)
        return {}
    found: dict[str, Any] = {}
    for ours, theirs in (
        ("input", "input_mtok"),
        ("output", "output_mtok"),
        ("cached_input", "cache_read_mtok"),
    ):
        value = _base(getattr(price, theirs, None))
        if value is not None:
            found[ours] = value
    if model.context_window:
        found["context_window"] = int(model.context_window)
    return found


def _prefix_of(name: str) -> str:
    return _match(name) or name


def _base(value: Any) -> Decimal | None:
    """A price as a Decimal: a flat price, or a tiered price's base (its first tier)."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    base = getattr(value, "base", None)
    return base if isinstance(base, Decimal) else None


def catalogue_names() -> list[str]:
    """Every name prefix the catalogue knows, sorted."""
    return sorted(MODELS)
