"""Scenarios: the built-in ones by name, or the User classes of a scenario file.

A :class:`Scenario` says which user class each user (by global index) gets.
Built-ins assign roles by index (e.g. the first ``--publishers`` users
publish); a scenario file's classes are dealt out by their ``weight`` in a
fixed interleaved order, so every run of the same command gives every index
the same class, whatever the number of workers.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hubbub.loadtest.config import RunConfig
from hubbub.loadtest.exceptions import ScenarioError
from hubbub.loadtest.users.user import User

#: Built-in scenario name -> module (each defines ``SCENARIO``).
BUILTIN = {
    "chat": "hubbub.loadtest.scenarios.chat",
    "livefeed": "hubbub.loadtest.scenarios.livefeed",
    "connect-storm": "hubbub.loadtest.scenarios.connect_storm",
    "reconnect-storm": "hubbub.loadtest.scenarios.reconnect_storm",
    "slow-consumers": "hubbub.loadtest.scenarios.slow_consumers",
}


@dataclass(frozen=True)
class Scenario:
    """A named set of user classes and the rule that gives each user its class."""

    name: str
    description: str
    assign: Callable[[int, RunConfig], type[User]]


def weighted_order(weights: list[int]) -> list[int]:
    """Class positions in smooth weighted round-robin order (one cycle)."""
    total = sum(weights)
    current = [0] * len(weights)
    order = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        order.append(best)
    return order


def from_classes(name: str, classes: list[type[User]]) -> Scenario:
    """Deal ``classes`` out by weight."""
    if not classes:
        raise ScenarioError(f"{name}: no User subclass found")
    weights = [max(0, int(c.weight)) for c in classes]
    if not any(weights):
        raise ScenarioError(f"{name}: every User class has weight 0")
    order = weighted_order(weights)

    def assign(index: int, config: RunConfig) -> type[User]:
        return classes[order[index % len(order)]]

    names = ", ".join(c.__name__ for c in classes)
    return Scenario(name, f"user classes {names}", assign)


def load_file(path: str) -> Scenario:
    """The User classes defined in a scenario file (Locust-style)."""
    file = Path(path).resolve()
    if not file.is_file():
        raise ScenarioError(f"no scenario file {path!r}")
    module_name = f"hubbub_scenario_{abs(hash(str(file)))}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ScenarioError(f"cannot load {path!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(file.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ScenarioError(f"{path}: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(file.parent))
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, User)
        and value is not User
        and not value.is_abstract()
    ]
    return from_classes(file.name, classes)


def load(config: RunConfig) -> Scenario:
    """The scenario a run asks for (``--scenario NAME`` or ``-f FILE``)."""
    if config.scenario_file:
        return load_file(config.scenario_file)
    module = BUILTIN.get(config.scenario)
    if module is None:
        raise ScenarioError(
            f"unknown scenario {config.scenario!r}: one of {', '.join(BUILTIN)} (or -f FILE)"
        )
    scenario: Scenario = importlib.import_module(module).SCENARIO
    return scenario
