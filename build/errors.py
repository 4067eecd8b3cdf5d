"""The errors the training stage raises for bad input; the CLI turns them into exit code 2."""

from estella.runtime.errors import EstellaError


class CorpusError(EstellaError):
    """The corpus cannot be read or is unusable."""


class RunError(EstellaError):
    """A run directory is missing, incomplete, or does not match the requested setup."""
