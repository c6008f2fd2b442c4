"""Direct-model calls: `model="claude-sonnet-4-5"` with no balancer of that name goes to Anthropic.

A key allowed to (`ApiKey.allow_direct_models`, off by default) may name any model of a provider
the operator stored a credential for (targetgroups.ProviderCredential). The provider comes from
the name (targetgroups.providers.detect: `provider/model` explicit, then prefix rules, then the
model catalogue). The request is then routed like any other, through an implicit balancer built
here from the snapshot's compiled credential, the way the goal names' auto balancers are
(gateway/hotpath/snapshot.py goal_balancers): one route, "direct", over one instance, so the
request gets the same attempt log, health and cooldowns (shared through Redis by the instance's
pk), usage event and cost as a balancer's.

- The implicit instance's pk is negative and stable across processes (a hash of
  `provider/model`), so every worker shares one cooldown per provider model. Its instance id is
  `provider:model`, its timeouts an instance's defaults, its prices the model catalogue's when it
  has them (0 otherwise, said in docs/providers.md).
- Precedence: an operator's balancer of that serving name, then a goal name (auto...), then a
  direct model. A key limited to balancers may still call models directly when its flag is on:
  the flag is the operator's explicit choice.
- The implicit balancers are memoised per snapshot (at most MEMO_SIZE names).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from types import MappingProxyType
from typing import Any

from balancers.models import Balancer
from gateway.engine.auto import GOALS
from gateway.engine.types import (
    DIRECT_ROUTE,
    BalancerSpec,
    GroupSpec,
    InstanceSpec,
    MemberSpec,
    RouteSpec,
)
from gateway.hotpath import errors
from gateway.hotpath.snapshot import GatewayConfig, KeySpec, ProviderSpec
from targetgroups.models import Instance
from targetgroups.providers import PROVIDERS, catalogue_entry, detect

DIRECT_MODE = DIRECT_ROUTE
MEMO_SIZE = 2048
MAX_LISTED = 50  # as auto_request.MAX_LISTED: a longer list is refused there

_memo: OrderedDict[tuple[str, str], BalancerSpec] = OrderedDict()
_memo_config: list[GatewayConfig | None] = [None]


def direct_pk(provider: str, model: str) -> int:
    """A negative pk no Instance row has, the same in every process for one provider model."""
    digest = hashlib.blake2b(f"{provider}/{model}".encode(), digest_size=8).digest()
    return -(int.from_bytes(digest, "big") & (2**62 - 1)) - 1


def _prices(model: str) -> tuple[float, float, float | None]:
    """The model catalogue's input, output and cached-input price per 1M tokens, when it knows
    the model (no cached price: cached input is billed at the input price)."""
    entry = catalogue_entry(model)
    if entry is None:
        return 0.0, 0.0, None
    cached = entry.cached_input_price_per_million
    return (
        float(entry.input_price_per_million or 0),
        float(entry.output_price_per_million or 0),
        None if cached is None else float(cached),
    )


def direct_instance(spec: ProviderSpec, model: str) -> InstanceSpec:
    options = {"api_version": spec.api_version} if spec.api_version else {}
    price_in, price_out, price_cached = _prices(model)
    facts = PROVIDERS[spec.provider]
    return InstanceSpec(
        pk=direct_pk(spec.provider, model),
        instance_id=f"{spec.provider}:{model}"[:63],
        display_name=f"{facts.label} {model}",
        provider=spec.provider,
        base_url=spec.base_url,
        model=model,
        api_key=spec.api_key,
        workload_kind="chat",
        input_price_per_million=price_in,
        output_price_per_million=price_out,
        cached_input_price_per_million=price_cached,
        quality_tier=3,
        connect_timeout=float(Instance._meta.get_field("connect_timeout").get_default()),
        first_byte_timeout=float(Instance._meta.get_field("first_byte_timeout").get_default()),
        request_timeout=float(Instance._meta.get_field("request_timeout").get_default()),
        enabled=True,
        options=MappingProxyType(options),
    )


def _balancer(served: str, instance: InstanceSpec, kind: str) -> BalancerSpec:
    instance = dataclasses.replace(instance, workload_kind=kind)
    group = GroupSpec(
        name=f"direct:{instance.provider}",
        selection_policy="round_robin",
        enabled=True,
        members=(MemberSpec(instance=instance, weight=100, priority=1, enabled=True),),
    )
    route = RouteSpec(
        name=DIRECT_ROUTE,
        intent=f"The model {instance.model} at {instance.provider}.",
        examples=(),
        group=group,
        priority=1,
        weight=100,
        is_default=True,
        enabled=True,
    )
    return BalancerSpec(
        pk=0,
        name=served,
        serving_name=served,
        workload_kind=kind,
        routing_mode=DIRECT_MODE,
        auto_preference="balanced",
        router_model=None,
        classifier_timeout=0.0,
        confidence_threshold=0.0,
        attempt_budget=int(Balancer._meta.get_field("attempt_budget").get_default()),
        request_timeout=float(Balancer._meta.get_field("request_timeout").get_default()),
        enabled=True,
        routes=(route,),
    )


def direct_balancer(
    config: GatewayConfig, key: KeySpec, model: str, endpoint: str | None
) -> BalancerSpec | None:
    """The implicit balancer of a model named directly; None when the name means no provider.

    Raises the OpenAI-shaped 4xx that says why a recognised name cannot be served: the key's
    flag is off (403), no credential for that provider (404), the provider serves no embeddings
    (400)."""
    detected = detect(model)
    if detected is None:
        return None
    facts = PROVIDERS[detected.provider]
    if not key.allow_direct_models:
        raise errors.GatewayError(
            403,
            f"{model!r} is not a balancer, and this API key may not call models by name "
            f"({model!r} would go to {facts.label}). Ask an operator to allow direct model calls "
            "on this key, or send a balancer's serving name.",
            type="permission_error",
            code="direct_models_not_allowed",
            param="model",
        )
    spec = config.providers.get(detected.provider)
    if spec is None:
        raise errors.GatewayError(
            404,
            f"{model!r} is a {facts.label} model, but no {facts.label} credential is stored (or it "
            "is disabled): an operator adds one on the Providers page.",
            code="provider_not_configured",
            param="model",
        )
    kind = endpoint or "chat"
    if kind == "embeddings" and not facts.embeddings:
        raise errors.bad_request(
            f"{facts.label} serves no embeddings through this gateway; {model!r} is a chat model "
            "here: call /v1/chat/completions.",
            param="model",
            code="wrong_workload_kind",
        )
    if _memo_config[0] is not config:
        _memo.clear()
        _memo_config[0] = config
    memo_key = (model, kind)
    balancer = _memo.get(memo_key)
    if balancer is None:
        balancer = _balancer(model, direct_instance(spec, detected.model), kind)
        _memo[memo_key] = balancer
        if len(_memo) > MEMO_SIZE:
            _memo.popitem(last=False)
    else:
        _memo.move_to_end(memo_key)
    return balancer


def _listed_names(payload: dict[str, Any]) -> list[str]:
    """The names a request's `models` list and `model_routing_config.models` give, in order."""
    found: list[str] = []
    for value in (payload.get("models"), (payload.get("model_routing_config") or {})):
        names = value.get("models") if isinstance(value, dict) else value
        if isinstance(names, list):
            found.extend(name for name in names[:MAX_LISTED] if isinstance(name, str))
    return found


def with_direct_models(
    config: GatewayConfig, key: KeySpec, balancer: BalancerSpec, payload: dict[str, Any]
) -> tuple[BalancerSpec, dict[str, Any]]:
    """The balancer widened with the providers' models a request lists by name, for a key allowed
    to call models by name (docs/routing.md, "Auto"); unchanged otherwise.

    - A goal name (auto...): each listed name that is no instance's model or id but a provider
      model with a stored credential joins the pool, on one extra route, "direct".
    - A model named directly with `models` or `model_routing_config`: the call becomes an auto
      ranking over that model and the listed ones; a `models` list gets the named model first
      (it is the one the client asked for), then the list's.
    The `allowed` limit of the key does not apply to these instances: the key's flag is the
    operator's explicit choice (as for a single direct call). Names the gateway cannot resolve
    are left for auto_request.routing_options to refuse, naming the field.
    """
    is_direct = balancer.routing_mode == DIRECT_MODE
    if not key.allow_direct_models or not (is_direct or (balancer.pk == 0 and _is_goal(balancer))):
        return balancer, payload
    listed = _listed_names(payload)
    if not listed:
        return balancer, payload
    kind = balancer.workload_kind
    known = {
        name
        for route in balancer.routes
        for member in route.group.members
        for name in listed_names(member.instance)
    }
    members: list[MemberSpec] = []
    if is_direct:
        members.extend(balancer.routes[0].group.members)
        known.clear()  # the named model is a member already; every listed name is looked up
        if isinstance(payload.get("models"), list):
            payload = {**payload, "models": [balancer.serving_name, *payload["models"]]}
    added: set[int] = {m.instance.pk for m in members}
    for name in listed:
        if name in known:
            continue
        try:
            found = direct_balancer(config, key, name, kind)
        except errors.GatewayError:  # no credential, no embeddings: refused as a listed name
            continue
        if found is None:
            continue
        member = found.routes[0].group.members[0]
        if member.instance.pk not in added:
            added.add(member.instance.pk)
            members.append(member)
    if not is_direct and not members:
        return balancer, payload
    group = GroupSpec(
        name="direct", selection_policy="round_robin", enabled=True, members=tuple(members)
    )
    route = RouteSpec(
        name=DIRECT_ROUTE,
        intent="The providers' models this request names.",
        examples=(),
        group=group,
        priority=2,
        weight=100,
        is_default=is_direct,
        enabled=True,
    )
    if is_direct:
        widened = dataclasses.replace(
            balancer, routing_mode="auto", auto_preference="balanced", routes=(route,)
        )
    else:
        widened = dataclasses.replace(balancer, routes=(*balancer.routes, route))
    return widened, payload


def listed_names(instance: InstanceSpec) -> tuple[str, ...]:
    """The names a request may list an instance by: its model name and id, and for a provider's
    model named directly also `provider/model`."""
    if instance.pk < 0:
        return (instance.model, instance.instance_id, f"{instance.provider}/{instance.model}")
    return (instance.model, instance.instance_id)


def _is_goal(balancer: BalancerSpec) -> bool:
    return balancer.routing_mode == "auto" and balancer.serving_name in GOALS
