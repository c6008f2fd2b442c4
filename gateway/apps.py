from __future__ import annotations

from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"

    def ready(self) -> None:
        from gateway import signals  # noqa: F401  (config-version bumps)
        from gateway.hotpath import accesslog, metrics, tracing

        # Told of every usage event: the Prometheus counts, the request log line, the trace's end.
        metrics.install()
        accesslog.install()
        tracing.setup()
