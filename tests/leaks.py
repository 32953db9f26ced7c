"""Looking for the API key, whole or in part, in what the exporter shows."""

from __future__ import annotations

from ft_exporter.secret import MIN_SECRET_LENGTH


def leaked(text: str, *secrets: str) -> list[str]:
    """Every run of MIN_SECRET_LENGTH characters of the secrets that ``text`` holds.

    The exporter removes any such run of its key from text an API sends back; a whole-key
    search would miss a key cut short by a clip.
    """
    size = MIN_SECRET_LENGTH
    runs = {text[i : i + size] for i in range(len(text) - size + 1)}
    pieces = {s[i : i + size] for s in secrets for i in range(len(s) - size + 1)}
    return sorted(pieces & runs)
