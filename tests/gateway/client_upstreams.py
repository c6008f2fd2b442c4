"""The upstreams the client matrix runs against: the built-in simulator, and loopback servers
speaking OpenAI's chat-completions wire format and Anthropic's Messages wire format
(tests/upstream_server.py, with its tool loop on). A client test takes `kind` from KINDS."""

from __future__ import annotations

from typing import Any

from tests.factories import make_balancer, make_instance
from tests.gateway.test_anthropic import anthropic_instance
from tests.upstream_server import TOOL_ARGUMENTS, Behaviour

KINDS = ["simulator", "openai-wire", "anthropic-wire"]


def upstream_instance(setup: Any, kind: str, model: str) -> Any:
    if kind == "simulator":
        return make_instance(provider="simulator", model=model, options={})
    if kind == "openai-wire":
        return setup.instance(model, Behaviour(tool_loop=True))
    return anthropic_instance(setup, model, Behaviour(tool_loop=True))


def served_by(setup: Any, kind: str, serving_name: str) -> Any:
    """A balancer with one route, served by an upstream of that kind."""
    instance = upstream_instance(setup, kind, f"{kind}-{serving_name}")
    return make_balancer(
        serving_name=serving_name,
        routes=[
            {
                "name": "main",
                "intent": "All.",
                "instance": instance,
                "priority": 1,
                "is_default": True,
            }
        ],
    )


def failing_over(setup: Any, first: str, then: str, serving_name: str) -> tuple[Any, Any]:
    """A balancer whose primary route is served by a `first` upstream and its fallback by a
    `then` one; returns it and the primary's model name, whose Behaviour a test turns to a
    failure in the middle of a tool loop."""
    primary = upstream_instance(setup, first, f"{first}-{serving_name}")
    fallback = upstream_instance(setup, then, f"{then}-{serving_name}")
    return setup.failover_balancer(primary, fallback, serving_name=serving_name), primary.model


def tool_city(kind: str) -> str:
    """The city the upstream's tool call asks about: the simulator makes an example of the
    tool's schema ("example city" for a plain string); the loopback servers always ask Paris."""
    return "example city" if kind == "simulator" else TOOL_ARGUMENTS["city"]
