"""Content rules: routes chosen by what a request is, before any classifier.

The rules, as DESIGN.md states them and this file applies them:

1. A balancer's content rules are checked after an explicit route override
   (X-Balancer-Route) and before its routing mode, in every mode: in
   ``intent_classifier`` a matching rule spares the classifier call; in
   ``ordered``, ``weighted`` and ``auto`` it picks the first route the same way.
2. Rules are checked in their order (ties by name); the first that matches sends
   the request to its route, with the decision reason ``rule:<name>``. The other
   enabled routes follow by priority, as after any first route.
3. A disabled rule is skipped. So is a rule whose route is disabled (or gone from
   the snapshot): the next rule is checked, then the mode decides. A rule never
   sends traffic to a route the operator switched off.
4. What a rule can look at, one thing per rule:
   - ``regex``: a regular expression found anywhere in the last user message
     (an embeddings request: its input text). Compiled by RE2 at snapshot
     build, so matching is linear in the text (see balancers.rule_syntax).
   - ``keywords``: any of a list of words or phrases in the last user message,
     whole words, ignoring case.
   - ``prompt_tokens``: the prompt's size by the gateway's own token estimate
     (every message, as usage accounting counts it), within [min, max], either
     bound optional.
   - ``tools``: the request offers tools (``tools`` or the older ``functions``).
   - ``images``: a message carries an image part.
   - ``response_format``: the request asks for structured output (a
     ``response_format`` whose type is not ``text``); with a value, only that
     type (``json_schema``, ``json_object``).
   - ``metadata``: the request's ``metadata`` has the key with exactly the value.
   - ``user``: the request's ``user`` field is exactly the value.
   - ``tag``: the ``x-balancer-tags`` header (comma-separated) holds the tag,
     ignoring case.
   - ``api_key``: the calling API key has this name.
5. Nothing here reads the request more than its rules need: the facts a
   balancer's rules look at are computed once per request, the others never.

How the gateway uses it::

    facts = request_facts(payload, endpoint="chat", key_name=key.name, tags=header,
    kinds=rule_kinds(rules))
    verdict = first_match(balancer, facts)   # (rule, route) or None
    checks = explain_rules(balancer, facts)  # every rule's outcome, for /v1/explain
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gateway.engine.types import BalancerSpec, RouteSpec, RuleSpec
from gateway.text import estimate_tokens, last_user_text, prompt_tokens

REGEX = "regex"
KEYWORDS = "keywords"
PROMPT_TOKENS = "prompt_tokens"
TOOLS = "tools"
IMAGES = "images"
RESPONSE_FORMAT = "response_format"
METADATA = "metadata"
USER = "user"
TAG = "tag"
API_KEY = "api_key"
KINDS = (
    REGEX,
    KEYWORDS,
    PROMPT_TOKENS,
    TOOLS,
    IMAGES,
    RESPONSE_FORMAT,
    METADATA,
    USER,
    TAG,
    API_KEY,
)
TEXT_KINDS = frozenset({REGEX, KEYWORDS})
MAX_TAGS = 32  # tags read from one header

# Outcomes of one rule, as /v1/explain shows them.
MATCHED = "matched"
NO_MATCH = "no_match"
RULE_DISABLED = "rule_disabled"
ROUTE_DISABLED = "route_disabled"
NOT_CHECKED = "not_checked"  # an earlier rule matched

IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the rules may look at in one request; facts no rule needs keep their empty default."""

    text: str = ""
    prompt_tokens: int = 0
    has_tools: bool = False
    has_images: bool = False
    response_format: str | None = None  # its type; None: not given
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    user: str | None = None
    tags: frozenset[str] = frozenset()
    key_name: str = ""


@dataclass(frozen=True, slots=True)
class RuleCheck:
    rule: RuleSpec
    outcome: str  # MATCHED | NO_MATCH | RULE_DISABLED | ROUTE_DISABLED | NOT_CHECKED


def rule_kinds(rules: tuple[RuleSpec, ...]) -> frozenset[str]:
    return frozenset(rule.kind for rule in rules if rule.enabled)


def parse_tags(header: str) -> frozenset[str]:
    tags = (t.strip().casefold() for t in header.split(",")[:MAX_TAGS])
    return frozenset(t for t in tags if t)


def _input_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(v for v in value if isinstance(v, str))
    return ""


def _has_images(messages: Any) -> bool:
    if not isinstance(messages, list):
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in IMAGE_PART_TYPES:
                    return True
    return False


def _response_format(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type")
        return kind if isinstance(kind, str) else ""
    return None


def _metadata(value: Any) -> Mapping[str, str]:
    if not isinstance(value, dict):
        return MappingProxyType({})
    return MappingProxyType({str(k): v if isinstance(v, str) else str(v) for k, v in value.items()})


def request_facts(
    payload: Mapping[str, Any], *, endpoint: str, key_name: str, tags: str, kinds: frozenset[str]
) -> RequestFacts:
    """The facts of one request that rules of these kinds look at (rule 5)."""
    chat = endpoint == "chat"
    messages = payload.get("messages") if chat else None
    text = ""
    if kinds & TEXT_KINDS:
        text = last_user_text(messages) if chat else _input_text(payload.get("input"))
    tokens = 0
    if PROMPT_TOKENS in kinds:
        tokens = (
            prompt_tokens(messages) if chat else estimate_tokens(_input_text(payload.get("input")))
        )
    tools = payload.get("tools") or payload.get("functions")
    user = payload.get("user")
    return RequestFacts(
        text=text,
        prompt_tokens=tokens,
        has_tools=TOOLS in kinds and isinstance(tools, list) and bool(tools),
        has_images=IMAGES in kinds and chat and _has_images(messages),
        response_format=_response_format(payload.get("response_format"))
        if RESPONSE_FORMAT in kinds
        else None,
        metadata=_metadata(payload.get("metadata")) if METADATA in kinds else MappingProxyType({}),
        user=user if USER in kinds and isinstance(user, str) else None,
        tags=parse_tags(tags) if TAG in kinds and tags else frozenset(),
        key_name=key_name,
    )


def rule_matches(rule: RuleSpec, facts: RequestFacts) -> bool:
    """Whether this one rule matches the request (rule 4), whatever its route."""
    kind = rule.kind
    if kind in TEXT_KINDS:
        return (
            rule.pattern is not None
            and bool(facts.text)
            and rule.pattern.search(facts.text) is not None
        )
    if kind == PROMPT_TOKENS:
        low, high = rule.min_tokens, rule.max_tokens
        return (low is None or facts.prompt_tokens >= low) and (
            high is None or facts.prompt_tokens <= high
        )
    if kind == TOOLS:
        return facts.has_tools
    if kind == IMAGES:
        return facts.has_images
    if kind == RESPONSE_FORMAT:
        given = facts.response_format
        if given is None:
            return False
        return given == rule.value if rule.value else given != "text"
    if kind == METADATA:
        return facts.metadata.get(rule.metadata_key) == rule.value
    if kind == USER:
        return facts.user == rule.value
    if kind == TAG:
        return rule.value.casefold() in facts.tags
    if kind == API_KEY:
        return bool(rule.value) and facts.key_name == rule.value
    return False  # an unknown kind never matches


def _route_of(balancer: BalancerSpec, rule: RuleSpec) -> RouteSpec | None:
    route = balancer.route_named(rule.route)
    return route if route is not None and route.enabled else None


def first_match(balancer: BalancerSpec, facts: RequestFacts) -> tuple[RuleSpec, RouteSpec] | None:
    """The first enabled rule that matches and whose route is enabled, with that route (rules 2,
    3)."""
    for rule in balancer.rules:
        if not rule.enabled:
            continue
        route = _route_of(balancer, rule)
        if route is not None and rule_matches(rule, facts):
            return rule, route
    return None


def explain_rules(balancer: BalancerSpec, facts: RequestFacts) -> list[RuleCheck]:
    """Every rule with its outcome for this request, as first_match walks them."""
    checks: list[RuleCheck] = []
    matched = False
    for rule in balancer.rules:
        if matched:
            outcome = NOT_CHECKED
        elif not rule.enabled:
            outcome = RULE_DISABLED
        elif _route_of(balancer, rule) is None:
            outcome = ROUTE_DISABLED
        elif rule_matches(rule, facts):
            outcome, matched = MATCHED, True
        else:
            outcome = NO_MATCH
        checks.append(RuleCheck(rule, outcome))
    return checks
