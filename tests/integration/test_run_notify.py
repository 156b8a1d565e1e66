"""`tiyi run` under systemd's notification protocol (a real datagram socket stands in for systemd) with its
admin API configured: READY=1 only once the API answers, watchdog pings while it runs, STOPPING=1 at drain."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import requests

from bench.services import free_port
from gateway.keys import generate_keypair
from tests.conftest import Mosquitto


def test_ready_pings_and_stopping_with_the_api_served(mosquitto: Mosquitto, tmp_path: Path) -> None:
    generate_keypair(tmp_path / "keys")
    port = free_port()
    conf = tmp_path / "gw.toml"
    conf.write_text(
        f'[gateway]\nid = "gw-notify"\nstate_dir = "{tmp_path}"\n'
        f'[mqtt]\nurl = "{mosquitto.url}"\n[chain]\nkind = "none"\n[sim]\ndevices = 2\n[api]\nport = {port}\n'
    )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(30)
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(conf), "--duration", "4"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = sock.recv(4096).decode()
        assert first.startswith("READY=1\nSTATUS=gateway gw-notify running"), first
        # READY means the API is already up: health answers anonymously, the rest wants a token.
        assert requests.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5).json() == {"status": "ok"}
        assert requests.get(f"http://127.0.0.1:{port}/api/v1/devices", timeout=5).status_code == 401
        seen = [first]
        while not seen[-1].startswith("STOPPING=1"):
            seen.append(sock.recv(4096).decode())
        assert seen.count("WATCHDOG=1") >= 4  # about every 0.5 s for 4 s
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        proc.kill()
        sock.close()
    assert "Traceback" not in err
