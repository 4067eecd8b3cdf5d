"""The errors the export stage raises; the CLI turns them into exit code 2."""

from estella.runtime.errors import EstellaError


class ExportError(EstellaError):
    """The export cannot be written: bad target directory, or an artifact failed its checks."""


class ParityError(ExportError):
    """An artifact does not compute what the Keras reference computes, within the tolerance."""
