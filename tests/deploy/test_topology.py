"""The deployment files agree with each other and with the app, and their commands really run.

No container engine runs on the test machine, so this checks what can be checked
here: compose.yaml, deploy/k8s/ and the Dockerfile against each other and against
the settings config/settings.py reads, then starts the exact commands they
declare (migrations, the gateway with 2 workers, a Celery worker, beat) as local
processes against the machine's PostgreSQL (a database of the test's own) and
Redis (the test database number), sends traffic through the simulator provider,
and watches /readyz, a probe marking an instance down, and a usage rollup.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import redis
import yaml
from cryptography.fernet import Fernet
from django.conf import settings
from django.urls import resolve
from prometheus_client.parser import text_string_to_metric_families

from tests.live_server import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
K8S = ROOT / "deploy" / "k8s"
REQUIRED = {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "GATEWAY_ENCRYPTION_KEYS", "ALLOWED_HOSTS"}
APP_IMAGE = "smart-balancers"
ROLES = ("migrate", "gateway", "worker", "beat")
PROBE_HOST = "localhost"  # the Host header the health checks and probes send


# --- the files -----------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def services_env() -> dict[str, str]:
    return app_services()["gateway"]["environment"]


def app_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if str(service.get("image", "")).startswith(APP_IMAGE)
    }


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def manifest(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def k8s_containers() -> dict[str, dict[str, Any]]:
    """role -> its container, for every workload of the app (Deployments and the migration Job)."""
    containers = {}
    for doc in manifests():
        if doc["kind"] in ("Deployment", "Job"):
            pod = doc["spec"]["template"]
            (container,) = pod["spec"]["containers"]
            assert container["image"] == APP_IMAGE
            containers[pod["metadata"]["labels"]["app.kubernetes.io/component"]] = container
    return containers


def dockerfile_cmd() -> list[str]:
    lines = [
        line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")
    ]
    assert len(lines) == 1
    return json.loads(lines[0].removeprefix("CMD "))


def settings_read() -> set[str]:
    """Every environment variable the app reads: config/settings.py's env helpers,
    config/celery.py."""
    source = (ROOT / "config" / "settings.py").read_text() + (
        ROOT / "config" / "celery.py"
    ).read_text()
    names = set(
        re.findall(
            r'\benv(?:str|bool|int|float|list|secret|fernetkeys|proxyheader)\(\s*"([A-Z0-9_]+)"',
            source,
        )
    )
    names |= set(re.findall(r'os\.environ\.get\(\s*"([A-Z0-9_]+)"', source))
    assert {
        "DATABASE_URL",
        "SECRET_KEY",
        "GATEWAY_PROBE_SECONDS",
    } <= names  # the patterns still match
    return names


def health_check(role: str) -> list[str]:
    """compose.yaml's health check of a service as the argv a container would run: CMD-SHELL
    through `sh -c`, with compose's `$$` escape undone."""
    test = compose()["services"][role]["healthcheck"]["test"]
    if test[0] == "CMD-SHELL":
        (line,) = test[1:]
        return ["sh", "-c", line.replace("$$", "$")]
    assert test[0] == "CMD"
    return list(test[1:])


def make_serve_flags() -> list[str]:
    """`make serve`'s uvicorn arguments, continuation lines joined."""
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    (line,) = [
        line
        for line in makefile.splitlines()
        if "uvicorn config.asgi:application" in line and "--workers" in line
    ]
    return line.split("uvicorn", 1)[1].split()


# --- static checks -------------------------------------------------------------------------


def test_compose_passes_only_settings_the_app_reads_and_every_required_one() -> None:
    known = settings_read()
    services = app_services()
    assert set(services) == set(ROLES)
    for name, service in services.items():
        passed = set(service["environment"])
        assert passed <= known, f"{name} passes settings the app never reads: {passed - known}"
        assert passed >= REQUIRED, f"{name} lacks {REQUIRED - passed}"


def test_kubernetes_passes_only_settings_the_app_reads_and_every_required_one() -> None:
    known = settings_read()
    config_map = manifest("ConfigMap", "smart-balancers")
    assert set(config_map["data"]) <= known
    containers = k8s_containers()
    assert set(containers) == set(ROLES)
    for role, container in containers.items():
        (source,) = container["envFrom"]
        assert source["configMapRef"]["name"] == "smart-balancers"
        direct = {item["name"] for item in container["env"]}
        assert direct <= known
        for item in container["env"]:  # secrets by reference only, never a value in the repo
            assert item["valueFrom"]["secretKeyRef"] == {
                "name": "smart-balancers",
                "key": item["name"],
            }
        passed = direct | set(config_map["data"])
        assert passed >= REQUIRED, f"{role} lacks {REQUIRED - passed}"
    assert not [doc for doc in manifests() if doc["kind"] == "Secret"], (
        "a Secret must not be committed"
    )


def test_commands_are_the_same_in_compose_kubernetes_and_the_dockerfile() -> None:
    services = app_services()
    containers = k8s_containers()
    for role in ROLES:
        assert services[role]["command"] == containers[role]["command"], role
    gateway = services["gateway"]["command"]
    assert gateway == dockerfile_cmd()
    # The gateway runs `make serve`'s uvicorn command; only the bind address and worker count
    # are make variables there.
    assert gateway[:4] == ["python", "-m", "uvicorn", "config.asgi:application"]
    expected = make_serve_flags()
    values = {"--host": "0.0.0.0", "--port": "8000", "--workers": "2"}
    expected = [values.get(expected[i - 1], flag) if i else flag for i, flag in enumerate(expected)]
    assert gateway[3:] == expected
    assert containers["beat"]["command"][:4] == ["celery", "-A", "config", "beat"]
    assert containers["worker"]["command"][:4] == ["celery", "-A", "config", "worker"]


def test_the_gateway_runs_with_two_malloc_arenas_in_make_serve_and_the_image() -> None:
    """One malloc arena per thread kept ~6 MiB more resident per worker (docs/benchmarks.md)."""
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    (serve,) = [
        line
        for line in makefile.splitlines()
        if "uvicorn config.asgi:application" in line and "--workers" in line
    ]
    assert serve.strip().startswith("@MALLOC_ARENA_MAX=$${MALLOC_ARENA_MAX:-2} ")
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    runtime = dockerfile.split("AS runtime", 1)[1]
    assert "MALLOC_ARENA_MAX=2" in [
        word for line in runtime.splitlines() if line.startswith("ENV ") for word in line.split()
    ]


def test_probes_and_health_checks_point_at_real_gateway_paths() -> None:
    from gateway.hotpath.asgi import GATEWAY_PATH_PREFIXES

    deployment = manifest("Deployment", "smart-balancers-gateway")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    health = compose()["services"]["gateway"]["healthcheck"]["test"]
    assert "http://127.0.0.1:8000/readyz" in " ".join(health)
    for path in ("/readyz", "/healthz"):
        assert resolve(path, urlconf="gateway.hotpath.v1_urls").url_name == path.strip("/")
        assert path.startswith(GATEWAY_PATH_PREFIXES)  # served by the lean handler, no middleware
    # Every probe's port is the one the command listens on, and the Service sends traffic there.
    (port,) = container["ports"]
    command = container["command"]
    assert str(port["containerPort"]) == command[command.index("--port") + 1]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == port["name"]
    service = manifest("Service", "smart-balancers-gateway")
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    # Probes name a host the app accepts (a pod's IP is not in ALLOWED_HOSTS, and the gateway
    # answers a Host outside it with a 400).
    allowed = manifest("ConfigMap", "smart-balancers")["data"]["ALLOWED_HOSTS"].split(",")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["httpHeaders"] == [{"name": "Host", "value": PROBE_HOST}]
    assert PROBE_HOST in allowed
    assert f"'Host': '{PROBE_HOST}'" in " ".join(health)
    assert PROBE_HOST in interpolate(
        services_env()["ALLOWED_HOSTS"], {"ALLOWED_HOSTS": "gateway.example.com"}
    ).split(",")
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > int(command[command.index("--timeout-graceful-shutdown") + 1])
    # Compose waits for the dependencies' own checks.
    services = compose()["services"]
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_the_celery_worker_and_beat_have_the_same_health_checks_in_compose_and_kubernetes() -> None:
    """Every long-running compose service has a health check; the Celery ones are run for real
    in test_the_declared_commands_run_a_working_deployment."""
    services = compose()["services"]
    for name, service in services.items():
        if name != "migrate":  # runs once and exits
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    containers = k8s_containers()
    for role in ("worker", "beat"):
        assert health_check(role) == containers[role]["livenessProbe"]["exec"]["command"], role
    assert "inspect ping" in " ".join(health_check("worker"))
    schedule = services["beat"]["command"][services["beat"]["command"].index("--schedule") + 1]
    assert f"'{schedule}.heartbeat'" in " ".join(health_check("beat"))


def test_selectors_scaling_and_a_single_beat_fit_together() -> None:
    gateway = manifest("Deployment", "smart-balancers-gateway")
    pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert gateway["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert (
        manifest("Service", "smart-balancers-gateway")["spec"]["selector"].items()
        <= pod_labels.items()
    )
    assert (
        manifest("PodDisruptionBudget", "smart-balancers-gateway")["spec"]["selector"][
            "matchLabels"
        ].items()
        <= pod_labels.items()
    )
    hpa = manifest("HorizontalPodAutoscaler", "smart-balancers-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "smart-balancers-gateway",
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    beat = manifest("Deployment", "smart-balancers-beat")
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"] == {"type": "Recreate"}
    assert "deploy" not in compose()["services"]["beat"]  # no replicas setting that could start two
    for doc in manifests():  # the image's non-root user everywhere
        if doc["kind"] in ("Deployment", "Job"):
            pod = doc["spec"]["template"]["spec"]
            assert (
                pod["securityContext"]["runAsNonRoot"]
                and pod["securityContext"]["runAsUser"] == 10001
            )
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_the_image_is_multi_stage_slim_non_root_and_leaves_the_dev_tools_out() -> None:
    dockerfile = "\n".join(
        line
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if not line.lstrip().startswith("#")
    )
    stages = re.findall(r"^FROM (\S+)", dockerfile, flags=re.MULTILINE)
    assert len(stages) >= 2 and all(stage == "python:3.11-slim" for stage in stages)
    assert re.search(r"^USER 10001", dockerfile, flags=re.MULTILINE)
    assert "scripts/deps.py | xargs" in dockerfile  # runtime dependencies only: no `dev`
    assert "deps.py dev" not in dockerfile and "playwright" not in dockerfile.lower()
    assert "scripts/deps.py --files-only | xargs /opt/venv/bin/pip install --no-deps" in dockerfile
    assert "collectstatic" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var", "tests", "bench"} <= set(ignored)


# --- the commands, running -----------------------------------------------------------------

TOPOLOGY_DB = "test_deploy_topology"
SEED = """
import json
from tests.factories import make_api_key, make_balancer, make_instance
a = make_instance(instance_id="topo-a", model="sim-topo-a")
b = make_instance(instance_id="topo-b", model="sim-topo-b")
make_balancer(name="topology", serving_name="topology", routes=[
    {"name": "primary", "intent": "First.", "instance": a, "priority": 1, "is_default": True},
    {"name": "fallback", "intent": "Second.", "instance": b, "priority": 2}])
print(json.dumps({"key": make_api_key()[1], "a": a.pk}))
"""


def interpolate(value: Any, variables: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error}, from `variables`."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if name in variables:
            return variables[name]
        assert op != ":?", f"compose requires {name}: {arg}"
        return arg or ""

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}", one, str(value))


def database_url(dbname: str) -> str:
    parts = urlsplit(
        os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    )
    return urlunsplit(parts._replace(path="/" + dbname))


@pytest.fixture
def topology_db() -> Iterator[str]:
    admin_url = database_url("postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TOPOLOGY_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TOPOLOGY_DB}")
    try:
        yield database_url(TOPOLOGY_DB)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {TOPOLOGY_DB} WITH (FORCE)")


class Processes:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def all_logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.log(name)[-3000:]}" for name in self.running)

    def stop_all(self) -> None:
        # The main process only: it stops its own children (a Celery worker's warm shutdown lets
        # a task in flight finish; SIGTERM to its pool processes as well would lose the task).
        for process in self.running.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 20
        for process in self.running.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def wait_until(what: str, check: Callable[[], Any], seconds: float, processes: Processes) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        for name, process in processes.running.items():
            if name not in ("migrate", "seed") and process.poll() is not None:
                raise AssertionError(
                    f"{name} exited ({process.returncode}) while waiting for "
                    f"{what}\n{processes.all_logs()}"
                )
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{processes.all_logs()}")
        time.sleep(0.2)


def query(url: str, sql: str, *args: Any) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, args)
        return cursor.fetchone() if cursor.description else None


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (REDIS_URL)")
def test_the_declared_commands_run_a_working_deployment(topology_db: str, tmp_path: Path) -> None:
    started = time.monotonic()
    services = app_services()
    # `python` and `celery` from this interpreter's environment, or from TOPOLOGY_BIN_DIR: say a
    # virtualenv holding only the image's dependencies (`scripts/deps.py`, no dev extras).
    bin_dir = os.environ.get("TOPOLOGY_BIN_DIR") or str(Path(sys.executable).parent)
    port = free_port()
    variables = {
        "SECRET_KEY": "topology-test-secret-key-" + "x" * 32,
        "POSTGRES_PASSWORD": "unused",
        "GATEWAY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    }
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DATABASE_URL", "REDIS_URL", "TEST_DATABASE_NAME", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        {
            name: interpolate(value, variables)
            for name, value in services["gateway"]["environment"].items()
        }
    )
    env.update(
        {
            # compose's hosts are `postgres` and `redis`; here the machine's, in databases of the
            # test's own.
            "DATABASE_URL": topology_db,
            "REDIS_URL": settings.REDIS_URL,
            "VAR_DIR": str(tmp_path / "var"),
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "GATEWAY_PROBE_SECONDS": "1",
            "GATEWAY_ROLLUP_SECONDS": "1",
            "GATEWAY_USAGE_FLUSH_SECONDS": "0.2",
            "GATEWAY_READY_CACHE_SECONDS": "0.2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    processes = Processes(env, tmp_path)

    def declared(role: str) -> list[str]:
        command = list(services[role]["command"])
        # The only substitutions: a free port instead of 8000 and loopback instead of 0.0.0.0 (the
        # test shares its machine), and beat's schedule file in the test's own directory.
        replace = {
            "--port": str(port),
            "--host": "127.0.0.1",
            "--schedule": str(tmp_path / "celerybeat-schedule"),
        }
        return [replace.get(command[i - 1], arg) if i else arg for i, arg in enumerate(command)]

    try:
        assert processes.start("migrate", declared("migrate")).wait(120) == 0, processes.log(
            "migrate"
        )
        seed = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", SEED],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert seed.returncode == 0, seed.stderr
        seeded = json.loads(seed.stdout.strip().splitlines()[-1])
        schedule = str(tmp_path / "celerybeat-schedule")

        def check(role: str) -> subprocess.CompletedProcess[str]:
            """The service's declared health check, as its container would run it."""
            command = [
                arg.replace("/tmp/celerybeat-schedule", schedule) for arg in health_check(role)
            ]
            # A container's HOSTNAME is its host name, which the worker names its node after.
            return subprocess.run(
                command,
                cwd=ROOT,
                env={**env, "HOSTNAME": socket.gethostname()},
                capture_output=True,
                text=True,
                timeout=60,
            )

        assert check("beat").returncode != 0, "no beat yet, no heartbeat file"
        gateway = processes.start("gateway", declared("gateway"))
        processes.start("worker", declared("worker"))
        processes.start("beat", declared("beat"))
        base = f"http://127.0.0.1:{port}"

        def ready() -> dict[str, Any] | None:
            try:  # as the probes ask
                response = httpx.get(base + "/readyz", headers={"Host": PROBE_HOST}, timeout=2)
            except httpx.HTTPError:
                return None
            return response.json() if response.status_code == 200 else None

        body = wait_until("/readyz", ready, 30, processes)
        assert body["checks"] == {"routing_snapshot": "ok", "database": "ok", "redis": "ok"}
        children = Path(f"/proc/{gateway.pid}/task/{gateway.pid}/children").read_text().split()
        workers = [
            pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(workers) == 2, (
            "the gateway command runs 2 worker processes"
        )  # (and multiprocessing's resource tracker)

        headers = {"Authorization": f"Bearer {seeded['key']}"}
        payload = {"model": "topology", "messages": [{"role": "user", "content": "hello"}]}

        def chat() -> httpx.Response:
            return httpx.post(
                base + "/v1/chat/completions", json=payload, headers=headers, timeout=10
            )

        sent = 0
        for _ in range(20):
            response = chat()
            sent += 1
            assert response.status_code == 200, response.text
            assert response.headers["x-balancer-instance"] == "topo-a"

        # Switch the primary's simulator down behind the gateway's back: a bare UPDATE bumps no
        # config version, so the gateway's snapshot still has it up and only the probe (beat ->
        # worker -> Redis -> every gateway worker) can steer traffic away from it.
        query(
            topology_db,
            "UPDATE targetgroups_instance SET options = %s::jsonb WHERE id = %s",
            json.dumps({"down": True}),
            seeded["a"],
        )
        wait_until(
            "a probe marking topo-a unavailable",
            lambda: (
                query(
                    topology_db,
                    "SELECT status FROM gateway_instancehealth WHERE instance_id = %s",
                    seeded["a"],
                )
                == ("unavailable",)
            ),
            15,
            processes,
        )

        def served_by_fallback() -> bool:
            nonlocal sent
            responses = [chat() for _ in range(4)]  # both gateway workers are likely to answer some
            sent += len(responses)
            assert all(r.status_code == 200 for r in responses)
            return all(r.headers["x-balancer-instance"] == "topo-b" for r in responses)

        wait_until("traffic moving to topo-b", served_by_fallback, 10, processes)

        def rolled_up() -> bool:
            row = query(
                topology_db,
                "SELECT COALESCE(SUM(requests), 0) FROM gateway_usagehourly WHERE serving_name = "
                "'topology'",
            )
            return row[0] == sent

        wait_until(f"a usage rollup of the {sent} requests", rolled_up, 15, processes)

        # The Celery services' health checks pass while they run (beat has ticked: the rollup
        # above was sent by it) and fail when they would not serve.
        worker_check = check("worker")
        assert worker_check.returncode == 0, worker_check.stdout + worker_check.stderr
        assert "pong" in worker_check.stdout
        beat_check = check("beat")
        assert beat_check.returncode == 0, beat_check.stderr
        processes.running["beat"].send_signal(signal.SIGSTOP)  # no tick refreshes it meanwhile
        try:
            stale = time.time() - 200
            os.utime(schedule + ".heartbeat", (stale, stale))
            assert check("beat").returncode != 0, "a heartbeat 200 s old fails the check"
        finally:
            processes.running["beat"].send_signal(signal.SIGCONT)

        # /metrics, whichever worker answers, holds the totals of both (config/metrics_dir.py).
        metrics = {}
        for family in text_string_to_metric_families(httpx.get(base + "/metrics", timeout=10).text):
            for sample in family.samples:
                metrics.setdefault(sample.name, []).append(sample)
        counted = sum(
            s.value
            for s in metrics["gateway_requests_total"]
            if s.labels["balancer"] == "topology" and s.labels["endpoint"] == "chat"
        )
        assert counted == sent, f"/metrics counted {counted} of the {sent} requests"
        assert {s.labels["pid"] for s in metrics["gateway_worker_config_version"]} <= set(workers)
        connections = query(
            topology_db, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", TOPOLOGY_DB
        )[0]
        redis_keys = redis.Redis.from_url(settings.REDIS_URL).dbsize()
        print(
            f"\ntopology: {sent} requests, probe, failover and rollup in "
            f"{time.monotonic() - started:.1f} s; "
            f"{connections} PostgreSQL connections open (2 gateway workers, worker, beat), "
            f"{redis_keys} Redis keys"
        )
    finally:
        processes.stop_all()
    assert check("worker").returncode != 0, "no worker, no answer to the ping"
    for name in ("gateway", "worker", "beat"):
        assert "Traceback" not in processes.log(name), processes.log(name)
