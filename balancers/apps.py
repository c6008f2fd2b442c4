from __future__ import annotations

from django.apps import AppConfig


class BalancersConfig(AppConfig):
    name = "balancers"
