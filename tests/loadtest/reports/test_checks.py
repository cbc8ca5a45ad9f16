"""--check parsing and evaluation."""

from __future__ import annotations

import pytest

from hubbub.loadtest.reports.checks import CheckError, evaluate, parse_checks


def test_parse_units_and_operators() -> None:
    checks = parse_checks("p99<50ms, loss==0,p99.9 <= 2s,connect.p99<500us,loss%<0.1%,errors!=3")
    got = [(c.metric, c.op, c.value) for c in checks]
    assert got == [
        ("p99", "<", 50.0),
        ("loss", "==", 0.0),
        ("p99.9", "<=", 2000.0),
        ("connect.p99", "<", 0.5),
        ("loss%", "<", 0.1),
        ("errors", "!=", 3.0),
    ]


def test_a_bare_time_is_milliseconds_and_groups_are_allowed() -> None:
    (check,) = parse_checks("latency:fast.max<=12")
    assert check.value == 12.0 and check.metric == "latency:fast.max"
    (check,) = parse_checks("reconnect.p99.9 < 3s")
    assert check.value == 3000.0


@pytest.mark.parametrize(
    "text",
    ["", "p99", "p99<<5", "p99<5kg", "nonsense<5", "loss<5ms", "p99<5%", "loss>abc", " , "],
)
def test_bad_checks_are_refused(text: str) -> None:
    with pytest.raises(CheckError):
        parse_checks(text)


def test_evaluate_passes_fails_and_missing_data_fails() -> None:
    values = {"p99": 12.0, "loss": 0.0}
    results = evaluate(parse_checks("p99<50ms,loss==0,p99<10,dup==0"), values.get)
    assert [r.passed for r in results] == [True, True, False, False]
    assert results[3].describe() == "FAIL dup==0 (actual no data)"
    assert results[0].describe() == "PASS p99<50ms (actual 12)"
