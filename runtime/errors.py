"""The errors estella raises for bad input. The CLI prints them and exits with code 2."""


class EstellaError(Exception):
    """Bad input: the message names the file, flag or value and what is allowed."""


class MissingDependency(EstellaError):
    """An optional package is not installed; the message names the pip extra that brings it."""


class SettingError(EstellaError):
    """One setting outside what is allowed. It carries the setting's name in the Python API (field),
    the rule and the value; each interface words it with its own name for the field (the CLI's flag,
    the HTTP API's JSON field) through worded(name)."""

    def __init__(self, field, rule, value):
        self.field, self.rule, self.value = field, rule, value
        super().__init__(self.worded(field))

    def worded(self, name):
        return f"{name} {self.rule}, got {self.value!r}"
