"""The admin API over HTTPS (``[api] cert_file``/``key_file``) with a self-signed certificate made by the OpenSSL
CLI: the token is still required over TLS, plain HTTP gets no answer, ``tiyi status`` reads it, and a
network-facing API without TLS is refused at start with one line unless plain HTTP is allowed on purpose."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from bench.services import free_port
from gateway.api_tokens import add_token
from gateway.keys import generate_keypair
from tests.conftest import Mosquitto

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs the OpenSSL command-line tool")


def self_signed(d: Path, cn: str = "127.0.0.1") -> tuple[Path, Path]:
    cert, key = d / "api-cert.pem", d / "api-key.pem"
    assert OPENSSL is not None
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days",
         "2", "-subj", f"/CN={cn}", "-addext", f"subjectAltName=IP:{cn}", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


def write_config(d: Path, broker: str, api: str) -> Path:
    conf = d / "gw.toml"
    conf.write_text(
        f'[gateway]\nid = "gw-tls"\nstate_dir = "{d}"\n[mqtt]\nurl = "{broker}"\n[chain]\nkind = "none"\n'
        f"[sim]\ndevices = 1\n[api]\n{api}\n"
    )
    return conf


def tiyi(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_https_serves_with_the_token_still_required(mosquitto: Mosquitto, tmp_path: Path) -> None:
    generate_keypair(tmp_path / "keys")
    cert, key = self_signed(tmp_path)
    port = free_port()
    conf = write_config(tmp_path, mosquitto.url, f'port = {port}\ncert_file = "{cert}"\nkey_file = "{key}"')
    token = add_token(tmp_path / "api-tokens", "tests")
    assert tiyi("config", "check", str(conf)).returncode == 0
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(30)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(conf), "--duration", "60"],
        env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "PATH": "/usr/bin:/bin"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert sock.recv(4096).decode().startswith("READY=1")  # the API is up once READY is sent
        base = f"https://127.0.0.1:{port}"
        assert requests.get(base + "/api/v1/health", verify=str(cert), timeout=10).json() == {"status": "ok"}
        assert requests.get(base + "/api/v1/devices", verify=str(cert), timeout=10).status_code == 401
        wrong = {"Authorization": "Bearer tiyi_not-a-token"}
        assert requests.get(base + "/api/v1/devices", headers=wrong, verify=str(cert), timeout=10).status_code == 401
        good = {"Authorization": f"Bearer {token}"}
        r = requests.get(base + "/api/v1/config", headers=good, verify=str(cert), timeout=10)
        assert r.status_code == 200 and r.json()["api"]["cert_file"] == str(cert)
        # A client that does not trust the certificate gets no answer at all, and neither does plain HTTP.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(base + "/api/v1/health", timeout=10)
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/api/v1/devices", headers=good, timeout=10)
        # tiyi status reaches the API over HTTPS, trusting the configured certificate only.
        st = tiyi("status", "--config", str(conf), env={"TIYI_API_TOKEN": token})
        assert f"API on port {port}" in st.stdout, st.stdout + st.stderr
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
        sock.close()
    assert proc.returncode == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize("listen", ["0.0.0.0", "192.0.2.10", "::", "gateway.local"])
def test_a_network_facing_api_without_tls_is_refused_with_one_line(tmp_path: Path, listen: str) -> None:
    generate_keypair(tmp_path / "keys")
    conf = write_config(tmp_path, "mqtt://127.0.0.1:1", f'listen = "{listen}"\nport = {free_port()}')
    run = tiyi("run", "--config", str(conf), "--duration", "5")
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert "api.listen" in lines[0] and "allow_plain_http" in lines[0] and "cert_file" in lines[0]
    check = tiyi("config", "check", "--no-files", str(conf))
    assert check.returncode == 1 and "allow_plain_http" in check.stdout + check.stderr


def test_plain_http_off_loopback_only_when_allowed_on_purpose(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "keys")
    api = f'listen = "0.0.0.0"\nport = {free_port()}\nallow_plain_http = true'
    conf = write_config(tmp_path, "mqtt://127.0.0.1:1", api)
    check = tiyi("config", "check", "--no-files", str(conf))
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_key_others_can_read_or_a_key_of_another_certificate_is_refused(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "keys")
    cert, key = self_signed(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = self_signed(other)
    for key_file, expect in ((key, "chmod 600"), (other_key, "api.cert_file")):
        key_file.chmod(0o644 if key_file == key else 0o600)
        conf = write_config(
            tmp_path, "mqtt://127.0.0.1:1", f'port = {free_port()}\ncert_file = "{cert}"\nkey_file = "{key_file}"'
        )
        run = tiyi("run", "--config", str(conf), "--duration", "5")
        lines = run.stderr.strip().splitlines()
        assert run.returncode != 0 and len(lines) == 1 and expect in lines[0], run.stderr
        check = tiyi("config", "check", str(conf))
        assert check.returncode == 1 and expect in check.stdout + check.stderr
    # Half a TLS configuration is a configuration error, not a silent fall-back to plain HTTP.
    conf = write_config(tmp_path, "mqtt://127.0.0.1:1", f'port = {free_port()}\ncert_file = "{cert}"')
    check = tiyi("config", "check", "--no-files", str(conf))
    assert check.returncode == 1 and "go together" in check.stdout + check.stderr
    assert os.stat(key).st_mode & 0o077  # (the first case really had a key open to others)
