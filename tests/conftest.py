"""Shared fixtures: real processes (Mosquitto) on free loopback ports, started and stopped by the tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.services import Mosquitto, free_port, mosquitto_binary, wait_port


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
GANACHE = ROOT / "tools" / "node_modules" / "ganache" / "dist" / "node" / "cli.js"


@dataclass
class Ganache:
    """A real JSON-RPC EVM node (ganache 7.9.2) configured like a FISCO BCOS chain: legacy transactions,
    no base fee, gas price 0 so an unfunded account can send."""

    port: int
    db_path: Path | None = None  # keeps chain state across stop/start, like a real node's disk
    proc: subprocess.Popen[bytes] | None = None
    block_time: float = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = ["node", str(GANACHE), "--host", "127.0.0.1", "--port", str(self.port), "--chain.chainId", "20200",
                "--chain.hardfork", "berlin", "--miner.defaultGasPrice", "0", "--logging.quiet",
                "--wallet.totalAccounts", "1"]
        if self.db_path is not None:
            args += ["--database.dbPath", str(self.db_path)]
        if self.block_time:
            args += ["--miner.blockTime", str(self.block_time)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # lets ganache flush its database
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def rpc(self, method: str, *params: object) -> object:
        import json
        import urllib.request

        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
        req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())["result"]


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
