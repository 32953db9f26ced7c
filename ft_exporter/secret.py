"""A string that never shows itself: the API key."""

from __future__ import annotations

from typing import Protocol

REDACTED = "<redacted>"


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
