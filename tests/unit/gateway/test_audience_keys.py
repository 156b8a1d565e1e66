"""Audience SM4 keys: one 0600 file per key id, newest encrypts, older ones stay; unsafe or malformed files are
refused with a one-line error; `tiyi keys audience` never prints a key except through `export`."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.audience_keys import AudienceKeyError, AudienceKeyring
from gateway.cli import main

CONFIG = """\
[gateway]
id = "gw-t"
state_dir = "{state}"
[[audience]]
id = "platform-health"
purpose = "health_management"
jurisdiction = "mainland"
encrypt = true
"""


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_rotation_keeps_old_keys_and_the_newest_encrypts(tmp_path: Path) -> None:
    ring = AudienceKeyring(tmp_path / "keys" / "audience", "platform-health")
    with pytest.raises(AudienceKeyError, match="has no key"):
        ring.current()  # fail closed: an encrypting audience without a key gets nothing
    first, second = ring.add(), ring.add()
    assert first.kid.startswith("k1-") and second.kid.startswith("k2-")
    assert ring.kids() == [first.kid, second.kid]
    assert ring.current() == second and ring.by_kid(first.kid) == first.key
    assert first.key != second.key and len(first.key) == 16
    for p in ring.directory.iterdir():
        assert mode(p) == 0o600
    assert mode(ring.directory) == 0o700 and mode(ring.directory.parent) == 0o700
    assert first.key.hex() not in repr(first)


@pytest.mark.parametrize(
    "content,chmod,fragment",
    [
        ("00" * 16, 0o644, "accessible by group/others"),
        ("00" * 15, 0o600, "is not 16 bytes of hex"),
        ("zz" * 16, 0o600, "is not 16 bytes of hex"),
    ],
)
def test_unsafe_or_malformed_key_files_are_refused(tmp_path: Path, content: str, chmod: int, fragment: str) -> None:
    ring = AudienceKeyring(tmp_path, "aud-1")
    kid = ring.add().kid
    path = ring.directory / f"{kid}.key"
    path.write_text(content)
    path.chmod(chmod)
    with pytest.raises(AudienceKeyError, match=fragment):
        ring.current()


def test_an_unknown_kid_is_an_error(tmp_path: Path) -> None:
    ring = AudienceKeyring(tmp_path, "aud-1")
    ring.add()
    with pytest.raises(AudienceKeyError, match="has no key 'k9-00000000'"):
        ring.by_kid("k9-00000000")
    with pytest.raises(AudienceKeyError, match="has no key"):
        ring.by_kid("../../gateway")


def test_cli_new_rotate_list_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text(CONFIG.format(state=tmp_path / "state"))
    args = ["--config", str(cfg)]
    assert main(["keys", "audience", "rotate", "platform-health", *args]) == 2  # nothing to rotate yet
    assert main(["keys", "audience", "new", "platform-health", *args]) == 0
    assert main(["keys", "audience", "new", "platform-health", *args]) == 2  # new only once
    assert main(["keys", "audience", "rotate", "platform-health", *args]) == 0
    capsys.readouterr()
    ring = AudienceKeyring(tmp_path / "state" / "keys" / "audience", "platform-health")
    keys = ring.load()
    assert main(["keys", "audience", "list", "platform-health", *args]) == 0
    listed = capsys.readouterr().out
    assert listed == f"{keys[0].kid}\n{keys[1].kid}  (encrypts new views)\n"
    assert all(k.key.hex() not in listed for k in keys)
    assert main(["keys", "audience", "export", "platform-health", *args]) == 0
    assert capsys.readouterr().out == "".join(f"{k.kid} {k.key.hex()}\n" for k in keys)
    assert main(["keys", "audience", "new", "not-configured", *args]) == 2
    err = capsys.readouterr().err
    assert "no [[audience]] with id 'not-configured'" in err and "Traceback" not in err
