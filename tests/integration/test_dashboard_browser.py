"""The staff dashboard in a real headless Chromium (Debian's, never a downloaded one): it asks for a token,
shows a simulated strap's readings live, pairs a device, and is screenshotted (kept as a test artefact)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.sources import SimulatedStrapSource
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
            # Anchor states are shown in the page's language (the state itself stays in data-state).
            final = page.locator('#batches tbody tr td[data-state="final"]').first
            expect(final).to_have_text("已上链确认", timeout=15000)
            expect(page.locator('#alarms [data-code="key_not_registered"]')).to_be_visible()

            shot = tmp_path / "dashboard-phone-zh.png"
            page.screenshot(path=str(shot), full_page=True)
            keep(shot)
            page.click("#lang")
            expect(page.locator("#pair h3")).to_have_text("Pair a new device")
            expect(final).to_have_text("final")
            page.set_viewport_size({"width": 1100, "height": 900})
            wide = tmp_path / "dashboard-wide-en.png"
            page.screenshot(path=str(wide), full_page=True)
            keep(wide)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000 and wide.stat().st_size > 10_000


def signed_in(p: Any, gw: RunningGateway, **context: Any) -> Any:
    browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
    page = browser.new_page(**context)
    page.goto(gw.base + "/")
    page.fill("#token", gw.token)
    page.click("#login button")
    return browser, page


def test_at_phone_width_the_page_never_scrolls_sideways_and_the_device_table_scrolls_in_its_box(
    gw: RunningGateway,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    for i in range(3):  # long pseudonymous ids, paired and not yet heard
        assert gw.post("/api/v1/devices", {"entry": f"C0:FF:EE:00:01:0{i}"}).status_code == 201
    gw.run_source(SimulatedStrapSource(devices=3, interval_s=0.5, seed=7, prefix="strap"))
    with sync_playwright() as p:
        browser, page = signed_in(p, gw, viewport={"width": 390, "height": 844}, locale="zh-CN")
        try:
            expect(page.locator('#devices tr[data-id="strap-003"] .reading')).to_contain_text("heart_rate")
            # A refused pairing answers with a long unbroken message: it wraps instead of widening the page.
            page.fill("#entry", "not-an-address-" * 6)
            page.click("#pair button")
            expect(page.locator('#pairmsg[data-ok="0"]')).to_contain_text("entry")
            m = page.evaluate(
                """() => {
                  const box = document.querySelector("#devices").parentElement;
                  window.scrollTo(500, window.scrollY);
                  const pageX = window.scrollX;
                  box.scrollLeft = 120;
                  const idCell = document.querySelector("#devices tbody tr td:first-child");
                  return { vw: window.innerWidth, page: document.scrollingElement.scrollWidth,
                           body: document.body.scrollWidth, pageX, overflow: getComputedStyle(box).overflowX,
                           boxScroll: box.scrollWidth, boxWidth: box.clientWidth, boxLeft: box.scrollLeft,
                           idLeft: idCell.getBoundingClientRect().left - box.getBoundingClientRect().left };
                }"""
            )
            assert m["page"] <= m["vw"] and m["body"] <= m["vw"] and m["pageX"] == 0, m
            assert m["overflow"] in ("auto", "scroll") and m["boxScroll"] > m["boxWidth"] and m["boxLeft"] > 0, m
            assert 0 <= m["idLeft"] <= 2, m  # the id column stays in view while the rest scrolls
        finally:
            browser.close()


def test_a_paired_device_never_heard_since_start_raises_device_silent(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import expect, sync_playwright

    import gateway.web

    monkeypatch.setattr(gateway.web, "SILENT_AFTER_S", 1.0)
    pid = gw.post("/api/v1/devices", {"entry": "C0:FF:EE:00:02:01"}).json()["id"]
    with sync_playwright() as p:
        browser, page = signed_in(p, gw, viewport={"width": 1000, "height": 800}, locale="en-US")
        try:
            alarm = page.locator('#alarms [data-code="device_silent"]')
            expect(alarm).to_contain_text(pid, timeout=10000)
            expect(alarm).to_contain_text("Device silent")
            # Forgotten, it is no longer expected to speak.
            assert requests.delete(gw.base + f"/api/v1/devices/{pid}", headers=gw.auth, timeout=10).status_code == 204
            expect(alarm).to_be_hidden(timeout=10000)
        finally:
            browser.close()
