from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from balancers.models import Balancer
from gateway.models import (
    ApiKey,
    Budget,
    StoredResponse,
    Team,
    hash_api_key,
    new_api_key_secret,
)


@transaction.atomic
def api_key_create(
    *,
    name: str,
    balancers: Iterable[Balancer] = (),
    rate_limit_per_minute: int | None = None,
    allow_route_override: bool = False,
    team: Team | None = None,
    use_case: str = "",
    allow_direct_models: bool = False,
) -> tuple[ApiKey, str]:
    """Create a key; return it with its secret, which is never stored or shown again."""
    key = ApiKey(
        name=name,
        rate_limit_per_minute=rate_limit_per_minute,
        allow_route_override=allow_route_override,
        team=team,
        use_case=use_case,
        allow_direct_models=allow_direct_models,
    )
    secret = api_key_issue_secret(key=key)
    key.full_clean()
    key.save()
    key.balancers.set(list(balancers))
    return key, secret


def api_key_issue_secret(*, key: ApiKey) -> str:
    """Give an unsaved key its secret: only the prefix and a hash are kept. Every way of
    creating a key (the service above, the admin) goes through here."""
    secret = new_api_key_secret()
    key.prefix = secret[:10]
    key.key_hash = hash_api_key(secret)
    return secret


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.enabled = False
        key.save(update_fields=["revoked_at", "enabled"])
    return key


@transaction.atomic
def api_key_update(
    *, key: ApiKey, balancers: Iterable[Balancer] | None = None, **fields: object
) -> ApiKey:
    """Change a key's name, rate limit, route override, enabled flag or balancers (`None` keeps
    them)."""
    if fields.get("enabled") and key.revoked_at is not None:
        raise ValidationError({"enabled": "A revoked key stays revoked; create a new key instead."})
    for name, value in fields.items():
        setattr(key, name, value)
    key.full_clean()
    key.save()
    if balancers is not None:
        key.balancers.set(list(balancers))
    return key


def api_key_delete(*, key: ApiKey) -> None:
    key.delete()


def stored_responses_purge() -> int:
    """Delete the stored /v1/responses answers whose retention has run out; the number deleted."""
    deleted, _ = StoredResponse.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted


# -- teams and budgets --------------------------------------------------------------------------


def team_create(*, name: str, description: str = "") -> Team:
    team = Team(name=name, description=description)
    team.full_clean()
    team.save()
    return team


def team_update(*, team: Team, **fields: object) -> Team:
    for name, value in fields.items():
        setattr(team, name, value)
    team.full_clean()
    team.save()
    return team


def team_delete(*, team: Team) -> None:
    """Its keys stay, without a team; its budgets go; its usage history keeps its id."""
    team.delete()


def _budget_save(budget: Budget) -> Budget:
    budget.full_clean()
    budget.save()
    # Seed the request path's counter with the period's spend so far, at once rather than at
    # the next reconciling run: a budget added mid-month starts from what was already spent.
    from gateway.budgets import budgets_reconcile

    transaction.on_commit(budgets_reconcile)
    return budget


@transaction.atomic
def budget_create(
    *,
    limit_usd: Decimal,
    team: Team | None = None,
    api_key: ApiKey | None = None,
    balancer: Balancer | None = None,
    period: str = Budget.Period.MONTHLY,
    warn_share: Decimal | None = None,
    action: str = Budget.Action.REFUSE,
    enabled: bool = True,
) -> Budget:
    budget = Budget(
        team=team,
        api_key=api_key,
        balancer=balancer,
        period=period,
        limit_usd=limit_usd,
        action=action,
        enabled=enabled,
    )
    if warn_share is not None:
        budget.warn_share = warn_share
    return _budget_save(budget)


@transaction.atomic
def budget_update(*, budget: Budget, **fields: object) -> Budget:
    """Change a budget's period, limit, warning share, action or enabled flag (not its subject)."""
    for name, value in fields.items():
        setattr(budget, name, value)
    return _budget_save(budget)


def budget_delete(*, budget: Budget) -> None:
    budget.delete()
