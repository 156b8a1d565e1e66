"""The verdict every report shares: one table from the gateways' parts to an outcome, its RESULT line and the head
of the JSON form, worded per report (records for ``tiyi verify``, views for an audience)."""

from __future__ import annotations

from typing import Any

import pytest

from anchoring.findings import GatewayReport, Outcome, Problem, Reason, Report, VerificationReport
from anchoring.trust import KeySource
from anchoring.view_verify import AudienceGatewayReport, AudienceReport

UNCHECKED = "RESULT: no problems found, but not everything could be checked (see NOT CHECKED)"


def stream(state: str) -> VerificationReport:
    g = GatewayReport("gw-1", head=(1, 0), key_sources={KeySource.PINNED})
    if state == "problem":
        g.problems.append(Problem(Reason.MISSING_RECORD, "seq 3", "gw-1"))
    elif state == "unchecked":
        g.head = None
    elif state == "pending":
        g.unbatched = 2
    return VerificationReport({"gw-1": g}, [])


def audience(state: str) -> AudienceReport:
    g = AudienceGatewayReport("gw-1", head=1, key_sources={KeySource.PINNED})
    if state == "problem":
        g.problems.append(Problem(Reason.VIEW_INCOMPLETE, "seq 3", "gw-1"))
    elif state == "unchecked":
        g.head = None
    elif state == "pending":
        g.outside_views = 2
    return AudienceReport({"gw-1": g}, [], aud="aud-1", purpose="research")


CASES = [
    ("verified", Outcome.VERIFIED, "RESULT: every record verified", "RESULT: every view verified"),
    ("problem", Outcome.PROBLEMS, "RESULT: 1 problem(s)", "RESULT: 1 problem(s)"),
    ("unchecked", Outcome.UNCHECKED, UNCHECKED, UNCHECKED),
    (
        "pending",
        Outcome.PENDING,
        "RESULT: no problems, but some records are not in a signed batch yet (pending)",
        "RESULT: no problems, but some view records are in no view manifest yet (pending)",
    ),
]


@pytest.mark.parametrize(("state", "outcome", "records", "views"), CASES)
def test_both_reports_reach_the_same_verdict_and_word_it_for_what_they_check(
    state: str, outcome: Outcome, records: str, views: str
) -> None:
    for report, line in ((stream(state), records), (audience(state), views)):
        assert isinstance(report, Report)
        assert report.outcome is outcome and report.ok == (outcome is not Outcome.PROBLEMS)
        assert report.summary().splitlines()[-1] == line
        data: dict[str, Any] = report.to_json()
        assert list(data)[:3] == ["ok", "outcome", "exit_code"]
        assert (data["ok"], data["outcome"], data["exit_code"]) == (report.ok, outcome.name.lower(), int(outcome))


def test_stray_problems_and_no_gateway_at_all_are_failures() -> None:
    empty = VerificationReport({}, [])
    stray = AudienceReport({}, [Problem(Reason.WRONG_TOPIC, "x")], aud="aud-1", purpose="research")
    assert empty.outcome is Outcome.PROBLEMS and empty.problems == []
    assert stray.outcome is Outcome.PROBLEMS and [p.reason for p in stray.problems] == [Reason.WRONG_TOPIC]
