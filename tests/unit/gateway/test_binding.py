"""Wearer binding: records of a bound device carry the member's site pseudonym; the member id stays put."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from edge.frame import Frame
from edge.record import Record
from gateway.binding import BINDINGS_FILE, BindingError, Bindings, subject_id
from gateway.cli.main import main
from gateway.journal import SqliteJournal
from gateway.stages.ingest import Ingest, Row
from gateway.stages.ports import NO_DEVICES, Health, Worker

SITE_A, SITE_B = b"a" * 32, b"b" * 32
MEMBER = "M-2024-0042"


def test_pseudonyms_are_stable_per_site_and_unlinkable_across_sites() -> None:
    a = subject_id(SITE_A, MEMBER)
    assert a == subject_id(SITE_A, f"  {MEMBER} ") == subject_id(SITE_A, MEMBER)
    assert a != subject_id(SITE_B, MEMBER) and a != subject_id(SITE_A, "M-2024-0043")
    assert a.startswith("sub-") and len(a) == 20 and "0042" not in a


@pytest.mark.parametrize("bad", ["", "   ", "x" * 129, "M-\n1", "M-1\x00", "M\u200b1"])
def test_a_member_id_that_cannot_be_used_is_refused(bad: str) -> None:
    with pytest.raises(BindingError, match="member id"):
        subject_id(SITE_A, bad)


def test_the_binding_table_is_private_and_holds_no_member_id(tmp_path: Path) -> None:
    t = Bindings(tmp_path, SITE_A)
    b = t.bind("ble-0123456789ab", MEMBER, 1_700_000_000_000)
    assert t.subjects() == {"ble-0123456789ab": b.sub}
    text = (tmp_path / BINDINGS_FILE).read_text()
    assert MEMBER not in text and b.sub in text
    assert stat.S_IMODE((tmp_path / BINDINGS_FILE).stat().st_mode) == 0o600
    t.bind("ble-0123456789ab", "M-2", 1_700_000_000_001)  # the next wearer replaces the first
    assert t.list()[0].sub == subject_id(SITE_A, "M-2")
    assert t.unbind("ble-0123456789ab") and not t.unbind("ble-0123456789ab") and t.subjects() == {}


@pytest.mark.parametrize("dev", ["", "has space", "a/b", "x" * 200])
def test_a_device_id_no_record_could_carry_is_refused(tmp_path: Path, dev: str) -> None:
    with pytest.raises(BindingError):
        Bindings(tmp_path, SITE_A).bind(dev, MEMBER, 1)


@pytest.mark.parametrize("text", ["{not json", '{"ble-1": {"sub": 5, "since_ms": 1}}', "[1]"])
def test_a_damaged_table_is_refused_but_a_running_gateway_keeps_the_last_good_one(tmp_path: Path, text: str) -> None:
    t = Bindings(tmp_path, SITE_A)
    sub = t.bind("ble-1", MEMBER, 1).sub
    assert t.subjects() == {"ble-1": sub}
    (tmp_path / BINDINGS_FILE).write_text(text)
    with pytest.raises(BindingError, match="restore it or remove it"):
        t.list()
    assert t.subjects() == {"ble-1": sub}


def test_a_short_site_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BindingError, match="site secret"):
        Bindings(tmp_path, b"short")


class Sink:
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def journaled(self, rows: list[Row]) -> None:
        self.rows += rows


def test_records_of_a_bound_device_carry_sub_and_of_an_unbound_one_none(tmp_path: Path) -> None:
    table = Bindings(tmp_path, SITE_A)
    sub = table.bind("strap-1", MEMBER, 1).sub
    journal = SqliteJournal.open(tmp_path / "j.sqlite3", "gw-1")
    worker, sink = Worker("test-journal"), Sink()
    ingest = Ingest("gw-1", 0, journal.records, worker, Health(), NO_DEVICES, sink, table.subjects)
    hr = b"\x00\x48"  # heart rate 72

    async def go() -> None:
        await ingest.accept([(Frame("strap-1", 0x2A37, hr), 1_700_000_000_000, False)])
        await ingest.accept([(Frame("strap-2", 0x2A37, hr), 1_700_000_000_001, False)])
        table.unbind("strap-1")
        await ingest.accept([(Frame("strap-1", 0x2A37, hr), 1_700_000_000_002, False)])

    try:
        asyncio.run(go())
    finally:
        worker.shutdown()
    recs = [Record.from_bytes(d) for _, _, _, d in sink.rows]
    assert [(r.dev, r.sub) for r in recs] == [("strap-1", sub), ("strap-2", None), ("strap-1", None)]
    assert all(MEMBER.encode() not in d for _, _, _, d in sink.rows)


def test_members_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text(f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n')
    assert main(["members", "bind", "--config", str(cfg), "ble-0123456789ab", MEMBER]) == 0
    assert main(["members", "list", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "ble-0123456789ab" in out and "sub-" in out and MEMBER not in out
    assert main(["members", "unbind", "--config", str(cfg), "ble-0123456789ab"]) == 0
    assert main(["members", "unbind", "--config", str(cfg), "ble-0123456789ab"]) == 1
    assert main(["members", "bind", "--config", str(cfg), "ble-0123456789ab", " "]) == 2
    err = capsys.readouterr().err
    assert "member id" in err and "Traceback" not in err
    secret = tmp_path / "state" / "keys" / "site-subject.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_the_verifier_accepts_records_with_sub_and_catches_a_reading_moved_to_another_member() -> None:
    from dataclasses import replace

    from anchoring.stream_verifier import Reason, StreamVerifier
    from edge.manifest import GENESIS_PREV, build_manifest, sign_manifest
    from tests.unit.anchoring.fakes import receipt
    from tests.unit.anchoring.test_stream_verifier import GW, SIGNER, Stream, pinned, record

    a, b = subject_id(SITE_A, MEMBER), subject_id(SITE_A, "M-other")
    s = Stream({i: bytes(replace(Record.from_bytes(record(i)), sub=a if i % 2 else None)) for i in range(1, 11)})
    m = build_manifest(GW, 1, 1, [s.records[i] for i in range(1, 11)], GENESIS_PREV, 1)
    s.batches.append(bytes(sign_manifest(m, SIGNER)))
    s.receipts.append(bytes(receipt(GW, 1, m.count, m.root, 101)))
    v = StreamVerifier(pinned())
    s.feed(v)
    report = v.report(require_complete=True)
    assert report.ok, report.summary()
    s.records[3] = bytes(replace(Record.from_bytes(s.records[3]), sub=b))  # the platform rebinds a reading
    assert Reason.ROOT_MISMATCH in s.verify()
    s.records[3] = bytes(replace(Record.from_bytes(s.records[3]), sub=None))  # or strips its wearer
    assert Reason.ROOT_MISMATCH in s.verify()
