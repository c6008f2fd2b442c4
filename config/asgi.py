"""ASGI entry point: Django, with static files served by servestatic in front of it.

servestatic answers /static/ itself and passes everything else straight to
Django, so the gateway's /v1/ requests pay nothing for it.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.asgi import get_asgi_application
from servestatic import ServeStaticASGI

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django_application = get_asgi_application()

from gateway.lifespan import with_lifespan  # noqa: E402  (needs the app registry ready)

application = with_lifespan(
    ServeStaticASGI(django_application, root=settings.STATIC_ROOT, prefix=settings.STATIC_URL)
)
