"""Settings a typo or a hostile file could make dangerous: non-finite or negative durations, TLS files that
would be ignored, secrets other users can read, and a journal created world-readable."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError, JournalError
from gateway.journal import SqliteJournal
from gateway.mqtt import CLI_NAMES, client_settings

DURATIONS = [
    ("batch", "max_age_s"),
    ("publish", "linger_ms"),
    ("mqtt", "keepalive_s"),
    ("chain", "poll_s"),
    ("sim", "interval_s"),
    ("ble", "silence_s"),
    ("ble", "connect_timeout_s"),
    ("ble", "scan_stall_s"),
]
ROLLUP = '[[rollup]]\ntarget = "health_supervision"\nkind = "evm"\nurl = "http://n:8545"\n'


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "1e300"])
@pytest.mark.parametrize("section,key", DURATIONS)
def test_every_duration_must_be_finite_and_in_range(section: str, key: str, value: str) -> None:
    data = tomllib.loads(f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError, match=rf"{section}(\.|\] ){key}"):  # [publish] linger_ms: an integer
        parse_config(data, "g.toml")


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
@pytest.mark.parametrize("key", ["period_s", "poll_s"])
def test_roll_up_durations_too(key: str, value: str) -> None:
    data = tomllib.loads(ROLLUP + f"{key} = {value}\n")
    with pytest.raises(ConfigError, match=rf"rollup\[0\]\.{key}"):
        parse_config(data, "g.toml")


def test_ordinary_durations_still_pass() -> None:
    cfg = parse_config(
        tomllib.loads(
            "[batch]\nmax_age_s = 0.5\n[ble]\nconnect_timeout_s = 30\n"
            "[mqtt]\nkeepalive_s = 60\n" + ROLLUP + "period_s = 60\n"
        )
    )
    assert cfg.batch.max_age_s == 0.5 and cfg.rollups[0].period_s == 60


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "key_file"])
def test_tls_files_with_a_plain_mqtt_url_are_refused(key: str) -> None:
    mqtt = {"url": "mqtt://broker:1883", key: "/etc/tiyi/x.pem"}
    if key == "key_file":
        mqtt["cert_file"] = "/etc/tiyi/c.pem"
    with pytest.raises(ConfigError, match=rf"\[mqtt\] {key}.*plain MQTT.*mqtts://"):
        parse_config({"mqtt": mqtt})


def test_tls_files_with_mqtts_parse() -> None:
    cfg = parse_config({"mqtt": {"url": "mqtts://broker:8883", "ca_file": "/etc/tiyi/ca.crt"}})
    assert cfg.mqtt.ca_file == Path("/etc/tiyi/ca.crt")


def test_a_key_file_without_its_certificate_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"key_file needs .*cert_file"):
        parse_config({"mqtt": {"url": "mqtts://broker:8883", "key_file": "/etc/tiyi/k.pem"}})


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620])
def test_a_password_file_open_to_others_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    pw = tmp_path / "mqtt.password"
    pw.write_text("s3cret\n")
    pw.chmod(mode)
    with pytest.raises(ConfigError, match=rf"\[mqtt\] password_file .*mode {mode:03o}.*chmod 600 {pw}") as err:
        client_settings("mqtt://b:1883", client_id="x", username="gw", password_file=pw)
    assert "s3cret" not in str(err.value)
    pw.chmod(0o600)
    settings = client_settings("mqtt://b:1883", client_id="x", username="gw", password_file=pw)
    assert settings.password == "s3cret" and "s3cret" not in repr(settings)


def test_missing_empty_or_userless_password_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--password-file .*No such file"):
        client_settings("mqtt://b:1883", client_id="x", username="u", password_file=tmp_path / "nope", names=CLI_NAMES)
    empty = tmp_path / "empty"
    empty.touch(0o600)
    with pytest.raises(ConfigError, match="is empty"):
        client_settings("mqtt://b:1883", client_id="x", username="u", password_file=empty)
    full = tmp_path / "pw"
    full.write_text("x")
    full.chmod(0o600)
    with pytest.raises(ConfigError, match=r"password_file needs .*username"):
        client_settings("mqtt://b:1883", client_id="x", password_file=full)


def test_a_client_key_open_to_others_is_refused(tmp_path: Path) -> None:
    key, cert = tmp_path / "c.key", tmp_path / "c.crt"
    key.write_text("not really a key")
    cert.write_text("not really a cert")
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=f"--key-file .*chmod 600 {key}"):
        client_settings("mqtts://b:8883", client_id="x", cert_file=cert, key_file=key, names=CLI_NAMES)
    key.chmod(0o600)
    with pytest.raises(ConfigError, match=r"--cert-file .*not a PEM certificate"):
        client_settings("mqtts://b:8883", client_id="x", cert_file=cert, key_file=key, names=CLI_NAMES)


def test_a_ca_file_that_is_missing_or_not_a_certificate(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--ca-file .*no such file"):
        client_settings("mqtts://b:8883", client_id="x", ca_file=tmp_path / "nope.crt", names=CLI_NAMES)
    junk = tmp_path / "junk.crt"
    junk.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=r"--ca-file .*not a PEM CA certificate"):
        client_settings("mqtts://b:8883", client_id="x", ca_file=junk, names=CLI_NAMES)


# ------------------------------------------------------------------ the journal's files


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what a shell outside systemd usually has
    try:
        yield
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.usefixtures("loose_umask")
def test_a_new_journal_is_private_whatever_the_umask(tmp_path: Path) -> None:
    state = tmp_path / "var" / "tiyi"
    j = SqliteJournal.open(state / "journal.sqlite3", "gw-1")
    try:
        files = [state / f"journal.sqlite3{x}" for x in ("", "-wal", "-shm")]
        assert all(f.exists() for f in files)
        assert _mode(state) == 0o700
        assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
    finally:
        j.close()


@pytest.mark.usefixtures("loose_umask")
def test_an_existing_loose_state_dir_and_journal_are_tightened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    SqliteJournal.open(state / "journal.sqlite3", "gw-1").close()
    state.chmod(0o755)
    for f in state.iterdir():
        f.chmod(0o644)
    (state / "journal.sqlite3-wal").touch(0o644)
    with caplog.at_level(logging.WARNING, "tiyi.journal"):
        j = SqliteJournal.open(state / "journal.sqlite3", "gw-1")
    j.close()
    assert _mode(state) == 0o700
    assert all(_mode(f) == 0o600 for f in state.iterdir())
    assert any("mode 755" in r.getMessage() and "0700" in r.getMessage() for r in caplog.records)


def test_a_shared_sticky_directory_is_warned_about_not_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with caplog.at_level(logging.WARNING, "tiyi.journal"):
        SqliteJournal.open(shared / "journal.sqlite3", "gw-1").close()
    assert _mode(shared) == 0o1777
    assert _mode(shared / "journal.sqlite3") == 0o600
    assert any("chmod 700" in r.getMessage() for r in caplog.records)


def test_a_corrupt_journal_still_says_so(tmp_path: Path) -> None:
    """The permission code's OSError handling must not swallow the journal's own errors (JournalError is an
    OSError too): damage that only the integrity check finds is still reported as corruption."""
    base = tmp_path / "base.sqlite3"
    SqliteJournal.open(base, "gw-1").close()
    with sqlite3.connect(base) as db:  # enough b-tree pages to damage one in the middle
        db.execute("CREATE TABLE filler(x INTEGER PRIMARY KEY, y)")
        db.executemany("INSERT INTO filler(y) VALUES (?)", [(i,) for i in range(3000)])
    sqlite3.connect(base).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    messages = []
    for offset in range(4096 * 5, base.stat().st_size, 4096 * 3 + 1000):
        damaged = tmp_path / f"j{offset}" / "journal.sqlite3"
        damaged.parent.mkdir(mode=0o700)
        damaged.write_bytes(base.read_bytes())
        with damaged.open("r+b") as fh:
            fh.seek(offset)
            fh.write(b"\x00\x07")
        try:
            SqliteJournal.open(damaged, "gw-1").close()
        except JournalError as exc:
            messages.append(str(exc))
    corrupt = [m for m in messages if "is corrupt" in m]
    assert corrupt and all(m.startswith("journal ") for m in corrupt), messages  # not re-wrapped as an open error


def test_a_state_dir_that_cannot_be_created_is_a_journal_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(JournalError, match="cannot open journal"):
        SqliteJournal.open(blocker / "state" / "journal.sqlite3", "gw-1")
