"""Shared fixtures: real PostgreSQL and Redis, isolated per test run.

- PostgreSQL: a fresh database per session (``fwtest_<random>``), dropped at the end.
- Redis: a database number claimed for this session with SET NX on db 0 (so concurrent test runs on one
  machine never share one), flushed before and after.
Both services must be up: .ci/run starts them; a test never skips because one is down. `make test` runs two pytest
processes (pytest-xdist): each is a session of its own, so each claims its own database number and databases.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import redis

from tasks.store.ledger import Store
from tasks.store.migrate import upgrade

PG_ADMIN = os.environ.get("FEEDWORKER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST = os.environ.get("FEEDWORKER_TEST_REDIS", "redis://127.0.0.1:6379")
DATA = Path(__file__).parent / "data"


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (SQLAlchemy URL), dropped afterwards."""
    name = f"fwtest_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """SQLAlchemy URL of a fresh PostgreSQL database for this session."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(scope="session")
def redis_db() -> Iterator[int]:
    """A Redis database number no other concurrent test run holds."""
    admin = redis.Redis.from_url(f"{REDIS_HOST}/0")
    token = secrets.token_hex(8)
    for db in range(2, 16):
        if admin.set(f"feedworker-test-claim:{db}", token, nx=True, ex=3600):
            break
    else:
        raise RuntimeError("no free Redis database for tests (all of 2..15 claimed)")
    client = redis.Redis.from_url(f"{REDIS_HOST}/{db}")
    client.flushdb()
    yield db
    client.flushdb()
    if admin.get(f"feedworker-test-claim:{db}") == token.encode():
        admin.delete(f"feedworker-test-claim:{db}")


@pytest.fixture(scope="session")
def redis_url(redis_db: int) -> str:
    return f"{REDIS_HOST}/{redis_db}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store test runs on SQLite and on PostgreSQL (a fresh schema-less database per test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated store on each backend (see ``store_url``)."""
    s = Store(store_url)
    upgrade(s)
    yield s
    s.dispose()


# -- RabbitMQ: a vhost of the test run's own ------------------------------------------------------------------------

RABBITMQ = os.environ.get("FEEDWORKER_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672")


def rabbitmqctl(*args: str) -> None:
    import subprocess

    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def fresh_vhost() -> Iterator[str]:
    """A new RabbitMQ vhost (``fwtest_<random>``, the guest user allowed in), deleted afterwards with everything in
    it: the broker URL. The shared RabbitMQ server itself is never restarted or reconfigured."""
    name = f"fwtest_{secrets.token_hex(6)}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"{RABBITMQ}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """A RabbitMQ broker URL on a fresh vhost for this session (tests empty the queues they count)."""
    with fresh_vhost() as url:
        yield url
