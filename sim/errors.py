"""Errors a run reports to the user as one line (kept light: no torch, no flwr import)."""


class RunAborted(RuntimeError):
    """The run cannot go on (every client failed for too long); history.csv is kept."""


class ConfigError(Exception):
    """A one-line, user-facing config error: the key, its value and what is allowed."""


class RunStopped(Exception):
    """The run ends early on purpose (a privacy budget is spent); history and summary are kept."""
