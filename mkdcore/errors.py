"""Errors that the CLI prints as one line (no traceback).

Every failure a user can cause (bad config, bad data, unknown plugin, unreachable
service) raises a subclass of :class:`MkdError` whose message names the file, field
or value at fault. The CLI catches ``MkdError`` and prints ``error: <message>``.
"""

from __future__ import annotations

#: exit code of a command whose stage checkpointed and stopped on SIGTERM (128 + 15):
#: ``mkd run`` returns it, the queue treats it as "stopped, resumable"
TERMINATED_EXIT_CODE = 143


class MkdError(Exception):
    """A user-facing error: its message is printed alone, as one line."""

    exit_code: int = 2


class ConfigError(MkdError):
    """A config file or override is missing, malformed or invalid."""


class PluginError(MkdError):
    """A plugin is unknown, registered twice, or rejects its options."""


class DataError(MkdError):
    """The dataset on disk does not match the layout or split files."""


class ServiceError(MkdError):
    """A service the command needs (Redis, a worker) cannot be reached."""

    exit_code = 3


class TrainingError(MkdError):
    """Training cannot go on (non-finite loss, incompatible checkpoint...)."""


class Terminated(Exception):
    """Raised by a training stage after it wrote a checkpoint because SIGTERM (or a first
    Ctrl-C) arrived; ``mkd run`` exits with :attr:`exit_code`: 128 + the signal, so
    :data:`TERMINATED_EXIT_CODE` (143) for SIGTERM, which the queue hands back, and 130
    for Ctrl-C. Not an :class:`MkdError`: nothing is wrong with the input (the engine and
    the rank launcher both raise it, so it lives here, below both)."""

    def __init__(self, message: str, exit_code: int = TERMINATED_EXIT_CODE) -> None:
        super().__init__(message)
        self.exit_code = exit_code
