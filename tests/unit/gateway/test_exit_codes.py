"""The CLI's one error boundary: each kind of error a user can cause has its exit code; a bug has none."""

from __future__ import annotations

import pytest

from anchoring.bundle import BundleError
from anchoring.errors import ChainUnavailable, MalformedReply, TransactionFailed
from edge.errors import BackendUnavailable, MalformedFrame
from firmware_sim.scenario import ScenarioError
from gateway.cli.main import EXIT_FAIL, EXIT_USAGE, exit_code
from gateway.errors import ConfigError, GatewayError, JournalError


def wrapped(outer: Exception, inner: Exception) -> Exception:
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConfigError("--rpc needs --contract"), EXIT_USAGE),
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
