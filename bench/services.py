"""Real local services for tests and benchmarks: a private Mosquitto and a ganache node on free loopback ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


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


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


@dataclass
class Mosquitto:
    """A private Mosquitto; ``stop``/``start`` simulate broker outages."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    persistent: bool = False  # keep sessions and queued messages across restarts (saved on SIGTERM)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        if self.persistent:
            # As root, Mosquitto would drop to user "mosquitto", which cannot write into a private temp dir.
            persistence = f"persistence true\npersistence_location {self.workdir}/\n"
            persistence += "user root\n" if os.geteuid() == 0 else ""
        else:
            persistence = "persistence false\n"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"{persistence}"
            "max_queued_messages 1000000\n"
            "max_inflight_messages 100\n"
            "set_tcp_nodelay true\n"  # as deploy/mosquitto/tiyi.conf: acks are not held back by Nagle
            f"log_dest file {self.workdir / 'mosquitto.log'}\n"
        )
        exe = mosquitto_binary()
        if exe is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
        args = [
            "node",
            str(GANACHE),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--chain.chainId",
            "20200",
            "--chain.hardfork",
            "berlin",
            "--miner.defaultGasPrice",
            "0",
            "--logging.quiet",
            "--wallet.totalAccounts",
            "1",
        ]
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
