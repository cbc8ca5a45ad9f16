"""Every exception of the load tester::

    LoadTestError
     ├── ScenarioError   the scenario cannot be loaded (unknown name, bad file, no User class)
     ├── CheckError      a ``--check`` text that does not parse (also a ValueError)
     ├── RunFailed       the run could not start or finish (a worker failed to load, died, ...)
     └── SequenceError   (``HubbubUser``) publications missing or repeated in one
                         publisher's sequence, reported to Locust as a failure

    StopUser             not an error: a task raises it to end its user's task loop

What fails on the wire is the client core's (:mod:`hubbub.client.exceptions`):
a user's failed command is counted under its
:func:`~hubbub.client.exceptions.command_reason`, a failed connection under its
:func:`~hubbub.client.exceptions.connect_reason`.
"""

from __future__ import annotations


class LoadTestError(Exception):
    """Base class of the load tester's own errors."""


class ScenarioError(LoadTestError):
    """The scenario cannot be loaded (unknown name, bad file, no User class)."""


class CheckError(LoadTestError, ValueError):
    """A ``--check`` text that does not parse."""


class RunFailed(LoadTestError):
    """The run could not start or finish (a worker failed to load, died, ...)."""


class SequenceError(LoadTestError):
    """Publications missing or repeated in one publisher's sequence."""


class StopUser(Exception):
    """Raise in a task to end this user's task loop (its connection stays open)."""
