# syntax=docker/dockerfile:1
# Smart Balancers: one image, three roles (docs/deploy.md):
#   gateway (the default CMD below: `make serve`'s uvicorn command, 2 worker processes),
#   Celery worker:  celery -A config worker --loglevel INFO --concurrency 2
#   Celery beat:    celery -A config beat --loglevel INFO --schedule /tmp/celerybeat-schedule
#   migrations:     python manage.py migrate --no-input
# No HEALTHCHECK here: the roles differ (compose.yaml and deploy/k8s/ probe each one).
# compose.yaml and deploy/k8s/ run exactly these commands; tests/deploy/test_topology.py checks
# that they agree and starts them against a real PostgreSQL and Redis.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The project's own dependency list (pyproject.toml, read by scripts/deps.py): the runtime
# dependencies only (no dev extras: no pytest, ruff, Playwright or its browser, py-spy),
# then the files-only packages with --no-deps, as `make install` does.
COPY pyproject.toml ./
COPY scripts/deps.py scripts/
RUN python -m venv /opt/venv \
    && python scripts/deps.py | xargs /opt/venv/bin/pip install \
    && python scripts/deps.py --files-only | xargs /opt/venv/bin/pip install --no-deps \
    && /opt/venv/bin/pip uninstall -y -q pip \
    && /opt/venv/bin/python -c "import django, rest_framework, adrf, httptools, uvloop, psycopg, celery, importlib.util as u; assert u.find_spec('wordllama')"

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=config.settings \
    VAR_DIR=/app/var \
    MALLOC_ARENA_MAX=2
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY manage.py pyproject.toml ./
COPY config config
COPY accounts accounts
COPY targetgroups targetgroups
COPY balancers balancers
COPY gateway gateway
COPY playground playground
COPY templates templates
COPY static static
# Static files collected at build time into VAR_DIR/staticfiles (servestatic serves them). The
# throwaway key only lets the settings load here; it is not kept in the image, and SECRET_KEY
# must be set at run time; so must GATEWAY_ENCRYPTION_KEYS (this one is base64 of a 32-byte
# phrase, never used to encrypt anything). Bytecode is compiled now: the root filesystem can be read-only.
RUN SECRET_KEY=collectstatic-at-build-time-only-not-a-secret-0000 \
    GATEWAY_ENCRYPTION_KEYS=Y29sbGVjdHN0YXRpYy1hdC1idWlsZC10aW1lLW9ubHk= \
    python manage.py collectstatic --no-input -v 0 \
    && test ! -e var/secret_key && test ! -e var/encryption_keys \
    && python -m compileall -q -j 0 config accounts targetgroups balancers gateway playground
USER 10001:10001
EXPOSE 8000
CMD ["python", "-m", "uvicorn", "config.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning", "--timeout-graceful-shutdown", "30"]
