"""The consent ledger: grants and withdrawals take effect at once and persist as a verifying signed chain."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from edge.consent import check_consent_chain
from edge.sm2 import generate_signer
from gateway.binding import subject_id
from gateway.consent import CONSENT_FILE, ConsentError, ConsentLedger

SIGNER = generate_signer()
SUB = subject_id(b"s" * 32, "M-1")


def test_consent_is_granted_withdrawn_and_kept_as_a_signed_chain(tmp_path: Path) -> None:
    ledger = ConsentLedger(tmp_path, "gw-1", SIGNER)
    assert not ledger.allows(SUB, "research") and not ledger.allows(None, "research")
    ledger.record(SUB, "research", True, 1)
    ledger.record(SUB, "health_management", True, 2)
    assert ledger.allows(SUB, "research")
    ledger.record(SUB, "research", False, 3)
    assert not ledger.allows(SUB, "research") and ledger.allows(SUB, "health_management")
    again = ConsentLedger(tmp_path, "gw-1", SIGNER)  # after a restart
    assert not again.allows(SUB, "research") and again.allows(SUB, "health_management")
    assert check_consent_chain(again.signed_events(), "gw-1", SIGNER)[(SUB, "research")] is False
    assert len(again.signed_events(2)) == 1
    assert stat.S_IMODE((tmp_path / CONSENT_FILE).stat().st_mode) == 0o600
    assert "M-1" not in (tmp_path / CONSENT_FILE).read_text()


@pytest.mark.parametrize(("sub", "purpose"), [(SUB, "marketing"), ("M-1", "research"), ("", "research")])
def test_a_bad_request_is_refused_and_changes_nothing(tmp_path: Path, sub: str, purpose: str) -> None:
    ledger = ConsentLedger(tmp_path, "gw-1", SIGNER)
    with pytest.raises(ConsentError):
        ledger.record(sub, purpose, True, 1)
    assert ledger.signed_events() == [] and not (tmp_path / CONSENT_FILE).exists()


def test_a_ledger_edited_on_disk_is_refused(tmp_path: Path) -> None:
    ledger = ConsentLedger(tmp_path, "gw-1", SIGNER)
    ledger.record(SUB, "research", True, 1)
    ledger.record(SUB, "research", False, 2)
    events = json.loads((tmp_path / CONSENT_FILE).read_text())
    (tmp_path / CONSENT_FILE).write_text(json.dumps(events[:1]))  # the withdrawal removed: still a valid prefix
    assert ConsentLedger(tmp_path, "gw-1", SIGNER).allows(SUB, "research")  # a prefix verifies on its own ...
    (tmp_path / CONSENT_FILE).write_text(json.dumps(events[1:]))  # ... a gap does not
    with pytest.raises(ConsentError, match="does not verify"):
        ConsentLedger(tmp_path, "gw-1", SIGNER)
    (tmp_path / CONSENT_FILE).write_text("not json")
    with pytest.raises(ConsentError, match="not a consent ledger"):
        ConsentLedger(tmp_path, "gw-1", SIGNER)
    with pytest.raises(ConsentError, match="does not verify"):
        (tmp_path / CONSENT_FILE).write_text(json.dumps(events))
        ConsentLedger(tmp_path, "gw-1", generate_signer())  # another gateway key


def test_members_grant_and_withdraw_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli.main import main

    state = tmp_path / "state"
    assert main(["keys", "generate", "--dir", str(state / "keys")]) == 0
    cfg = tmp_path / "g.toml"
    cfg.write_text(f'[gateway]\nid = "gw-1"\nstate_dir = "{state}"\n')
    capsys.readouterr()
    assert main(["members", "grant", "--config", str(cfg), "M-77", "research"]) == 0
    assert main(["members", "withdraw", "--config", str(cfg), "M-77", "research"]) == 0
    out = capsys.readouterr().out
    assert "consent event 2" in out and "withdrew research" in out and "M-77" not in out
    assert main(["members", "grant", "--config", str(cfg), "M-77", "marketing"]) == 2
    err = capsys.readouterr().err
    assert "unknown purpose" in err and "Traceback" not in err
    assert "M-77" not in (state / CONSENT_FILE).read_text()


def test_a_running_ledger_sees_events_another_process_recorded(tmp_path: Path) -> None:
    """The gateway's ledger picks up a withdrawal `tiyi members withdraw` wrote, and answers as of any head."""
    running = ConsentLedger(tmp_path, "gw-1", SIGNER)
    assert not running.reload() and running.head == 0
    cli = ConsentLedger(tmp_path, "gw-1", SIGNER)
    cli.record(SUB, "research", True, 1)
    cli.record(SUB, "insurance", True, 2)
    assert running.reload() and running.head == 2 and running.allows(SUB, "research")
    ConsentLedger(tmp_path, "gw-1", SIGNER).record(SUB, "research", False, 3)
    assert running.reload() and not running.allows(SUB, "research")
    assert running.allows_at(2)(SUB, "research") and not running.allows_at(0)(SUB, "research")
    assert not running.allows_at(3)(SUB, "research") and not running.allows_at(2)(None, "research")
    assert [n for n, _ in running.events_for("research", 0, 3)] == [1, 3]
    assert [n for n, _ in running.events_for("research", 1, 3)] == [3]
    running.record(SUB, "research", True, 4)  # continues the chain the other process extended
    assert check_consent_chain(ConsentLedger(tmp_path, "gw-1", SIGNER).signed_events(), "gw-1", SIGNER)


def test_a_replaced_ledger_that_drops_events_is_refused_on_reload(tmp_path: Path) -> None:
    """Fail closed: a file rolled back to fewer events (a restored old backup, a tampering) would resurrect a
    withdrawn consent; the running ledger refuses it and keeps what it had."""
    running = ConsentLedger(tmp_path, "gw-1", SIGNER)
    running.record(SUB, "research", True, 1)
    old = (tmp_path / CONSENT_FILE).read_text()
    running.record(SUB, "research", False, 2)
    (tmp_path / CONSENT_FILE).write_text(old + "\n")
    with pytest.raises(ConsentError, match="no longer holds"):
        running.reload()
    assert not running.allows(SUB, "research") and running.head == 2
    (tmp_path / CONSENT_FILE).write_text(json.dumps(["00"]))
    with pytest.raises(ConsentError, match=r"does not verify|not a consent ledger"):
        running.reload()
