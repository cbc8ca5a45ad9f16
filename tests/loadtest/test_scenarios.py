"""Scenario loading and role assignment (no sockets)."""

from __future__ import annotations

import collections
import random
from pathlib import Path

import pytest

from hubbub.loadtest.config import RunConfig
from hubbub.loadtest.scenarios import ScenarioError, load, load_file, weighted_order
from hubbub.loadtest.scenarios.chat import ChatUser, zipf_room
from hubbub.loadtest.scenarios.livefeed import FeedPublisher, FeedSubscriber
from hubbub.loadtest.scenarios.reconnect_storm import RecoveringSubscriber, SteadyPublisher
from hubbub.loadtest.scenarios.slow_consumers import FastSubscriber, SlowSubscriber

HERE = Path(__file__).parent


def test_weighted_order_interleaves_by_weight() -> None:
    assert weighted_order([1, 3]) == [1, 0, 1, 1]
    counts = collections.Counter(weighted_order([5, 2, 1]))
    assert counts == {0: 5, 1: 2, 2: 1}


def test_scenario_file_classes_are_found_and_dealt_by_weight() -> None:
    scenario = load_file(str(HERE / "scenarios" / "friendly.py"))
    config = RunConfig()
    names = [scenario.assign(i, config).__name__ for i in range(8)]
    assert collections.Counter(names) == {"Listener": 6, "Talker": 2}


def test_bad_scenarios(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no scenario file"):
        load_file(str(tmp_path / "missing.py"))
    empty = tmp_path / "empty.py"
    empty.write_text("from hubbub.loadtest import User\n")
    with pytest.raises(ScenarioError, match="no User subclass"):
        load_file(str(empty))
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ScenarioError, match="boom"):
        load_file(str(broken))
    with pytest.raises(ScenarioError, match="unknown scenario"):
        load(RunConfig(scenario="nope"))


def test_builtin_roles() -> None:
    feed = load(RunConfig(scenario="livefeed", publishers=2))
    config = RunConfig(scenario="livefeed", publishers=2)
    assert [feed.assign(i, config) for i in range(3)] == [
        FeedPublisher,
        FeedPublisher,
        FeedSubscriber,
    ]
    storm = load(RunConfig(scenario="reconnect-storm"))
    assert storm.assign(0, RunConfig()) is SteadyPublisher
    assert storm.assign(1, RunConfig()) is RecoveringSubscriber
    assert RecoveringSubscriber.recover and RecoveringSubscriber.default_namespace == "chat"
    assert load(RunConfig(scenario="chat")).assign(7, RunConfig()) is ChatUser


def test_slow_fraction_is_spread_evenly() -> None:
    config = RunConfig(scenario="slow-consumers", publishers=1, slow_fraction=0.25)
    scenario = load(config)
    classes = [scenario.assign(i, config) for i in range(1, 101)]
    assert classes.count(SlowSubscriber) == 25
    assert classes.count(FastSubscriber) == 75
    first = [c is SlowSubscriber for c in classes[:8]]
    assert sum(first) == 2  # not all bunched at one end


def test_zipf_rooms_are_skewed() -> None:
    rng = random.Random(2)
    counts = collections.Counter(zipf_room(rng, 100, 1.0) for _ in range(20000))
    assert set(counts) <= set(range(1, 101))
    # P(1) / P(2) = 2 and P(1) / P(10) = 10 under 1/k.
    assert 1.8 < counts[1] / counts[2] < 2.2
    assert 8 < counts[1] / counts[10] < 12
