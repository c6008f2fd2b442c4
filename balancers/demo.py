"""The demo configuration: simulator instances, target groups and three balancers.

The goal names (auto, auto-cheap, auto-fast, auto-code, auto-best, auto-free) need
no balancer: they rank every enabled instance. The demo has a coder
(qwen2.5-coder-7b, for auto-code) and a zero-priced local model (for auto-free)
so each goal name has something to pick, and `support-auto`, a published auto
balancer over the support pools.

Everything runs offline on the simulator provider, so the board and the
playground work on a fresh machine. Seeding creates what is missing and leaves
what exists alone, so an operator's edits survive `make run`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction

from balancers.models import Balancer
from balancers.services import balancer_save
from targetgroups.models import Instance, TargetGroup, TargetGroupMember

INSTANCES: list[dict[str, Any]] = [
    # instance_id, display name, model, kind, $/1M in, $/1M out, quality, simulator knobs
    {
        "instance_id": "local-router",
        "display_name": "Local router model",
        "provider": "builtin",
        "model": "intent-classifier",
        "workload_kind": "chat",
        "quality_tier": 1,
    },
    {
        "instance_id": "qwen-cheap-a",
        "display_name": "qwen-cheap (a)",
        "model": "qwen-cheap",
        "prices": ("0.10", "0.30"),
        "quality_tier": 2,
        "options": {"latency_ms": 60, "tokens_per_second": 400},
    },
    {
        "instance_id": "qwen-cheap-b",
        "display_name": "qwen-cheap (b)",
        "model": "qwen-cheap",
        "prices": ("0.10", "0.30"),
        "quality_tier": 2,
        "options": {"latency_ms": 80, "tokens_per_second": 400},
    },
    {
        "instance_id": "gpt-oss-120b",
        "display_name": "gpt-oss-120b",
        "model": "gpt-oss-120b",
        "prices": ("0.60", "2.40"),
        "quality_tier": 4,
        # The operator's strengths over the catalogue's (reasoning, code): the demo's reasoning
        # model, so auto-code picks the coder.
        "strengths": ["reasoning"],
        "options": {"latency_ms": 350, "tokens_per_second": 150},
    },
    {
        "instance_id": "backup-small",
        "display_name": "backup-small",
        "model": "backup-small",
        "prices": ("0.20", "0.60"),
        "quality_tier": 3,
        "options": {"latency_ms": 120, "tokens_per_second": 250},
    },
    {
        "instance_id": "inst_a",
        "display_name": "Tech support A",
        "model": "support-a",
        "prices": ("0.15", "0.60"),
        "quality_tier": 3,
        "options": {"latency_ms": 90},
    },
    {
        "instance_id": "inst_b",
        "display_name": "Tech support B",
        "model": "support-b",
        "prices": ("0.15", "0.60"),
        "quality_tier": 3,
        "options": {"latency_ms": 110},
    },
    {
        "instance_id": "coder-small",
        "display_name": "qwen2.5-coder-7b",
        "model": "qwen2.5-coder-7b",
        "prices": ("0.07", "0.28"),
        "quality_tier": 3,
        "options": {"latency_ms": 150, "tokens_per_second": 300},
    },
    {
        "instance_id": "local-free",
        "display_name": "Local model (free)",
        "model": "llama-local",
        "prices": ("0", "0"),
        "quality_tier": 1,
        # A small local model: no tools, no images, an 8k window (capability-aware routing skips
        # it).
        "context_window": 8192,
        "supports_tools": False,
        "supports_vision": False,
        "options": {"latency_ms": 200, "tokens_per_second": 120},
    },
    {
        "instance_id": "embed-small",
        "display_name": "embed-small",
        "model": "embed-small",
        "workload_kind": "embeddings",
        "prices": ("0.02", "0"),
        "quality_tier": 2,
        "options": {"latency_ms": 20},
    },
    {
        "instance_id": "embed-backup",
        "display_name": "embed-backup",
        "model": "embed-backup",
        "workload_kind": "embeddings",
        "prices": ("0.05", "0"),
        "quality_tier": 3,
        "options": {"latency_ms": 40},
    },
]

GROUPS: list[dict[str, Any]] = [
    {
        "name": "efficient-pool",
        "display_name": "Efficient pool",
        "description": "Cheap capacity for easy prompts.",
        "members": [("qwen-cheap-a", 100, 1), ("qwen-cheap-b", 100, 1)],
    },
    {
        "name": "reasoning-pool",
        "display_name": "Reasoning pool",
        "description": "Strong models for multi-step work.",
        "members": [("gpt-oss-120b", 100, 1)],
    },
    {
        "name": "backup-group",
        "display_name": "Backup group",
        "description": "Keeps the endpoint answering.",
        "members": [("backup-small", 100, 1)],
    },
    {
        "name": "tech-support-pool",
        "display_name": "Tech support pool",
        "description": "Pool of tech-support instances behind a single name.",
        "members": [("inst_a", 100, 1), ("inst_b", 100, 2)],
    },
    {
        "name": "embed-pool",
        "display_name": "Embeddings pool",
        "description": "Embedding models.",
        "workload_kind": "embeddings",
        "members": [("embed-small", 100, 1), ("embed-backup", 100, 2)],
    },
]

SUPPORT_ROUTES: list[dict[str, Any]] = [
    {
        "name": "efficient",
        "group": "efficient-pool",
        "priority": 1,
        "intent": "Simple, short tasks: summaries, drafts, rewording and quick replies.",
        "examples": [
            "Summarise this email in two lines.",
            "Draft a short thank-you reply to this customer.",
            "Rewrite this sentence so it sounds more polite.",
            "Give me a one-line summary of this ticket.",
        ],
    },
    {
        "name": "reasoning",
        "group": "reasoning-pool",
        "priority": 2,
        "intent": "Multi-step support decisions that need careful reasoning: disputes, refunds, "
        "escalations, policy edge cases.",
        "examples": [
            "Decide whether this customer qualifies for a refund under our policy.",
            "Work out the root cause from these three conflicting support logs.",
            "Plan the escalation for a chargeback dispute with two merchants involved.",
            "Analyse this contract clause and decide which policy applies.",
        ],
    },
    {
        "name": "fallback",
        "group": "backup-group",
        "priority": 3,
        "is_default": True,
        "intent": "Anything else, and the backup when the other routes fail.",
        "examples": [],
    },
]


# Each balancer: its fields (serving name = name, chat unless said) and its routes.
BALANCERS: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
    (
        {
            "name": "support-balancer",
            "routing_mode": "intent_classifier",  # over the local-router instance
            "description": "Easy prompts to efficient capacity, hard ones to reasoning, fallback "
            "behind both.",
        },
        SUPPORT_ROUTES,
    ),
    (
        {
            "name": "embed-balancer",
            "workload_kind": "embeddings",
            "routing_mode": "ordered",
            "description": "Embeddings with a backup model.",
        },
        [
            {
                "name": "primary",
                "group": "embed-pool",
                "intent": "All embeddings.",
                "priority": 1,
                "is_default": True,
            }
        ],
    ),
    (
        {
            "name": "support-auto",
            "routing_mode": "auto",
            "auto_preference": "balanced",
            "description": "The support pools ranked per request on quality, live latency, price "
            "and load.",
        },
        SUPPORT_ROUTES,
    ),
]


@transaction.atomic
def seed_demo() -> list[str]:
    """Create the demo objects that are missing; return what was created."""
    created: list[str] = []
    instances: dict[str, Instance] = {}
    for spec in INSTANCES:
        spec = dict(spec)
        price_in, price_out = spec.pop("prices", ("0", "0"))
        defaults = {
            "provider": "simulator",
            "workload_kind": "chat",
            "input_price_per_million": Decimal(price_in),
            "output_price_per_million": Decimal(price_out),
            "options": {},
            **spec,
        }
        instance = Instance.objects.filter(instance_id=spec["instance_id"]).first()
        if instance is None:
            instance = Instance(**defaults)
            instance.full_clean()
            instance.save()
            created.append(f"instance {instance.instance_id}")
        instances[instance.instance_id] = instance
    groups: dict[str, TargetGroup] = {}
    for spec in GROUPS:
        group = TargetGroup.objects.filter(name=spec["name"]).first()
        if group is None:
            group = TargetGroup.objects.create(
                name=spec["name"],
                display_name=spec["display_name"],
                description=spec["description"],
                workload_kind=spec.get("workload_kind", "chat"),
            )
            for instance_id, weight, priority in spec["members"]:
                TargetGroupMember.objects.create(
                    group=group, instance=instances[instance_id], weight=weight, priority=priority
                )
            created.append(f"target group {group.name}")
        groups[group.name] = group
    for fields, routes in BALANCERS:
        if Balancer.objects.filter(name=fields["name"]).exists():
            continue
        balancer_save(
            fields={
                "serving_name": fields["name"],
                "workload_kind": "chat",
                **fields,
                **(
                    {"router_model": instances["local-router"]}
                    if fields.get("routing_mode") == "intent_classifier"
                    else {}
                ),
            },
            routes=[
                {
                    "name": r["name"],
                    "intent": r["intent"],
                    "examples": r.get("examples", []),
                    "priority": r["priority"],
                    "is_default": r.get("is_default", False),
                    "target_group": groups[r["group"]],
                }
                for r in routes
            ],
        )
        created.append(f"balancer {fields['name']}")
    return created
