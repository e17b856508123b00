"""Exception types for user-facing input errors (bad files, bad config)."""


class LidarsegError(Exception):
    """Base class: an error caused by the user's input. The CLI prints the message without a traceback."""


class DataError(LidarsegError, ValueError):
    """A data file is missing, empty or malformed. The message names the file and what was expected."""


class ConfigError(LidarsegError, ValueError):
    """A configuration key or value is invalid. The message names the key and the valid choices."""
