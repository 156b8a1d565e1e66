"""Shared fixtures: real processes (Mosquitto) on free loopback ports, started and stopped by the tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Mosquitto:
    """A private Mosquitto on a free port; ``stop``/``start`` simulate broker outages."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 100\n"
            f"log_dest file {self.workdir / 'mosquitto.log'}\n"
        )
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        pytest.fail("mosquitto is not installed: run `make test` (it installs it) or apt-get install mosquitto")
    broker = Mosquitto(port=free_port(), workdir=tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


ROOT = Path(__file__).resolve().parents[1]
GANACHE = ROOT / "tools" / "node_modules" / "ganache" / "dist" / "node" / "cli.js"


@dataclass
class Ganache:
    """A real JSON-RPC EVM node (ganache 7.9.2) configured like a FISCO BCOS chain: legacy transactions,
    no base fee, gas price 0 so an unfunded account can send."""

    port: int
    proc: subprocess.Popen[bytes] | None = None
    block_time: float = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = ["node", str(GANACHE), "--host", "127.0.0.1", "--port", str(self.port), "--chain.chainId", "20200",
                "--chain.hardfork", "berlin", "--miner.defaultGasPrice", "0", "--logging.quiet",
                "--wallet.totalAccounts", "1"]
        if self.block_time:
            args += ["--miner.blockTime", str(self.block_time)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def ganache() -> Iterator[Ganache]:
    if not GANACHE.exists():
        pytest.fail("ganache is not installed: run `make test` (it runs npm ci in tools/)")
    node = Ganache(port=free_port())
    node.start()
    try:
        yield node
    finally:
        node.stop()
