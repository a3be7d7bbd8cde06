"""User-facing errors.

Every mistake a user can make (a bad config key, a missing file, a module name the model lacks, an
impossible rank budget, a NaN loss) raises a subclass of :class:`RankAdaptError` whose message says
what to change. The CLI prints the message and exits non-zero; it never shows a traceback for these.
"""


class RankAdaptError(Exception):
    """Base class of all errors whose message is meant for the user."""


class ConfigError(RankAdaptError):
    """The configuration is invalid: unknown key, bad value, impossible combination."""


class DataError(RankAdaptError):
    """The data cannot be used: missing file, missing columns, unknown labels, empty split."""


class ModelError(RankAdaptError):
    """The model cannot be loaded or adapted: unknown name, no matching modules."""


class TrainingError(RankAdaptError):
    """Training had to stop: a NaN or infinite loss, an unusable checkpoint."""
