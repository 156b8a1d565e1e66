"""A private CA made with the `openssl` CLI, Mosquitto password files, and Mosquitto run from a given
configuration: what the TLS and ACL tests need beyond the plain broker of ``tests/conftest.py``."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.services import mosquitto_binary, wait_port


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def make_pki(d: Path) -> Pki:
    """A throw-away CA, a broker certificate for 127.0.0.1 and a client certificate; keys are 0600."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        d / "ca.key",
        "-out",
        d / "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=tiyi test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{name}.ext").write_text("basicConstraints=CA:FALSE\n" + ext)
        _openssl("req", *ec, "-keyout", d / f"{name}.key", "-out", d / f"{name}.csr", "-subj", f"/CN=tiyi {name}")
        _openssl(
            "x509",
            "-req",
            "-in",
            d / f"{name}.csr",
            "-CA",
            d / "ca.crt",
            "-CAkey",
            d / "ca.key",
            "-CAcreateserial",
            "-out",
            d / f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            d / f"{name}.ext",
        )
    for key in d.glob("*.key"):
        key.chmod(0o600)
    return Pki(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key")


def password_file(path: Path, users: dict[str, str]) -> Path:
    """A Mosquitto password file (hashed with mosquitto_passwd)."""
    path.unlink(missing_ok=True)
    path.touch(0o600)
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), user, password], check=True, capture_output=True)
    return path


def secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


@contextmanager
def mosquitto_with(conf_text: str, workdir: Path, port: int) -> Iterator[Path]:
    """Mosquitto running ``conf_text`` (plus, as root, ``user root`` so it can read a private temp dir);
    yields the log file. The configuration must listen on ``port``."""
    exe = mosquitto_binary()
    if exe is None:
        raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
    log = workdir / "mosquitto.log"
    conf = workdir / "mosquitto.conf"
    extra = f"log_dest file {log}\nlog_type all\n" + ("user root\n" if os.geteuid() == 0 else "")
    conf.write_text(conf_text + "\n" + extra)
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            wait_port(port)
        except TimeoutError:
            proc.kill()
            _, err = proc.communicate()
            raise RuntimeError(
                f"mosquitto did not start: {err.decode(errors='replace')} {log.read_text() if log.exists() else ''}"
            ) from None
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
