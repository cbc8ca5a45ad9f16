"""Run settings: durations, options, the split of users over workers."""

from __future__ import annotations

import pytest

from hubbub.loadtest.config import RunConfig, parse_duration, parse_option


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30.0), ("2.5", 2.5), ("30s", 30.0), ("2m", 120.0), ("1h30m", 5400.0),
     ("250ms", 0.25), ("1m30s", 90.0), ("100us", 1e-4)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "10x", "s", "-5", "5s3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_options_parse_json_values() -> None:
    assert parse_option("zipf=1.2") == ("zipf", 1.2)
    assert parse_option("slow-pause=0.5") == ("slow_pause", 0.5)
    assert parse_option("name=room") == ("name", "room")
    assert parse_option("on=true") == ("on", True)
    with pytest.raises(ValueError):
        parse_option("novalue")


def test_users_are_dealt_round_robin_over_workers() -> None:
    config = RunConfig(users=10, workers=3)
    assert [config.users_of(w) for w in range(3)] == [4, 3, 3]
    assert RunConfig(users=1, workers=2).users_of(1) == 0


def test_config_round_trips_as_json_and_reads_options() -> None:
    config = RunConfig(hosts=("tcp://a:1", "ws://b:2/ws"), users=5, options={"zipf": "1.5"})
    assert RunConfig.from_json(config.to_json()) == config
    assert config.option("zipf", 1.0) == 1.5
    assert config.option("missing", 3) == 3
