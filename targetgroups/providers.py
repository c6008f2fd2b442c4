"""The providers the gateway can call, as one table of facts, and which provider a model name means.

One row per provider. Most providers speak OpenAI's chat-completions wire and differ only in
their base URL, how the key is sent, which error statuses mean "try elsewhere", which headers
say when a rate limit resets and how they can be probed without being billed; those are facts
here, not a class each. Three wires exist (gateway/upstream/): `openai` (chat completions and
embeddings), `anthropic` (the native Messages API, translated both ways) and `azure` (the
OpenAI wire at Azure's deployment URLs, `?api-version=` and an `api-key` header).

A provider's facts are read by the upstream adapters (headers, URLs, error mapping), the probes
(`probe`), the provider-credential pages and API (labels, which fields apply) and by
`detect()` below (model name -> provider). Plain Python, no Django: every layer may import it.

Model names -> provider (`detect`):

1. `provider/model` is always explicit: `groq/llama-3.3-70b-versatile` is Groq's
   `llama-3.3-70b-versatile`, `openrouter/openai/gpt-4o` is OpenRouter's `openai/gpt-4o`.
2. Otherwise the name's prefix, for the providers whose own models have a recognisable
   family name (`claude-` Anthropic, `gpt-` OpenAI, `gemini-` Google, `grok-` xAI, ...): the
   longest matching prefix wins. Hosts of other vendors' models (Groq, Together, Fireworks,
   OpenRouter, Ollama, Azure deployments, any OpenAI-compatible server) are reached only with
   the explicit form: `llama-3.1-8b` alone names no provider.
3. Then the model catalogue (targetgroups.catalogue) as a second source:
   a name it knows, under the provider it files it under.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from targetgroups.catalogue import CatalogueModel, catalogue_names, lookup

# Statuses that mean "this target cannot serve this request now, another may": the gateway's
# defaults (gateway/upstream/base.py keeps its own copy for instances). 401/403/404 from an
# upstream mean our credential or the model name is wrong there.
DEFAULT_RETRYABLE = frozenset({401, 403, 404, 408, 409, 425, 429, 500, 502, 503, 504})

# OpenAI's rate-limit reset headers (durations such as "1s", "6m0s", "59.56ms").
OPENAI_RESETS = ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")


@dataclass(frozen=True, slots=True)
class ProviderFacts:
    code: str  # also the `provider/` prefix of explicit model names
    label: str
    wire: str  # openai | anthropic | azure
    base_url: str  # the default; "" when every operator's is their own (Azure, a custom server)
    auth: str  # bearer (Authorization: Bearer) | x-api-key (Anthropic) | api-key (Azure)
    key_required: bool
    prefixes: tuple[str, ...] = ()  # model-name prefixes that mean this provider
    # The probe: a request that is never billed. GET {base_url}{path} by default; Perplexity
    # has no model list, so it is sent a chat request it refuses before any generation.
    probe_method: str = "GET"
    probe_path: str = "/models"
    probe_ok: frozenset[int] = frozenset({200})
    retryable_extra: frozenset[int] = frozenset()  # retryable on top of DEFAULT_RETRYABLE
    reset_headers: tuple[str, ...] = ()  # read on a 429 without Retry-After (see docs/providers.md)
    embeddings: bool = True  # serves /v1/embeddings
    docs: str = ""

    @property
    def retryable(self) -> frozenset[int]:
        return DEFAULT_RETRYABLE | self.retryable_extra


PROVIDERS: dict[str, ProviderFacts] = {
    p.code: p
    for p in (
        ProviderFacts(
            "openai",
            "OpenAI",
            wire="openai",
            base_url="https://api.openai.com/v1",
            auth="bearer",
            key_required=True,
            prefixes=(
                "gpt-",
                "chatgpt-",
                "o1",
                "o3",
                "o4-",
                "codex-",
                "text-embedding-",
                "davinci-",
                "babbage-",
                "omni-moderation",
            ),
            reset_headers=OPENAI_RESETS,
            docs="https://platform.openai.com/docs/api-reference",
        ),
        ProviderFacts(
            "anthropic",
            "Anthropic",
            wire="anthropic",
            base_url="https://api.anthropic.com/v1",
            auth="x-api-key",
            key_required=True,
            prefixes=("claude-",),
            # 529 overloaded_error: retryable as every 5xx is.
            reset_headers=(
                "anthropic-ratelimit-requests-reset",
                "anthropic-ratelimit-tokens-reset",
                "anthropic-ratelimit-input-tokens-reset",
                "anthropic-ratelimit-output-tokens-reset",
            ),
            embeddings=False,
            docs="https://docs.anthropic.com/en/api/messages",
        ),
        ProviderFacts(
            "google",
            "Google Gemini",
            wire="openai",  # Gemini's OpenAI-compatible endpoint
            base_url="https://generativelanguage.googleapis.com/v1beta/openai",
            auth="bearer",
            key_required=True,
            prefixes=("gemini-", "gemma-", "text-embedding-004", "gemini-embedding-"),
            docs="https://ai.google.dev/gemini-api/docs/openai",
        ),
        ProviderFacts(
            "mistral",
            "Mistral",
            wire="openai",
            base_url="https://api.mistral.ai/v1",
            auth="bearer",
            key_required=True,
            prefixes=(
                "mistral-",
                "open-mistral-",
                "open-mixtral-",
                "codestral-",
                "devstral-",
                "magistral-",
                "ministral-",
                "pixtral-",
            ),
            docs="https://docs.mistral.ai/api/",
        ),
        ProviderFacts(
            "deepseek",
            "DeepSeek",
            wire="openai",
            base_url="https://api.deepseek.com/v1",
            auth="bearer",
            key_required=True,
            prefixes=("deepseek-",),
            retryable_extra=frozenset({402}),  # insufficient balance: this key cannot pay
            embeddings=False,
            docs="https://api-docs.deepseek.com/",
        ),
        ProviderFacts(
            "xai",
            "xAI",
            wire="openai",
            base_url="https://api.x.ai/v1",
            auth="bearer",
            key_required=True,
            prefixes=("grok-",),
            embeddings=False,
            docs="https://docs.x.ai/docs/api-reference",
        ),
        ProviderFacts(
            "groq",
            "Groq",
            wire="openai",
            base_url="https://api.groq.com/openai/v1",
            auth="bearer",
            key_required=True,
            retryable_extra=frozenset({498}),  # flex tier over capacity
            reset_headers=OPENAI_RESETS,
            embeddings=False,
            docs="https://console.groq.com/docs/api-reference",
        ),
        ProviderFacts(
            "perplexity",
            "Perplexity",
            wire="openai",
            base_url="https://api.perplexity.ai",
            auth="bearer",
            key_required=True,
            prefixes=("sonar",),
            probe_method="POST",
            probe_path="/chat/completions",
            probe_ok=frozenset({400, 422}),  # authenticated, refused before any generation
            embeddings=False,
            docs="https://docs.perplexity.ai/api-reference/chat-completions-post",
        ),
        ProviderFacts(
            "openrouter",
            "OpenRouter",
            wire="openai",
            base_url="https://openrouter.ai/api/v1",
            auth="bearer",
            key_required=True,
            probe_path="/key",  # the key's own limits: /models answers without a key
            retryable_extra=frozenset({402}),  # out of credits
            reset_headers=("x-ratelimit-reset",),  # epoch milliseconds
            embeddings=False,
            docs="https://openrouter.ai/docs/api-reference/overview",
        ),
        ProviderFacts(
            "together",
            "Together AI",
            wire="openai",
            base_url="https://api.together.xyz/v1",
            auth="bearer",
            key_required=True,
            reset_headers=("x-ratelimit-reset",),
            docs="https://docs.together.ai/reference/chat-completions-1",
        ),
        ProviderFacts(
            "fireworks",
            "Fireworks AI",
            wire="openai",
            base_url="https://api.fireworks.ai/inference/v1",
            auth="bearer",
            key_required=True,
            docs="https://docs.fireworks.ai/api-reference/introduction",
        ),
        ProviderFacts(
            "azure",
            "Azure OpenAI",
            wire="azure",
            base_url="",  # https://<resource>.openai.azure.com
            auth="api-key",
            key_required=True,
            probe_path="/openai/models",
            reset_headers=OPENAI_RESETS,
            docs="https://learn.microsoft.com/azure/ai-foundry/openai/reference",
        ),
        ProviderFacts(
            "ollama",
            "Ollama",
            wire="openai",
            base_url="http://localhost:11434/v1",
            auth="bearer",  # ignored by Ollama; sent when a key is set (a proxy in front)
            key_required=False,
            docs="https://github.com/ollama/ollama/blob/main/docs/openai.md",
        ),
        ProviderFacts(
            "custom",
            "OpenAI-compatible server (vLLM, llama.cpp, LM Studio)",
            wire="openai",
            base_url="",
            auth="bearer",
            key_required=False,
            docs="https://platform.openai.com/docs/api-reference/chat",
        ),
    )
}

# Azure's API version when the operator names none (a GA version of the data-plane API).
AZURE_API_VERSION = "2024-10-21"


def facts(code: str) -> ProviderFacts | None:
    return PROVIDERS.get(code)


@dataclass(frozen=True, slots=True)
class Detected:
    provider: str
    model: str  # the name the provider expects (without an explicit `provider/`)
    how: str  # explicit | prefix | catalogue


def _by_prefix(name: str) -> str | None:
    lowered = name.lower()
    best, found = "", None
    for provider in PROVIDERS.values():
        for prefix in provider.prefixes:
            if lowered.startswith(prefix) and len(prefix) > len(best):
                best, found = prefix, provider.code
    return found


def catalogue_entry(model: str) -> CatalogueModel | None:
    """The model catalogue's entry for a name (targetgroups.catalogue), or None."""
    return lookup(model)


def detect(model: str) -> Detected | None:
    """Which provider a model name means (see the module docstring), or None."""
    head, slash, rest = model.partition("/")
    if slash and head in PROVIDERS and rest:
        return Detected(head, rest, "explicit")
    found = _by_prefix(model)
    if found is not None:
        return Detected(found, model, "prefix")
    if slash:
        # "someone/gpt-4o" names a provider this table does not know; the catalogue would read
        # past the "someone/" and claim it for OpenAI.
        return None
    entry = catalogue_entry(model)
    provider = entry.provider if entry is not None else None
    if provider in PROVIDERS:
        return Detected(provider, model, "catalogue")
    return None


def direct_models(providers: Iterable[str]) -> list[tuple[str, str]]:
    """(model name, provider) for each model of the catalogue that a direct call reaches through a
    credential of one of `providers`, sorted by name: what `/v1/models` lists for a key allowed
    to call models by name, and the playground offers.

    A name is listed when detection sends it to the provider the catalogue says makes it, so
    `gpt-oss-120b` (an open-weight model that `gpt-` would send to OpenAI) is not. Hosts of other
    vendors' models (OpenRouter, Together, Fireworks, Azure, Ollama, a custom server) have no
    catalogue names of their own: they are called as `provider/model` and listed by nobody."""
    wanted = set(providers)
    found = []
    for name in catalogue_names():
        entry = lookup(name)
        detected = detect(name)
        if (
            entry is not None
            and detected is not None
            and detected.provider == entry.provider
            and detected.provider in wanted
        ):
            found.append((name, detected.provider))
    return found


def model_kind(name: str) -> str:
    """chat, or embeddings for an embedding model of the catalogue (text-embedding-*, *-embed)."""
    return "embeddings" if "embed" in name.lower() else "chat"
