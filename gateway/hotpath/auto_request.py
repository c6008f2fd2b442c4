"""The request side of auto: goal names, `model_routing_config` and the `models` fallback list.

- `model` = a goal name (auto, auto-cheap, auto-fast, auto-code, auto-best, auto-free; see
  gateway.engine.auto.GOALS) with no balancer of that serving name: the snapshot's implicit auto
  balancer for the endpoint's workload kind. An operator's balancer named `auto` wins.
- Which instances a key reaches through a goal name: a key not limited to balancers, every enabled
  instance of the kind; a key limited to balancers, only the instances of those (enabled)
  balancers' routes (`KeySpec.allowed_instances`, computed with the snapshot). A limit can only
  narrow what a key already reaches, never widen it.
- `model_routing_config` = {"models": [...], "preference": ...}, both optional, nothing else:
  narrows the pool and sets the preference (balanced, quality, speed, cost, code). `models`
  (OpenRouter's fallback list): the listed models in order. A listed name matches an instance's
  model name or its instance id, among the instances the request may use; anything else is a 400
  naming the field. Both apply to goal names and to balancers in `auto` mode; on any other
  balancer they are a 400 (they would be silently meaningless there).
- Both fields are consumed here: the payload forwarded upstream never carries them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.engine.auto import (
    GOALS,
    PREFERENCES,
    AutoRanking,
    AutoRequest,
    rank_auto,
    request_demand,
    weights_for,
)
from gateway.engine.capability import needs_of
from gateway.engine.types import BalancerSpec, MemberSpec, RouteSpec
from gateway.hotpath import errors
from gateway.hotpath.direct import listed_names
from gateway.hotpath.runtime import routing
from gateway.hotpath.snapshot import GatewayConfig, KeySpec
from gateway.router_models.difficulty import default_difficulty_model
from gateway.text import last_user_text

MAX_PROMPT_CHARS = 4000  # as the classifier reads (gateway.hotpath.decision)

logger = logging.getLogger(__name__)

ROUTING_CONFIG = "model_routing_config"
FALLBACK_LIST = "models"
_CONFIG_FIELDS = ("models", "preference")
MAX_LISTED = 50


def goal_balancer(config: GatewayConfig, model: str, endpoint: str | None) -> BalancerSpec | None:
    """The implicit auto balancer of a goal name, or None when `model` is no goal name."""
    if model not in GOALS:
        return None
    return config.routing.goals.get((endpoint or "chat", model))


def routing_options(
    balancer: BalancerSpec, key: KeySpec, payload: dict[str, Any]
) -> tuple[dict[str, Any], AutoRequest | None]:
    """The payload without the gateway's own fields, and what the request asks of auto (None: not
    auto)."""
    has_config, has_list = ROUTING_CONFIG in payload, FALLBACK_LIST in payload
    if balancer.routing_mode != "auto":
        if has_config or has_list:
            field = ROUTING_CONFIG if has_config else FALLBACK_LIST
            raise errors.bad_request(
                f"'{field}' applies to auto serving names (auto, auto-cheap, ...) and balancers "
                "in auto mode; "
                f"{balancer.serving_name!r} routes in {balancer.routing_mode} mode.",
                param=field,
                code="routing_config_not_applicable",
            )
        return payload, None
    allowed = key.allowed_instances if balancer.pk == 0 else None
    if allowed is not None:  # providers' models a request lists (direct.with_direct_models)
        allowed = allowed | _direct_pks(balancer)
    preference, pool = balancer.auto_preference, None
    order: tuple[frozenset[int], ...] = ()
    if has_config or has_list:
        names = _names(balancer, allowed)
        if has_config:
            pool, asked = _routing_config(payload[ROUTING_CONFIG], names, balancer)
            preference = asked or preference
        if has_list:
            order = tuple(_listed(payload[FALLBACK_LIST], FALLBACK_LIST, names, balancer))
        payload = {k: v for k, v in payload.items() if k not in (ROUTING_CONFIG, FALLBACK_LIST)}
    return payload, AutoRequest(
        preference=preference,
        allowed=allowed,
        pool=pool,
        order=order,
        free_only=balancer.auto_free_only,
    )


def _routing_config(
    value: Any, names: dict[str, frozenset[int]], balancer: BalancerSpec
) -> tuple[frozenset[int] | None, str | None]:
    if not isinstance(value, dict):
        raise errors.bad_request(
            f"'{ROUTING_CONFIG}' must be an object with 'models' and/or 'preference'.",
            param=ROUTING_CONFIG,
            code="invalid_routing_config",
        )
    for field in value:
        if field not in _CONFIG_FIELDS:
            raise errors.bad_request(
                f"Unknown field {str(field)[:40]!r} in '{ROUTING_CONFIG}'; it takes "
                f"{' and '.join(_CONFIG_FIELDS)}.",
                param=f"{ROUTING_CONFIG}.{str(field)[:40]}",
                code="invalid_routing_config",
            )
    preference = value.get("preference")
    if preference is not None and preference not in PREFERENCES:
        raise errors.bad_request(
            f"Unknown preference {str(preference)[:40]!r} in '{ROUTING_CONFIG}.preference'; "
            f"one of: {', '.join(PREFERENCES)}.",
            param=f"{ROUTING_CONFIG}.preference",
            code="invalid_routing_config",
        )
    pool = None
    if "models" in value:
        listed = _listed(value["models"], f"{ROUTING_CONFIG}.models", names, balancer)
        pool = frozenset[int]().union(*listed)
    return pool, preference


def _listed(
    value: Any, field: str, names: dict[str, frozenset[int]], balancer: BalancerSpec
) -> list[frozenset[int]]:
    """The instance pks of each listed name, in order; a 400 naming the field for anything else."""
    if not isinstance(value, list) or not value or len(value) > MAX_LISTED:
        raise errors.bad_request(
            f"'{field}' must be a non-empty array of at most {MAX_LISTED} model names.",
            param=field,
            code="invalid_routing_config",
        )
    found: list[frozenset[int]] = []
    for index, name in enumerate(value):
        pks = names.get(name) if isinstance(name, str) else None
        if not pks:
            known = ", ".join(sorted(names)[:20]) or "none"
            shown = str(name)[:80]
            raise errors.bad_request(
                f"{shown!r} in '{field}' is not a model this key may use through "
                f"{balancer.serving_name!r} "
                f"(a model name or instance id); it may use: {known}.",
                param=f"{field}[{index}]",
                code="model_not_allowed",
            )
        found.append(pks)
    return found


def _names(balancer: BalancerSpec, allowed: frozenset[int] | None) -> dict[str, frozenset[int]]:
    """Every name a request may list (model names and instance ids) and the instance pks it stands
    for."""
    found: dict[str, set[int]] = {}
    for route in balancer.routes:
        if not route.enabled or not route.group.enabled:
            continue
        for member in route.group.members:
            instance = member.instance
            if allowed is not None and instance.pk not in allowed:
                continue
            for name in listed_names(instance):
                found.setdefault(name, set()).add(instance.pk)
    return {name: frozenset(pks) for name, pks in found.items()}


def _direct_pks(balancer: BalancerSpec) -> frozenset[int]:
    return frozenset(
        m.instance.pk for r in balancer.routes for m in r.group.members if m.instance.pk < 0
    )


def empty_pool_error(balancer: BalancerSpec, ranking: AutoRanking) -> errors.GatewayError:
    """Nothing at all this request may use (not even cooling down): why, as a 400."""
    if balancer.auto_free_only and any(
        s.reason.startswith("not zero-priced") for s in ranking.skipped
    ):
        return errors.bad_request(
            "No zero-priced model is enabled for this key: auto-free routes only to instances "
            "whose input and output prices are both 0. Use another goal (auto, auto-cheap...) or "
            "set an instance's prices to 0.",
            param="model",
            code="no_free_model",
        )
    if ranking.skipped:
        reasons = sorted({s.reason for s in ranking.skipped})
        return errors.bad_request(
            f"No model is left for {balancer.serving_name!r} after this request's limits: "
            f"{'; '.join(reasons)}.",
            param="model",
            code="no_model_available",
        )
    return errors.bad_request(
        f"No enabled {balancer.workload_kind} model is available to this key through "
        f"{balancer.serving_name!r}.",
        param="model",
        code="no_model_available",
    )


def prompt_difficulty(payload: Mapping[str, Any], endpoint: str = "chat") -> float | None:
    """P(the prompt is hard) from the built-in router model (gateway/router_models/difficulty.py)
    over the last user turn; None for an embeddings request, an empty prompt, or no model."""
    if endpoint != "chat":
        return None
    text = last_user_text(payload.get("messages"))[:MAX_PROMPT_CHARS]
    if not text.strip():
        return None
    try:
        return default_difficulty_model().score_text(text)
    except Exception:  # the router model's files are missing or unreadable: rank without it
        logger.exception("the difficulty model failed; auto ranks without the difficulty term")
        return None


def with_difficulty(
    auto: AutoRequest, payload: Mapping[str, Any], endpoint: str = "chat"
) -> AutoRequest:
    """The request with its prompt's difficulty and its demand (size, tools, images), when its
    preference weighs them (balanced)."""
    _, weights = weights_for(auto.preference)
    if weights.difficulty <= 0 and weights.demand <= 0:
        return auto
    demand = None
    if weights.demand > 0 and endpoint == "chat":
        needs = needs_of(payload, endpoint)
        demand = request_demand(
            prompt_tokens=needs.prompt_tokens, tools=needs.tools, images=needs.vision
        )
    difficulty = prompt_difficulty(payload, endpoint) if weights.difficulty > 0 else None
    return dataclasses.replace(auto, difficulty=difficulty, demand=demand)


def no_capable_target_error(
    balancer: BalancerSpec, skipped: Sequence[tuple[RouteSpec, MemberSpec, str]]
) -> errors.GatewayError:
    """Every target this request could use lacks what it needs: a 400 naming each and why."""
    reasons = "; ".join(f"{m.instance.instance_id}: {reason}" for _, m, reason in skipped[:20])
    return errors.bad_request(
        f"No target of {balancer.serving_name!r} can serve this request: {reasons}. Remove what "
        "they cannot take (tools, images, response_format, stream, a shorter prompt or "
        "max_tokens), or add an instance that can.",
        param="model",
        code="no_capable_model",
    )


def explain_auto(
    balancer: BalancerSpec, auto: AutoRequest | None, unfit: Mapping[int, str] | None = None
) -> dict[str, Any]:
    """The ranking a request would get now, as /v1/explain and the playground show it: each
    candidate's score broken into its terms and live latency, each skipped instance with the
    reason."""
    if auto is None:
        auto = AutoRequest(preference=balancer.auto_preference, free_only=balancer.auto_free_only)
    ranked = rank_auto(
        balancer, auto, health=routing.health, load=routing.load, now=routing.clock(), unfit=unfit
    )
    return {
        "reason": f"auto:{ranked.preference}",
        "difficulty": None if auto.difficulty is None else round(auto.difficulty, 4),
        "demand": None if auto.demand is None else round(auto.demand, 4),
        "route": ranked.ranked[0].route if ranked.ranked else None,
        "ranking": [
            {
                "route": r.route.name,
                "instance": r.instance.instance_id,
                "model": r.instance.model,
                "score": round(r.score, 4),
                "terms": {name: round(value, 4) for name, value in r.terms().items()},
                "latency_ms": _latency_ms(r.instance.pk),
            }
            for r in ranked.ranked
        ],
        "skipped": [
            {
                "route": s.route.name,
                "instance": s.instance.instance_id,
                "model": s.instance.model,
                "reason": s.reason,
            }
            for s in ranked.skipped
        ],
    }


def _latency_ms(pk: int) -> float | None:
    latency = routing.load.latency(pk)
    return None if latency is None else round(latency * 1000, 2)
