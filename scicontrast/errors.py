"""Errors a user can act on. The CLI prints them without a traceback."""


class ScicontrastError(Exception):
    """Base class for errors caused by the user's input, config or files."""


class ConfigError(ScicontrastError):
    """The configuration is invalid; the message names the file and the key."""


class InputDataError(ScicontrastError):
    """A data file is malformed; the message names the file and the record or line."""


class UnknownComponentError(ScicontrastError):
    """A registry name (adapter, pair builder, encoder) does not resolve."""


class Preempted(ScicontrastError):
    """Training stopped on SIGTERM after saving a checkpoint; rerunning resumes it."""
