"""Scenario users: the :class:`~hubbub.loadtest.users.user.User` base class and
``@task``, wait times and pacing (``schedule``), and the session through which a
user talks to hubbub (the client core's fast path or :class:`hubbub.client.Client`)."""
