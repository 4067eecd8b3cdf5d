"""Text from an export (artifact names, paths, provenance, anything a manifest holds) reaches the
user's terminal only with its control characters made visible: `\\x1b[2J` in an artifact name is
printed as those six characters, not as the escape sequence that clears the screen. The same holds
for line breaks inside a value, which could forge a line of output, and for the Unicode controls
that reorder text on screen (bidi overrides)."""

import sys
import unicodedata


def _escape(ch):
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text, keep_newlines=False) -> str:
    """text with every control or format character (Unicode categories Cc and Cf) escaped."""
    text = str(text)
    if text.isprintable() and "\x1b" not in text:
        return text
    return "".join(ch if (ch == "\n" and keep_newlines) or unicodedata.category(ch) not in ("Cc", "Cf")
                   else _escape(ch) for ch in text)


def escape_unencodable(stream=None):
    """Characters the stream's encoding cannot show (an ASCII-only terminal) written as backslash
    escapes instead of failing: for commands that print an export's description, not a text."""
    stream = sys.stdout if stream is None else stream
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")
