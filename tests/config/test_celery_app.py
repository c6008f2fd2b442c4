"""`celery -A config worker -B` finds the app, its beat schedule and the probe and rollup tasks,
although config/__init__.py does not import Celery (it would cost every gateway worker ~11 MiB)."""

from __future__ import annotations

import subprocess
import sys

from celery.app.utils import find_app


def test_celery_finds_the_app_from_the_config_package() -> None:
    app = find_app("config")
    assert app.main == "smart_balancers"
    assert app.conf.beat_schedule["probe-instances"]["task"] == "gateway.tasks.probe_instances"
    assert app.conf.beat_schedule["rollup-usage"]["task"] == "gateway.tasks.rollup_usage"
    app.loader.import_default_modules()
    assert (
        "gateway.tasks.probe_instances" in app.tasks and "gateway.tasks.rollup_usage" in app.tasks
    )


def test_the_gateway_application_loads_no_celery_and_no_other_http_client() -> None:
    code = (
        "import sys, django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', "
        "'config.settings'); import config.asgi, gateway.hotpath.v1_api, gateway.hotpath.proxy, "
        "gateway.upstream.openai_compat; print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'celery', 'aiohttp', 'httpx'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_the_gateway_application_loads_no_test_client_and_no_requests() -> None:
    """django.test (the test client, unittest, jinja2: imported for its setting_changed signal)
    and `requests` (installed for the OTLP exporter; DRF's compat module imported it) together
    made every worker ~8 MiB bigger at start (docs/benchmarks.md, "Worker memory")."""
    code = (
        "import sys, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings')\n"
        "import config.asgi, gateway.hotpath.v1_urls, gateway.hotpath.proxy, gateway.probes\n"
        "import rest_framework.compat\n"
        "heavy = ('django.test', 'jinja2', 'unittest', 'requests')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "import requests; print(requests.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "requests"], out.stderr
