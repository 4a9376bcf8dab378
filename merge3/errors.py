"""The user-facing error hierarchy.

Anything a user can cause (a bad config, a missing file, a malformed model folder) raises a
subclass of :class:`Merge3Error`. The CLI prints its message as one line and exits with code 2;
every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class Merge3Error(Exception):
    """A problem the user can fix; the message names the file, key or tensor at fault."""

    exit_code = 2


class ConfigError(Merge3Error):
    """The run config (or a mergekit YAML) is malformed."""


class DataError(Merge3Error):
    """A benchmark file, item or response matrix is malformed or missing."""


class ModelError(Merge3Error):
    """A model folder or tensor is missing, unreadable or incompatible with the others."""


class RunDirError(Merge3Error):
    """A run directory is missing, incomplete or belongs to another config."""


class SearchStopped(Merge3Error):
    """Too many candidates in a row failed; the run is intact and `merge3 resume` continues it."""


class WorkerError(Merge3Error):
    """A search worker (the Ray executor) cannot be started: a missing extra, no cluster."""
