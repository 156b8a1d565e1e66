"""The device worker's stop handshake: asked through stdin, it always answers with its final count."""

from __future__ import annotations

import json
import subprocess
import sys


def test_a_worker_asked_to_stop_while_starting_still_reports_what_it_sent() -> None:
    # Both lines are written before the worker has even imported Bumble: the request waits in the pipe
    # until the worker can answer it (a SIGTERM at that moment killed it without a report).
    done = subprocess.run(
        [sys.executable, "-m", "firmware_sim.hub", "worker"],
        input=b"[]\nstop\n",
        capture_output=True,
        timeout=120,
        check=False,
    )
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert lines == [{"ready": 0}, {"sent": {}}]


def test_the_end_of_stdin_also_asks_a_worker_to_stop() -> None:
    worker = [sys.executable, "-m", "firmware_sim.hub", "worker"]
    done = subprocess.run(worker, input=b"[]\n", capture_output=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.decode().splitlines()[-1] == '{"sent": {}}'
