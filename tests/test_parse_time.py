"""parse_time's fast path gives exactly the float the strptime version gave, for any input.

The oracle is the old function, kept verbatim in tests/reference_model.py. Exactly means
the same type and the same float, bit for bit (``repr`` tells -0.0 from 0.0), or the
same exception; in fixed offsets, the zones of the IANA database (daylight-saving gaps
and folds included) and a tzinfo of Python's own.
"""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
import reference_model
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ft_exporter import model
from ft_exporter.model import parse_time, parse_timezone


class Kathmandu(tzinfo):
    """A tzinfo written in Python, neither datetime.timezone nor ZoneInfo."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=5, minutes=45)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "NPT"

    def __repr__(self) -> str:
        return "Kathmandu()"


ZONES: list[tzinfo] = [
    UTC,
    parse_timezone("+08:00"),
    parse_timezone("-05:30"),
    parse_timezone("+14:00"),
    parse_timezone("-14:00"),
    parse_timezone("+05:45"),
    timezone(timedelta(hours=3), "named"),
    timezone(timedelta(hours=-2, seconds=17, microseconds=3)),  # sub-minute: datetime allows it
    ZoneInfo("UTC"),
    ZoneInfo("Asia/Shanghai"),
    ZoneInfo("America/New_York"),  # gap 2024-03-10 02:00-03:00, fold 2024-11-03 01:00-02:00
    ZoneInfo("Europe/London"),  # gap 2024-03-31 01:00-02:00, fold 2024-10-27 01:00-02:00
    ZoneInfo("Australia/Lord_Howe"),  # half-hour DST: fold 2024-04-07 01:30-02:00
    ZoneInfo("Pacific/Kiritimati"),  # +14
    ZoneInfo("America/St_Johns"),  # -03:30 / -02:30
    Kathmandu(),
]


def plain_id(value: object) -> str:
    """A test id of letters, digits and ``_:.+-`` only: mutmut reruns tests by their ids."""
    return re.sub(r"[^A-Za-z0-9:.+-]", "_", str(value))[:40]


ZONE_IDS = [plain_id(zone) for zone in ZONES]


@pytest.fixture(autouse=True)
def no_cached_epochs() -> None:
    """Each test computes its zones' epochs afresh: a cached one must not hide a bug."""
    model._local_epochs.clear()


def outcome(parse: object, raw: object, tz: tzinfo) -> tuple[str, str]:
    """What a parse gives, comparable bit for bit: a value's type and repr, or an error."""
    assert callable(parse)
    try:
        value = parse(raw, tz)
    except Exception as exc:  # the same exception, if ever one
        return ("raises", type(exc).__name__)
    return (type(value).__name__, repr(value))


def assert_same(raw: object, tz: tzinfo) -> None:
    expected = outcome(reference_model.parse_time, raw, tz)
    assert outcome(parse_time, raw, tz) == expected, (raw, tz)


HOSTILE: list[object] = [
    # The documented shape and its relatives.
    "2024-10-29 16:53:53",
    "2024-10-29T16:53:53",
    "2024-10-29t16:53:53",
    "2024-10-29 16:53:53.250000",
    "2024-10-29 16:53:53.5",
    "2024-10-29 16:53:53.12",
    "2024-10-29 16:53:53.123",
    "2024-10-29 16:53:53.1234567",
    "2024-10-29T16:53:53.5",
    "2024-10-29 16:53:53.",
    "2024-10-29 16:53:53,5",
    "  2024-10-29 16:53:53\n",
    "\u30002024-10-29 16:53:53\u3000",
    "\x1c2024-10-29 16:53:53\x1f",
    "2024-10-29  16:53:53",
    "2024-10-29\t16:53:53",
    "2024-10-29_16:53:53",
    "2024-10-29 16:53:53 ",
    "2024-10-29 16:53:53Z",
    "2024-10-29T16:53:53+08:00",
    "2024-10-29 16:53:53-0530",
    "2024-10-29 16:53",
    "2024-10-29",
    "20241029T165353",
    "2024-W44-2",
    "2024-303",
    "2024-1-2 3:4:5",
    "2024-10-29  1:02:03",
    "2024-10- 9 16:53:53",
    # Leap days, ends of ranges, out of range.
    "2024-02-29 12:00:00",
    "2023-02-29 12:00:00",
    "1900-02-29 12:00:00",
    "2000-02-29 12:00:00",
    "2024-10-29 24:00:00",
    "2024-10-29 23:60:00",
    "2024-10-29 23:59:60",
    "2024-10-29 23:59:61",
    "2024-00-10 10:00:00",
    "2024-13-10 10:00:00",
    "2024-10-00 10:00:00",
    "2024-10-32 10:00:00",
    "2024-04-31 10:00:00",
    "0000-01-01 00:00:00",
    "0001-01-01 00:00:00",
    "9999-12-31 23:59:59",
    "9999-12-31 23:59:59.999999",
    "1970-01-01 00:00:00",
    "1970-01-01 08:00:00",
    "1969-12-31 23:59:59.5",
    # Digits that are not ASCII: strptime's \d takes them, int() reads them.
    "\u0662\u0660\u0662\u0664-10-29 16:53:53",
    "\u0662\u0660\u0662\u0664-10-29 16:53:53.5",  # strptime's third form reads it
    "2024-\u0661\u0660-29 16:53:53",
    "2024-10-29 16:53:5\u0663",
    "\uff12\uff10\uff12\uff14-10-29 16:53:53",
    "2024-10-29 16:53:53.\u0665",
    "2024-10-29 16:53:5\u00b3",
    # Daylight saving: gaps and folds.
    "2024-03-10 02:30:00",
    "2024-11-03 01:30:00",
    "2024-03-31 01:30:00",
    "2024-10-27 01:30:00",
    "2024-04-07 01:45:00",
    "2024-10-06 02:15:00",
    # Not times at all.
    "",
    " ",
    "garbage",
    "null",
    "\udc80",
    "2024-10-29 16:53:53\x00",
    # Not strings.
    None,
    True,
    False,
    0,
    -1,
    1,
    1730192033,
    1730192033000,
    100_000_000_000,
    100_000_000_001,
    1.5,
    float("nan"),
    float("inf"),
    -float("inf"),
    10**400,
    [],
    {},
]


@pytest.mark.parametrize("tz", ZONES, ids=ZONE_IDS)
@pytest.mark.parametrize(
    "raw", HOSTILE, ids=[f"{n}-{plain_id(repr(r))}" for n, r in enumerate(HOSTILE)]
)
def test_hostile_inputs_give_exactly_what_they_gave(raw: object, tz: tzinfo) -> None:
    assert_same(raw, tz)


def test_a_string_subclass_takes_the_slow_path_and_still_agrees() -> None:
    class Text(str):
        def strip(self, chars: str | None = None) -> str:
            return "2000-01-01 00:00:00"  # whatever the fast path might trust

    for tz in ZONES:
        assert_same(Text("2024-10-29 16:53:53"), tz)


def test_the_fast_path_answers_the_documented_shape() -> None:
    """strptime is not called at all for what the API sends."""
    calls = 0
    original = model._parse_time_slow

    def counting(raw: object, tz: tzinfo) -> float | None:
        nonlocal calls
        calls += 1
        return original(raw, tz)

    model._parse_time_slow = counting
    try:
        for tz in ZONES:
            parse_time("2024-10-29 16:53:53", tz)
            parse_time("2024-10-29T16:53:53.250000", tz)
        assert calls == 0
        assert parse_time("2024-10-29  16:53:53", UTC) == 1730220833.0  # two spaces: slow
        assert calls == 1
    finally:
        model._parse_time_slow = original


def test_the_epochs_of_at_most_64_zones_are_kept() -> None:
    for minutes in range(65):
        zone = timezone(timedelta(minutes=minutes))
        assert parse_time("1970-01-01 00:00:00", zone) == -60.0 * minutes
        assert zone in model._local_epochs
    assert len(model._local_epochs) == 1  # the 65th started afresh


def test_exact_values_in_a_fixed_offset_and_across_a_gap() -> None:
    assert parse_time("2024-10-29 16:53:53", parse_timezone("+08:00")) == 1730192033.0
    assert parse_time("1970-01-01 08:00:00.000001", parse_timezone("+08:00")) == 1e-06
    new_york = ZoneInfo("America/New_York")
    # 02:30 does not exist on 2024-03-10; fold=0 reads it with the offset before (-5).
    assert parse_time("2024-03-10 02:30:00", new_york) == 1710055800.0
    # 01:30 happens twice on 2024-11-03; fold=0 is the first (-4).
    assert parse_time("2024-11-03 01:30:00", new_york) == 1730611800.0


ASCII_DIGITS = string.digits
OTHER_DIGITS = "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\uff10\uff15\u00b2"
FIELD_DIGITS = st.text(st.sampled_from(ASCII_DIGITS), min_size=1, max_size=3) | st.text(
    st.sampled_from(ASCII_DIGITS + OTHER_DIGITS + " +-_"), min_size=0, max_size=3
)
SEPARATORS = st.sampled_from([" ", "T", "t", "  ", "_", "\t", "\u3000", "", "x"])
SUFFIXES = st.sampled_from(["", "Z", "+08:00", "-0530", " ", "\n", ".", ":00", "\u0660"])
SPACES = st.sampled_from(["", " ", "\n", "\u3000", "\x1c", "\u200b"])


@st.composite
def time_like(draw: st.DrawFn) -> str:
    """Strings shaped like the documented time, each part anything from sane to hostile."""
    year = draw(st.integers(0, 10000).map(str).map(lambda s: s.zfill(4)) | FIELD_DIGITS)
    parts = [draw(st.integers(-1, 99).map(lambda n: f"{n:02d}") | FIELD_DIGITS) for _ in range(5)]
    fraction = draw(
        st.sampled_from([""])
        | st.text(st.sampled_from(ASCII_DIGITS), max_size=8).map(lambda d: "." + d)
    )
    return "".join(
        [
            draw(SPACES),
            year,
            "-",
            parts[0],
            "-",
            parts[1],
            draw(SEPARATORS),
            parts[2],
            ":",
            parts[3],
            ":",
            parts[4],
            fraction,
            draw(SUFFIXES),
            draw(SPACES),
        ]
    )


@st.composite
def near_daylight_saving(draw: st.DrawFn) -> str:
    """A wall-clock time on a day the clocks change somewhere in ZONES."""
    day = draw(
        st.sampled_from(
            ["2024-03-10", "2024-11-03", "2024-03-31", "2024-10-27", "2024-04-07", "2024-10-06"]
        )
    )
    hour, minute, second = (
        draw(st.integers(0, 3)),
        draw(st.integers(0, 59)),
        draw(st.integers(0, 59)),
    )
    micro = draw(st.sampled_from(["", ".5", ".999999", ".000001"]))
    return f"{day}{draw(st.sampled_from(' T'))}{hour:02d}:{minute:02d}:{second:02d}{micro}"


def canonical(moment: datetime) -> str:
    return moment.isoformat(sep=" ", timespec="microseconds" if moment.microsecond else "seconds")


@settings(max_examples=1500, deadline=None)
@given(
    time_like() | near_daylight_saving() | st.datetimes().map(canonical) | st.text(max_size=30),
    st.sampled_from(ZONES),
)
@example("2024-02-29 00:00:00", UTC)
def test_any_string_gives_exactly_what_it_gave(raw: str, tz: tzinfo) -> None:
    assert_same(raw, tz)


@settings(max_examples=500, deadline=None)
@given(st.datetimes().map(canonical), st.integers(0, 18), st.sampled_from(ZONES))
def test_one_character_changed_gives_exactly_what_it_gave(
    raw: str, position: int, tz: tzinfo
) -> None:
    """A valid time with one character replaced by a hostile one, in any place."""
    for char in ["\u0661", " ", "T", "-", ":", ".", "9", "\x00", "\u00b2", "+"]:
        assert_same(raw[:position] + char + raw[position + 1 :], tz)


@settings(max_examples=300, deadline=None)
@given(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.binary(max_size=8),
    st.sampled_from(ZONES),
)
def test_any_non_string_gives_exactly_what_it_gave(raw: object, tz: tzinfo) -> None:
    assert_same(raw, tz)
