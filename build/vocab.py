"""The vocabulary: the sorted unique characters of the corpus, with char <-> id maps."""

import json

import numpy as np

from .errors import RunError
from .fileio import write_atomic


class Vocab:
    def __init__(self, chars):
        self.chars = list(chars)
        if len(set(self.chars)) != len(self.chars) or not all(isinstance(c, str) and len(c) == 1 for c in self.chars):
            raise ValueError("a vocabulary is a list of distinct single characters")
        self.char_to_id = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls(sorted(set(text)))

    def __len__(self):
        return len(self.chars)

    def __eq__(self, other):
        return isinstance(other, Vocab) and self.chars == other.chars

    def encode(self, text: str) -> np.ndarray:
        missing = sorted(set(text) - self.char_to_id.keys())
        if missing:
            raise ValueError(f"characters not in the vocabulary: {missing!r}")
        return np.fromiter((self.char_to_id[c] for c in text), dtype=np.int32, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def save(self, path: str):
        data = {"size": len(self), "chars": self.chars, "char_to_id": self.char_to_id,
                "id_to_char": {str(i): c for i, c in enumerate(self.chars)}}
        write_atomic(path, json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8"))

    @classmethod
    def load(cls, path: str) -> "Vocab":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            chars = data.get("chars") if isinstance(data, dict) else None
            if not isinstance(chars, list) or not chars:
                raise ValueError('it has no "chars" list')
            return cls(chars)
        except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise RunError(f"cannot read vocabulary {path}: {e}") from None
