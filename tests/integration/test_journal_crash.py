"""Power-cut behaviour of the journal: kill -9 a writer at random points, and fill the disk."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.errors import JournalFull
from gateway.journal import SqliteJournal
from tests.integration.journal_writer import record

ROOT = Path(__file__).resolve().parents[2]


def test_kill_9_twenty_times_loses_nothing_committed(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    print(f"crash test seed {seed}")
    rng = random.Random(seed)
    db = tmp_path / "j.sqlite3"
    acknowledged = 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(20):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.journal_writer", str(db)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert child.stdout is not None
        deadline = time.monotonic() + rng.uniform(0.2, 0.6)
        last_line = None
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            last_line = line
        child.send_signal(signal.SIGKILL)
        child.wait()
        if last_line is not None:
            acknowledged = max(acknowledged, int(last_line))
    j = SqliteJournal.open(db, "gw-crash")
    top = j.records.next_seq - 1
    assert top >= acknowledged > 0
    assert j.records.read(1, top) == [bytes(record(s)) for s in range(1, top + 1)]
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_refuses_loudly_and_recovers(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=False).returncode != 0:
        pytest.skip("this sandbox does not allow mounting tmpfs")  # reported in the test summary
    try:
        j = SqliteJournal.open(mnt / "j.sqlite3", "gw-crash")
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * 200_000)
        seq = 1
        with pytest.raises(JournalFull):
            while True:
                j.records.append([record(s) for s in range(seq, seq + 50)])
                seq += 50
        assert j.records.next_seq == seq  # nothing of the failed append was half-written
        assert j.records.read(1, seq - 1) == [bytes(record(s)) for s in range(1, seq)]
        filler.unlink()
        j.records.append([record(s) for s in range(seq, seq + 50)])
        assert j.records.next_seq == seq + 50
        j.close()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        shutil.rmtree(mnt, ignore_errors=True)
