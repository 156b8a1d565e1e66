"""Every state of the anchor lifecycle has a Chinese and an English label on the dashboard, and so do the
device states and the alarm codes: nothing reaches gym staff as an untranslated code."""

from __future__ import annotations

import re
from pathlib import Path

from anchoring.lifecycle import AnchorState

APP = Path(__file__).resolve().parents[3] / "gateway" / "web" / "static" / "app.js"


def labels() -> dict[str, dict[str, str]]:
    text = APP.read_text(encoding="utf-8")
    out = {}
    for lang in ("zh", "en"):
        block = re.search(rf"^\s*{lang}: \{{(.*?)\}},\s*$", text, re.MULTILINE | re.DOTALL)
        assert block is not None, lang
        out[lang] = dict(re.findall(r'(\w+): "([^"]+)"', block.group(1)))
    return out


def test_every_anchor_state_has_a_label_in_both_languages() -> None:
    got = labels()
    for state in AnchorState:
        zh, en = got["zh"].get(f"anc_{state.value}"), got["en"].get(f"anc_{state.value}")
        assert zh and en, state
        assert re.search(r"[\u4e00-\u9fff]", zh), (state, zh)  # Chinese, not the code copied over
        assert not re.search(r"[\u4e00-\u9fff]", en), (state, en)


def test_both_languages_label_the_same_things() -> None:
    got = labels()
    assert set(got["zh"]) == set(got["en"])
    codes = ("broker_down", "chain_down", "disk_filling", "device_silent", "clock_jump", "key_not_registered")
    assert all(c in got["zh"] for c in (*codes, "st_connected", "st_seen", "st_paired"))
