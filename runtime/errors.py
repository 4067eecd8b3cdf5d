"""The errors estella raises for bad input. The CLI prints them and exits with code 2."""


class EstellaError(Exception):
    """Bad input: the message names the file, flag or value and what is allowed."""


class MissingDependency(EstellaError):
    """An optional package is not installed; the message names the pip extra that brings it."""


class SettingError(EstellaError):
    """One setting outside what is allowed. It carries the setting's name in the Python API (field),
    the rule and the value; each interface words it with its own names for the fields (the CLI's
    flags, the HTTP API's JSON fields) through worded(name_of)."""

    def __init__(self, field, rule, value):
        self.field, self.rule, self.value = field, rule, value
        super().__init__(self.worded())

    def worded(self, name_of=str):
        """The message with each field named by name_of(field)."""
        return f"{name_of(self.field)} {self.rule}, got {short_repr(self.value)}"


def short_repr(value, limit=80):
    """repr(value), cut in the middle past `limit` characters: a 1 MB prompt is not echoed back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]} ({len(text)} characters)"
