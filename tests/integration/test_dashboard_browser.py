"""The staff dashboard in a real headless Chromium (Debian's, never a downloaded one): it asks for a token,
shows a simulated strap's readings live, pairs a device, and is screenshotted (kept as a test artefact)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sources import SimulatedStrapSource
from tests.conftest import Mosquitto
from tests.integration.api_harness import RunningGateway

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make test installs it)")


@pytest.fixture
def gw(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[RunningGateway]:
    g = RunningGateway(tmp_path, mosquitto.url).start()
    try:
        yield g
    finally:
        g.close()


def keep(shot: Path) -> None:
    """Screenshots stay in the test's tmp dir; copied to $TIYI_ARTIFACTS when set."""
    dest = os.environ.get("TIYI_ARTIFACTS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(dest) / shot.name)


def test_live_readings_pairing_and_a_phone_sized_screenshot(gw: RunningGateway, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, locale="zh-CN")
            page.goto(gw.base + "/")
            # No token yet: only the sign-in form; a wrong token is refused and the form comes back.
            expect(page.locator("#login")).to_be_visible()
            page.fill("#token", "tiyi_wrong")
            page.click("#login button")
            expect(page.locator("#login")).to_be_visible()
            page.fill("#token", gw.token)
            page.click("#login button")
            expect(page.locator("#live")).to_have_text("实时")
            expect(page.locator("#login")).to_be_hidden()

            # A simulated strap starts now: its reading appears on the page (events come every second).
            gw.run_source(SimulatedStrapSource(devices=1, interval_s=0.5, seed=7, prefix="strap"))
            row = page.locator('#devices tr[data-id="strap-001"]')
            expect(row.locator(".reading")).to_contain_text("heart_rate", timeout=5000)
            expect(row).to_contain_text(re.compile(r"bpm|heart_rate"))

            # Pair a device by address: the page shows its pseudonymous id, never the address.
            page.fill("#entry", "C0:FF:EE:00:00:02")
            page.fill("#model", "strap")
            page.click("#pair button")
            expect(page.locator("#pairmsg")).to_contain_text("ble-")
            pid = page.locator("#pairmsg").inner_text().split(": ")[1]
            expect(page.locator(f'#devices tr[data-id="{pid}"]')).to_contain_text("✓", timeout=5000)
            assert "C0:FF:EE" not in page.locator("#devices").inner_text()

            # Batches close and anchor on the in-process chain; the key is not registered there: an alarm.
            expect(page.locator("#batches tbody tr").first).to_contain_text("final", timeout=15000)
            expect(page.locator('#alarms [data-code="key_not_registered"]')).to_be_visible()

            shot = tmp_path / "dashboard-phone-zh.png"
            page.screenshot(path=str(shot), full_page=True)
            keep(shot)
            page.click("#lang")
            expect(page.locator("#pair h3")).to_have_text("Pair a new device")
            page.set_viewport_size({"width": 1100, "height": 900})
            wide = tmp_path / "dashboard-wide-en.png"
            page.screenshot(path=str(wide), full_page=True)
            keep(wide)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000 and wide.stat().st_size > 10_000
