"""The CLI's one error boundary: each kind of error a user can cause has its exit code; a bug has none."""

from __future__ import annotations

import pytest

from anchoring.bundle import BundleError
from anchoring.errors import ChainUnavailable, MalformedReply, TransactionFailed
from anchoring.readers import ChainOptionError
from edge.errors import BackendUnavailable, MalformedFrame
from firmware_sim.scenario import ScenarioError
from gateway.cli.main import EXIT_FAIL, EXIT_USAGE, exit_code, main
from gateway.errors import ConfigError, GatewayError, JournalError


def wrapped(outer: Exception, inner: Exception) -> Exception:
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConfigError("--rpc needs --contract"), EXIT_USAGE),
        # node URLs and addresses are parsed once, in anchoring.readers, for every command; not re-wrapped
        (ChainOptionError("--rpc 'ftp://x': expected http(s)://HOST:PORT"), EXIT_USAGE),
        (BundleError("bundle: bad proof"), EXIT_USAGE),  # no longer re-wrapped as ConfigError by `verify --bundle`
        (ScenarioError("chaos.toml: no devices"), EXIT_USAGE),  # nor by `sim run`
        (MalformedFrame("2 bytes, too short"), EXIT_USAGE),
        (ChainUnavailable("node down"), EXIT_USAGE),
        (ConnectionRefusedError(111, "refused"), EXIT_USAGE),
        (wrapped(GatewayError("could not register"), ChainUnavailable("node down")), EXIT_USAGE),
        (MalformedReply("the node's reply is not a receipt"), EXIT_FAIL),  # the node's fault, not the user's input
        (TransactionFailed("reverted: not an operator"), EXIT_FAIL),  # `tiyi chain` no longer re-wraps it either
        (JournalError("disk I/O error"), EXIT_FAIL),
        (BackendUnavailable("no libcrypto"), EXIT_FAIL),
        (PermissionError(13, "denied"), EXIT_FAIL),
        (ExceptionGroup("task group", [ConfigError("bad")]), EXIT_USAGE),
    ],
)
def test_exit_code_by_error(exc: BaseException, code: int) -> None:
    assert exit_code(exc) == code


@pytest.mark.parametrize("bug", [KeyError("x"), AssertionError(), TypeError("bad call"), ValueError("plain")])
def test_a_bug_has_no_exit_code_and_keeps_its_traceback(bug: BaseException) -> None:
    assert exit_code(bug) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rpc", "ftp://x", "--contract", "0x" + "12" * 20], "--rpc 'ftp://x': expected http(s)://HOST:PORT"),
        (["--rpc", "http://127.0.0.1:1", "--contract", "0x1234"], "--rpc contract '0x1234': expected a 20-byte hex"),
    ],
)
def test_tiyi_verify_reports_a_bad_chain_option_in_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shared parser's errors reach the user through main's boundary: exit 2, one line, no traceback."""
    assert main(["verify", "--tofu", "--capture", "/dev/null", *args]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert message in err
