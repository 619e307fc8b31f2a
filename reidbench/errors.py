"""The one exception type users see: the CLI prints its message on one line and exits 2."""


class ReidbenchError(Exception):
    """A user-facing error: bad input, a missing dataset, an unknown name.

    The message must say what is wrong and what was expected; the CLI prints it without a
    traceback.
    """


class DatasetError(ReidbenchError):
    """A dataset root is missing, empty or not in the expected layout."""


class DataNotFound(DatasetError):
    """The dataset is not under the data root (missing root, or not one of its accepted
    folders); ``datasets.catalog.build_dataset`` adds how to point reidbench at it."""


class ConfigError(ReidbenchError, ValueError):
    """A config file, a `--set` override or an option value is malformed (also a ValueError)."""
