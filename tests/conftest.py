"""Shared fixtures: real processes (Mosquitto) on free loopback ports, started and stopped by the tests."""

from __future__ import annotations

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
