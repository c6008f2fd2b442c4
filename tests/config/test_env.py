from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import envbool, envfloat, envint, envsecret

ROOT = Path(__file__).resolve().parents[2]


def test_envbool_refuses_a_value_that_is_not_a_boolean(monkeypatch):
    monkeypatch.setenv("SB_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="SB_FLAG"):
        envbool("SB_FLAG")
    monkeypatch.setenv("SB_FLAG", "yes")
    assert envbool("SB_FLAG") is True


def test_envint_refuses_words_and_values_under_the_minimum(monkeypatch):
    monkeypatch.setenv("SB_N", "two")
    with pytest.raises(ImproperlyConfigured, match="SB_N must be an integer"):
        envint("SB_N", 1)
    monkeypatch.setenv("SB_N", "0")
    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        envint("SB_N", 1, minimum=1)


def test_envfloat_refuses_words_infinities_and_values_under_the_minimum(monkeypatch):
    monkeypatch.setenv("SB_SECONDS", "soon")
    with pytest.raises(ImproperlyConfigured, match="SB_SECONDS must be a number"):
        envfloat("SB_SECONDS", 1.0)
    monkeypatch.setenv("SB_SECONDS", "inf")
    with pytest.raises(ImproperlyConfigured, match="finite"):
        envfloat("SB_SECONDS", 1.0)
    monkeypatch.setenv("SB_SECONDS", "0")
    with pytest.raises(ImproperlyConfigured, match=r"at least 0\.05"):
        envfloat("SB_SECONDS", 1.0, minimum=0.05)
    monkeypatch.setenv("SB_SECONDS", "0.25")
    assert envfloat("SB_SECONDS", 1.0, minimum=0.05) == 0.25


def test_a_zero_poll_interval_stops_the_process_at_start():
    env = {
        **os.environ,
        "GATEWAY_CONFIG_POLL_SECONDS": "0",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    out = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "GATEWAY_CONFIG_POLL_SECONDS must be at least 0.05" in out.stderr


def test_the_beat_schedule_reads_the_settings_and_refuses_a_bad_interval():
    env = {
        **os.environ,
        "GATEWAY_PROBE_SECONDS": "soon",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    out = subprocess.run(
        [sys.executable, "-c", "import config.celery"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "GATEWAY_PROBE_SECONDS must be a number" in out.stderr


def test_the_secret_key_is_generated_once_into_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv("SB_SECRET", raising=False)
    path = tmp_path / "var" / "secret_key"
    first = envsecret("SB_SECRET", fallback_file=path)
    assert len(first) >= 50 and envsecret("SB_SECRET", fallback_file=path) == first
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_bad_setting_stops_the_process_with_a_message_naming_it(tmp_path):
    env = {**os.environ, "DEBUG": "maybe", "VAR_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "DEBUG must be a boolean" in result.stderr


def test_check_services_says_in_one_line_what_is_unreachable():
    env = {
        **os.environ,
        "DATABASE_URL": "postgres://postgres@127.0.0.1:1/test",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    result = subprocess.run(
        [sys.executable, "scripts/check_services.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and "DATABASE_URL unreachable" in lines[0]
        and "REDIS_URL unreachable" in lines[0]
    )
