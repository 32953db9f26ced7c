"""The API key as a value that never shows itself, and scrubbing it out of API text."""

from __future__ import annotations

import pickle

import pytest

from ft_exporter.secret import MIN_SECRET_LENGTH, REDACTED, Secret

KEY = "sk-0123456789abcdef"


def test_every_way_of_printing_shows_the_placeholder() -> None:
    secret = Secret(KEY)
    assert (str(secret), repr(secret), f"{secret}", f"{secret:>30}") == (
        REDACTED,
        "Secret('<redacted>')",
        REDACTED,
        REDACTED,
    )
    assert secret.reveal() == KEY
    assert secret.current() is secret


def test_truth_is_whether_a_key_is_set() -> None:
    assert bool(Secret(KEY)) is True
    assert bool(Secret("")) is False


def test_a_secret_cannot_be_pickled() -> None:
    with pytest.raises(TypeError, match=r"^a Secret cannot be pickled$"):
        pickle.dumps(Secret(KEY))


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        # The whole key, anywhere: removed before the clip.
        (f"bad key {KEY}!", 100, f"bad key {REDACTED}!"),
        (f"{KEY}{KEY}", 100, REDACTED + REDACTED),
        # Cut by the clip: still removed whole first, then clipped.
        (f"xx{KEY}", 5, f"xx{REDACTED[:3]}"),
        # A quoted part of 8+ characters of the key, at the start, middle and end.
        (f"{KEY[:8]} rest", 100, f"{REDACTED} rest"),
        (f"a {KEY[3:12]} b", 100, f"a {REDACTED} b"),
        (f"end {KEY[-8:]}", 100, f"end {REDACTED}"),
        # Two separate fragments are two placeholders; overlapping ones merge into one.
        (f"{KEY[:8]}-{KEY[-8:]}", 100, f"{REDACTED}-{REDACTED}"),
        (KEY[2:14], 100, REDACTED),
        # Seven characters of the key are not a fragment.
        (f"x{KEY[:7]}y", 100, f"x{KEY[:7]}y"),
        ("plain text", 5, "plain"),
        ("", 10, ""),
    ],
)
def test_scrub(text: str, limit: int, expected: str) -> None:
    assert Secret(KEY).scrub(text, limit) == expected


def test_scrub_with_a_key_too_short_to_hunt_for_only_clips() -> None:
    short = "k" * (MIN_SECRET_LENGTH - 1)
    assert Secret(short).scrub(f"{short} {short}", 9) == f"{short} k"
    # Exactly the minimum length is hunted for, whole and in part.
    exact = "abcdefgh"
    assert Secret(exact).scrub("xabcdefghx", 100) == f"x{REDACTED}x"
    assert Secret("abcdefghij").scrub("-cdefghij-", 100) == f"-{REDACTED}-"
    # An 8-character key cut by the clip is removed whole before it, not left as "abc".
    assert Secret(exact).scrub(f"xx{exact}", 5) == f"xx{REDACTED[:3]}"


def test_scrub_of_text_shorter_than_a_fragment() -> None:
    assert Secret(KEY).scrub(KEY[:7], 100) == KEY[:7]
    assert Secret(KEY).scrub(KEY[:8], 100) == REDACTED
