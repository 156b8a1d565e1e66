"""Shared fixtures: real processes (Mosquitto, ganache) on free loopback ports and throwaway PostgreSQL databases,
started and dropped by the tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.services import GANACHE, Ganache, Mosquitto, free_port, mosquitto_binary


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed: run `make test` (it installs it) or apt-get install mosquitto")
    broker = Mosquitto(port=free_port(), workdir=tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ganache(tmp_path: Path) -> Iterator[Ganache]:
    if not GANACHE.exists():
        pytest.fail("ganache is not installed: run `make test` (it runs npm ci in tools/)")
    (tmp_path / "chaindb").mkdir()
    node = Ganache(port=free_port(), db_path=tmp_path / "chaindb")
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def database() -> Iterator[str]:
    """A throwaway database on the machine's PostgreSQL (127.0.0.1:5432, trust auth), dropped afterwards: the
    ingest tests' store. A PostgreSQL that is not running fails the test (it is a real part here, never skipped)."""
    import psycopg

    name = f"tiyi_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect("host=127.0.0.1 dbname=postgres", autocommit=True)
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL is not running on 127.0.0.1:5432: {exc}")
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"host=127.0.0.1 dbname={name}"
    finally:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        admin.close()
