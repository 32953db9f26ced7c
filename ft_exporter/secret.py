"""A string that never shows itself: the API key."""

from __future__ import annotations

from typing import Protocol

REDACTED = "<redacted>"
#: Shorter secrets are not redacted (a test key like "k" would garble every message), and
#: shorter fragments of a secret are not hunted for in text that might quote it.
MIN_SECRET_LENGTH = 8


class KeySource(Protocol):
    """Where the client gets the key for its next request (a Secret, or a key file)."""

    def current(self) -> Secret:
        """The key to send now."""


class Secret:
    """Holds a secret; ``str``, ``repr`` and formatting all print a placeholder."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The real value, for the one place that must send it (the auth header)."""
        return self._value

    def current(self) -> Secret:
        """A fixed key is its own KeySource."""
        return self

    def scrub(self, text: str, limit: int) -> str:
        """``text`` clipped to about ``limit`` characters, with no trace of the secret.

        The whole secret is removed *before* clipping, so an occurrence cut by the clip
        cannot survive as a fragment; after clipping, any run of MIN_SECRET_LENGTH or more
        characters of the secret (an API quoting part of a key) goes too.
        """
        value = self._value
        if len(value) >= MIN_SECRET_LENGTH:
            text = text.replace(value, REDACTED)
        return _drop_fragments(text[:limit], value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


def _drop_fragments(text: str, secret: str) -> str:
    """Replace every run of MIN_SECRET_LENGTH+ characters of ``text`` found in ``secret``."""
    size = MIN_SECRET_LENGTH
    if len(secret) < size or len(text) < size:
        return text
    pieces = {secret[i : i + size] for i in range(len(secret) - size + 1)}
    covered = [False] * len(text)
    for start in range(len(text) - size + 1):
        if text[start : start + size] in pieces:
            covered[start : start + size] = [True] * size
    out: list[str] = []
    for index, char in enumerate(text):
        if not covered[index]:
            out.append(char)
        elif index == 0 or not covered[index - 1]:
            out.append(REDACTED)
    return "".join(out)
