"""Bump the config version after every committed configuration write."""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from balancers.models import Balancer, ContentRule, Route
from gateway.models import ApiKey, Budget, Team
from targetgroups.models import Instance, ProviderCredential, TargetGroup, TargetGroupMember
from targetgroups.signals import configuration_changed

# Teams and budgets are in the snapshot too (a key's team, the budgets the hot path counts).
CONFIG_MODELS = (
    Instance,
    TargetGroup,
    TargetGroupMember,
    Balancer,
    Route,
    ContentRule,
    ApiKey,
    Team,
    Budget,
    ProviderCredential,
)


def _schedule_bump(**kwargs: object) -> None:
    """One bump per transaction: each bump makes every worker rebuild its snapshot (and refit its
    routers), so a form saving a balancer and its routes must not publish one version per row."""
    from gateway.hotpath.config_version import config_version_bump

    connection = transaction.get_connection()
    if connection.in_atomic_block:
        # A bump already scheduled covers this write unless it sits in a savepoint this write is
        # outside of (rolling that savepoint back drops the bump but keeps this write).
        inside = set(connection.savepoint_ids)
        for savepoints, callback, *_ in connection.run_on_commit:
            if callback is config_version_bump and savepoints <= inside:
                return
    transaction.on_commit(config_version_bump)


for _model in CONFIG_MODELS:
    post_save.connect(_schedule_bump, sender=_model, dispatch_uid=f"bump-save-{_model.__name__}")
    post_delete.connect(
        _schedule_bump, sender=_model, dispatch_uid=f"bump-delete-{_model.__name__}"
    )


configuration_changed.connect(_schedule_bump, dispatch_uid="bump-configuration-changed")


@receiver(m2m_changed, sender=ApiKey.balancers.through, dispatch_uid="bump-apikey-balancers")
def _api_key_balancers_changed(**kwargs: object) -> None:
    _schedule_bump()
