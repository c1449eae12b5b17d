"""One error root for the loader, with subclasses that say whether a retry can help."""

from __future__ import annotations


class LoaderError(Exception):
    """Root of every error the loader raises on purpose."""

    exit_code = 4


class UsageError(LoaderError):
    """Bad arguments or inputs that do not exist: fix the command, retrying will not help."""

    exit_code = 2


class DatabaseLockedError(LoaderError):
    """Another process (a loader or dbt) holds the DuckDB file: retry once it has finished."""

    exit_code = 3


class FileFailedError(LoaderError):
    """A file could not be loaded (unreadable, too many rejects); its rows were rolled back."""

    exit_code = 1
