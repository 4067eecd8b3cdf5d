"""Chat messages rendered into one prime, by a template.

A character model has no roles: the conversation is written out as text and the model continues
it. A template is a JSON object of strings: one per role ("system", "user", "assistant", and any
other role it names) with {content} where the message's text goes, and "generation", written after
the last message (where the reply starts). A role the template lacks is refused (400 naming the
roles it has). Only {content} is replaced; nothing else in a template is interpreted.

The default writes each message as a paragraph and leaves the reply to start a new one:
    {"system": "{content}\\n\\n", "user": "{content}\\n\\n", "assistant": "{content}\\n\\n", "generation": ""}
"""

import json
import os

from estella.runtime.errors import EstellaError

DEFAULT_TEMPLATE = {"system": "{content}\n\n", "user": "{content}\n\n", "assistant": "{content}\n\n", "generation": ""}
MAX_TEMPLATE_BYTES = 64 * 1024


class ChatTemplateError(EstellaError):
    """A --chat-template file that cannot be read or is not a template (the message names it)."""


class UnknownRole(Exception):
    def __init__(self, role, roles):
        super().__init__(f"messages: role {role!r} is not in the chat template; it has {', '.join(roles)}")


class ChatTemplate:
    def __init__(self, parts=None, source="the built-in default"):
        parts = DEFAULT_TEMPLATE if parts is None else parts
        if (not isinstance(parts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in parts.items())
                or "generation" not in parts or len(parts) < 2):
            raise ChatTemplateError(f"chat template {source}: it must be a JSON object of strings with a "
                                    "\"generation\" key and at least one role (as \"user\": \"{content}\\n\")")
        self.generation = parts["generation"]
        self.roles = {role: text for role, text in parts.items() if role != "generation"}
        self.source = source

    @classmethod
    def load(cls, path):
        """A template file (JSON), or None for the default."""
        if path is None:
            return cls()
        try:
            if os.path.getsize(path) > MAX_TEMPLATE_BYTES:
                raise ChatTemplateError(f"chat template {path}: larger than {MAX_TEMPLATE_BYTES} bytes")
            with open(path, encoding="utf-8") as f:
                parts = json.load(f)
        except (OSError, ValueError) as e:
            raise ChatTemplateError(f"cannot read the chat template {path}: {e}") from None
        return cls(parts, path)

    def render(self, messages):
        """messages: (role, text) pairs -> the prime."""
        out = []
        for role, text in messages:
            if role not in self.roles:
                raise UnknownRole(role, list(self.roles))
            out.append(self.roles[role].replace("{content}", text))
        out.append(self.generation)
        return "".join(out)
