"""Errors that carry a one-line message for the user (the CLI maps them to exit code 2)."""


def first_line(err: BaseException, limit: int = 200) -> str:
    """An exception's first line of text (its type's name when it has none), for one-line
    messages: a traceback or a wrapped error never reaches the user whole."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:limit]


class NtkdivError(Exception):
    """Base of every error whose message is meant for the user, without a traceback."""


class ConfigError(NtkdivError, ValueError):
    """A config or spec field holds a bad value. The message names the field and the value."""


class DataError(NtkdivError, ValueError):
    """A data set could not be built: a missing or corrupt file, or bad labels."""


class StoreError(NtkdivError, OSError):
    """The store stopped answering or refused a write in the middle of a run (a full disk, an
    object store down). What finished is kept; the message says how to pick up."""

    exit_code = 1
