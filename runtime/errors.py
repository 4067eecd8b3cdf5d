"""The errors estella raises for bad input. The CLI prints them and exits with code 2."""


class EstellaError(Exception):
    """Bad input: the message names the file, flag or value and what is allowed."""


class MissingDependency(EstellaError):
    """An optional package is not installed; the message names the pip extra that brings it."""
