"""Fixtures the integration tests share (the processes they run on are in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Mosquitto
from tests.integration.api_harness import RunningGateway


@pytest.fixture
def gw(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[RunningGateway]:
    """A started gateway with its admin API on a real port (a real Mosquitto, the in-process chain); drained
    and stopped after the test."""
    with RunningGateway(tmp_path, mosquitto.url) as g:
        yield g
