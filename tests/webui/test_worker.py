"""Publishing through a real Celery worker: a change saved by the web code path is enqueued
after commit, carried by the broker, and published by ``celery -A webui.celery worker``.

Embedded: SQLite + kombu's filesystem broker under the state directory. Production:
PostgreSQL + Redis, and PostgreSQL + RabbitMQ, when POSTERN_TEST_POSTGRES /
POSTERN_TEST_REDIS / POSTERN_TEST_RABBITMQ are set (.ci/run sets them; without them those
cases are skipped, and fail under POSTERN_REQUIRE_ALL).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support

ROOT = Path(__file__).resolve().parents[2]

SAVE = """
import django; django.setup()
from django.db import transaction
from webui.core import changes
from webui.domains.models import Domain
with transaction.atomic():
    d = Domain.objects.create(name="worker.example")
    changes.changed(None, "web", "create", d, None)
print("saved")
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "POSTERN_STATE")}
    env.update(extra)
    return env


def _python(code: str, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def worker_factory() -> Iterator[object]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        f = log.open("wb")
        # A node name of its own: two workers named alike on one broker (another test run on
        # this machine, a worker a killed run left) cannot both hold their control queue.
        proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "webui.celery", "worker",
                                 "--pool", "solo", "--loglevel", "INFO", "--without-heartbeat",
                                 "--without-gossip", "--without-mingle",
                                 "--hostname", f"test-{env['POSTERN_NODE']}@%h"],
                                cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _publish_through_worker(env: dict[str, str], state: Path, worker_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _python("from webui import bootstrap; bootstrap.prepare_database()", env)
    assert _python(SAVE, env).strip() == "saved"   # enqueued before any worker runs
    assert not (state / "control" / "generation").exists()
    log = tmp_path / "worker.log"
    worker_factory(env, log)
    try:
        support.wait_for(lambda: (state / "control" / "generation").exists(), timeout=180,
                         what="the worker to publish")
    except AssertionError as exc:   # the worker's log as it is now, not as it was at the start
        raise AssertionError(f"{exc}; worker log: {log.read_text(errors='replace')[-3000:]}") \
            from None
    assert (state / "control" / "rcpthosts").read_text() == "worker.example\n"
    assert (state / "control" / "generation").read_text().startswith("1 ")


def test_embedded_filesystem_broker(tmp_path: Path, worker_factory) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "var"
    env = _env(POSTERN_STATE=str(state), DJANGO_SETTINGS_MODULE="webui.settings.embedded",
               POSTERN_NODE=f"t{secrets.token_hex(4)}")
    _publish_through_worker(env, state, worker_factory, tmp_path)
    assert (state / "broker" / "messages").is_dir()


def _require(var: str) -> str:
    value = os.environ.get(var)
    if not value:
        if support.REQUIRE_ALL:
            pytest.fail(f"{var} is not set")
        pytest.skip(f"{var} is not set (.ci/run sets it)")
    return value


@pytest.fixture
def postgres_database() -> Iterator[str]:
    import psycopg

    url = _require("POSTERN_TEST_POSTGRES")
    name = f"postern_w_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = url.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("broker_var", ["POSTERN_TEST_REDIS", "POSTERN_TEST_RABBITMQ"])
def test_production_postgresql_and_broker(tmp_path: Path, worker_factory,  # type: ignore[no-untyped-def]
                                          postgres_database: str, broker_var: str) -> None:
    """Redis or RabbitMQ: the same code, one setting (POSTERN_BROKER_URL) apart."""
    broker_url = _require(broker_var)
    state = tmp_path / "var"
    env = _env(POSTERN_STATE=str(state), DJANGO_SETTINGS_MODULE="webui.settings.production",
               POSTERN_SECRET_KEY=secrets.token_urlsafe(40), POSTERN_DATABASE_URL=postgres_database,
               POSTERN_BROKER_URL=broker_url, POSTERN_NODE=f"t{secrets.token_hex(4)}")
    _publish_through_worker(env, state, worker_factory, tmp_path)
    import psycopg

    with psycopg.connect(postgres_database) as conn:
        row = conn.execute("SELECT number, ok FROM postern_publish_generation").fetchone()
    assert row == (1, True)


def test_model_and_publish_suite_on_postgresql(postgres_database: str) -> None:
    """The publisher and API tests again, on PostgreSQL (Django makes test_<name> beside it)."""
    _require("POSTERN_TEST_POSTGRES")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-p", "no:randomly", "tests/webui/test_publish.py",
                          "tests/webui/test_api.py"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env=_env(POSTERN_TEST_DATABASE_URL=postgres_database))
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "skipped" not in out.stdout
