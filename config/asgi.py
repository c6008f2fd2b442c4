"""ASGI entry point.

/v1/, /healthz and /readyz go to the gateway's lean handler (gateway/hotpath/asgi.py); everything
else to Django's, with servestatic answering /static/ in front of it. The
lifespan wrapper writes out buffered usage events at shutdown.
"""

from __future__ import annotations

import os

# One BLAS thread per gateway worker, set before anything imports numpy: a host runs several
# workers, and OpenBLAS's own threads (one per core) only added CPU to the router fits at
# snapshot build: 182 -> 77 ms for the snips set, 366 -> 152 ms for mmlu_subjects (docs/routing.md).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from config.metrics_dir import prepare_metrics_dir

# before anything imports prometheus_client: every worker adds to one set of totals
prepare_metrics_dir()

from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from servestatic import ServeStaticASGI  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django_application = get_asgi_application()


def _import_without(module: str, *, importing: str) -> None:
    """Import `importing` as if `module` were not installed (an import of it raises ImportError
    meanwhile); later imports of `module` work as usual."""
    import importlib
    import sys

    if module in sys.modules or importing in sys.modules:
        return
    sys.modules[module] = None  # type: ignore[assignment]  # the import system's "not installed"
    try:
        importlib.import_module(importing)
    finally:
        del sys.modules[module]


# Django REST framework's compat module imports `requests` whenever it is installed, for its test
# client only; the OTLP trace exporter depends on it, so it is. Without it here the /v1 worker
# holds 143 modules fewer (docs/benchmarks.md, "Worker memory"); tracing, when on, imports it.
_import_without("requests", importing="rest_framework.compat")
settings.STATIC_ROOT.mkdir(
    parents=True, exist_ok=True
)  # collectstatic fills it; servestatic wants it to exist

from gateway.hotpath.asgi import GatewayASGIHandler, dispatch  # noqa: E402  (needs the app registry ready)
from gateway.hotpath.lifespan import with_lifespan  # noqa: E402

application = with_lifespan(
    dispatch(
        GatewayASGIHandler(),
        ServeStaticASGI(django_application, root=settings.STATIC_ROOT, prefix=settings.STATIC_URL),
    )
)
