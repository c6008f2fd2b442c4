"""The test suite's settings: production's, served over plain HTTP.

The suite runs against PostgreSQL and Redis with DEBUG off, which the settings read
as production and so turn on the HTTPS redirect, secure cookies and HSTS. The test
client, the live servers (which inherit this environment) and the browser tests
speak plain HTTP, as a deployment without TLS would: GATEWAY_HTTPS=0 says so.
tests/config/test_deploy_settings.py checks the production defaults themselves.
"""

from __future__ import annotations

import os

os.environ.setdefault("GATEWAY_HTTPS", "0")

from config.settings import *  # noqa: F403
