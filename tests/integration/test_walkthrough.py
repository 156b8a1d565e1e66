"""docs/operations.md followed from install to a paired (simulated) device on the dashboard, as a new user on a
fresh machine would: ``deploy/install.sh`` into a throwaway root (the sandbox of test_install.py), the
settings of "Rehearse without hardware" applied to the installed configuration, a token made with the CLI,
``tiyi run`` started on that configuration, the seen straps listed, and one paired on the dashboard in
headless Chromium until its reading shows.

The guide's settings and commands are read from the guide itself, so the two cannot drift apart. What only the
sandbox needs is changed besides, and nothing else: paths under the throwaway root, this test's private broker
and a free port. The venv in the root is built without extras (as in test_install.py, to stay fast), so the
commands that need them (``tiyi run``, ``devices list`` with the radio stack) run from this checkout instead.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from bench.services import free_port
from tests.conftest import Mosquitto
from tests.integration.test_dashboard_browser import ARGS, CHROMIUM, keep
from tests.integration.test_install import install, make_root

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operations.md"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make test installs it)")


def rehearsal() -> tuple[dict[str, dict[str, str]], list[str], str]:
    """The guide's settings (section → key → TOML value), its shell commands, and the address it pairs."""
    text = GUIDE.read_text(encoding="utf-8")
    part = text.split("### Rehearse without hardware", 1)[1].split("\n## ", 1)[0]
    toml = re.search(r"```toml\n(.*?)```", part, re.DOTALL)
    sh = re.search(r"```sh\n(.*?)```", part, re.DOTALL)
    addr = re.search(r"enter the first strap's address `([0-9A-F:]{17})`", part)
    assert toml and sh and addr, "the guide's rehearsal section lost its settings, commands or address"
    settings: dict[str, dict[str, str]] = {}
    section = ""
    for line in toml.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("["):
            section = line.strip("[]")
            settings[section] = {}
        elif "=" in line:
            key, value = (x.strip() for x in line.split("=", 1))
            settings[section][key] = value
    commands = [c.split("#", 1)[0].strip() for c in sh.group(1).splitlines() if c.strip()]
    return settings, commands, addr.group(1)


def apply(conf: str, settings: dict[str, dict[str, str]]) -> str:
    """Each setting into its section of the installed file: replaced where it is, added where it is not; a
    commented-out section header (``# [api]``) is uncommented first, its commented settings stay comments."""
    for section, values in settings.items():
        conf = re.sub(rf"^# \[{section}\]$", f"[{section}]", conf, flags=re.M)
        head = re.search(rf"^\[{section}\]\n", conf, re.M)
        assert head is not None, f"the installed configuration has no [{section}]"
        end = re.search(r"^\[", conf[head.end() :], re.M)
        body_end = head.end() + (end.start() if end else len(conf) - head.end())
        body = conf[head.end() : body_end]
        for key, value in values.items():
            line = f"{key} = {value}"
            body, n = re.subn(rf"^{key} *=.*$", line, body, flags=re.M)
            if n == 0:
                body = line + "\n" + body
        conf = conf[: head.end()] + body + conf[body_end:]
    return conf


def tiyi(*args: str, exe: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [*(exe or [sys.executable, "-m", "gateway.cli"]), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


def test_from_install_to_a_paired_simulated_device_on_the_dashboard(mosquitto: Mosquitto, tmp_path: Path) -> None:
    settings, commands, address = rehearsal()
    # 1. Install (section 1).
    root = make_root(tmp_path / "pi")
    first = install(root, "--extras", "none")
    assert first.returncode == 0, first.stdout + first.stderr
    installed = root / "etc" / "tiyi" / "gateway.toml"
    state = root / "var" / "lib" / "tiyi"
    assert (state / "keys" / "gateway.key").exists()

    # 2. The rehearsal's settings, then only what the sandbox needs (its paths, broker and port).
    port = free_port()
    conf = apply(installed.read_text(encoding="utf-8"), settings)
    conf = re.sub(r'"(/(?:var/lib|etc)/tiyi[/"])', lambda m: f'"{root}{m.group(1)}', conf)  # into the root
    conf = apply(conf, {"mqtt": {"url": f'"{mosquitto.url}"'}, "api": {"port": str(port)}})
    assert not re.search(r'"/(var/lib|etc)/tiyi', conf), "the sandbox must not write outside its root"
    installed.write_text(conf, encoding="utf-8")
    assert settings["gateway"]["source"] == '"sim"' and settings["sim"]["radio"] == "true"
    # The install script picks the extras this configuration needs from it (the re-run of the guide).
    plan = install(root, "--dry-run")
    assert re.search(r"extras \[[a-z,]*sim[a-z,]*\]", plan.stdout) and "api" in plan.stdout, plan.stdout
    venv_tiyi = [str(root / "opt" / "tiyi" / ".venv" / "bin" / "tiyi")]
    check = tiyi("config", "check", str(installed), exe=venv_tiyi)
    assert check.returncode == 0, check.stdout + check.stderr

    # 3. The guide's commands, in its order: a token (with the installed program), the restart, the list.
    token_cmd, restart, listing = commands[1], commands[2], commands[3]
    assert "tiyi api token add front-desk --config /etc/tiyi/gateway.toml" in token_cmd
    assert restart == "sudo systemctl restart tiyi-gateway"
    made = tiyi("api", "token", "add", "front-desk", "--config", str(installed), exe=venv_tiyi)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(30)
    gw = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(installed)],
        env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "PATH": "/usr/bin:/bin"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert sock.recv(4096).decode().startswith("READY=1")
        assert "tiyi devices list --config /etc/tiyi/gateway.toml" in listing
        listed = tiyi("devices", "list", "--config", str(installed))
        assert listed.returncode == 0, listed.stderr

        # 4. The dashboard: token, pair the first strap by its address, see its reading.
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 390, "height": 844}, locale="zh-CN")
                page.goto(f"http://127.0.0.1:{port}/")
                page.fill("#token", token)
                page.click("#login button")
                expect(page.locator("#live")).to_have_text("实时")
                # Nothing is recorded before pairing: the straps are only seen.
                assert page.locator("#devices tbody tr .reading").filter(has_text="heart_rate").count() == 0
                page.fill("#entry", address)
                page.click("#pair button")
                expect(page.locator('#pairmsg[data-ok="1"]')).to_contain_text("ble-")
                pid = page.locator("#pairmsg").inner_text().split(": ")[1]
                row = page.locator(f'#devices tr[data-id="{pid}"]')
                expect(row).to_contain_text("✓", timeout=10000)
                expect(row.locator(".reading")).to_contain_text("heart_rate", timeout=20000)
                assert address not in page.content()
                shot = tmp_path / "walkthrough-paired-phone-zh.png"
                page.screenshot(path=str(shot), full_page=True)
                keep(shot)
            finally:
                browser.close()
        # The strap is paired under its pseudonymous id; the other two are still only seen, never recorded.
        listed = tiyi("devices", "list", "--config", str(installed))
        assert re.search(rf"{address} +id {pid}", listed.stdout), listed.stdout
        seen = listed.stdout.split("seen, not paired", 1)[1]
        assert "strap-1" in seen and "strap-2" in seen, listed.stdout
        devices = requests.get(
            f"http://127.0.0.1:{port}/api/v1/devices", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).json()
        assert [d["id"] for d in devices if d["records"] > 0] == [pid], devices
    finally:
        gw.terminate()
        _, err = gw.communicate(timeout=60)
        sock.close()
    assert gw.returncode == 0, err
    assert "Traceback" not in err
