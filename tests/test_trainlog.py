"""The training-log line parser: every shape of the facts sheet, and every malformed one.

Exact values throughout (NaN by ``math.isnan``): the coming tailer turns these into
loss, progress and divergence alerts, where a value read wrong is worse than none.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ft_exporter.trainlog import (
    MAX_LINE_BYTES,
    RECOGNISED,
    LineKind,
    Record,
    classify,
    line_time,
    parse_line,
    planned_epochs,
)

STAMP = "2024-10-29 17:11:25,130 - INFO - "


def values(line: str) -> dict[str, float] | None:
    record = parse_line(line)
    return None if record is None else dict(record.values)


# The facts sheet's lines, as the API gives them.
STEP = "{'loss': 1.62, 'learning_rate': 1.6e-04, 'epoch': 0.9}"
EVAL = "{'eval_loss': 0.49, 'epoch': 2.0}"
SUMMARY = (
    "{'train_runtime': 216.3999, 'train_samples_per_second': 2.066, "
    "'train_steps_per_second': 0.014, 'train_loss': 0.9122632344563802, 'epoch': 0.857}"
)
FREE_TEXT = [
    " Actual number of consumed tokens is 279808!",
    " Uploaded checkpoint!",
    " Fine-tune succeeded!",
    " use checkpoint-3 as final checkpoint",
    "2024-10-29 17:11:25,130 - INFO - training usage 279808",
    "2024-10-29 17:11:25,175 - INFO - ##FT_COMPLETE##",
]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (STEP, {"loss": 1.62, "learning_rate": 1.6e-4, "epoch": 0.9}),
        (EVAL, {"eval_loss": 0.49, "epoch": 2.0}),
        (SUMMARY, {"train_runtime": 216.3999, "train_loss": 0.9122632344563802, "epoch": 0.857}),
        ("{'grad_norm': 3.25, 'loss': 0.5}", {"grad_norm": 3.25, "loss": 0.5}),
        # The timestamped prefix of the log's own lines, with either fraction mark or none.
        (STAMP + EVAL, {"eval_loss": 0.49, "epoch": 2.0}),
        ("2024-10-29 17:11:25.130 - WARNING - {'loss': 1}", {"loss": 1.0}),
        ("2024-10-29T17:11:25 - info - {'loss': 1}", {"loss": 1.0}),
        ("2024-10-29 17:11:25,130\t-\tINFO\t-\t{'loss': 1}", {"loss": 1.0}),
    ],
)
def test_the_facts_sheet_records(line: str, expected: dict[str, float]) -> None:
    assert values(line) == expected
    assert classify(line) == (LineKind.RECORD, Record(expected))


@pytest.mark.parametrize("line", FREE_TEXT)
def test_the_facts_sheet_free_text(line: str) -> None:
    assert classify(line) == (LineKind.TEXT, None)


def test_a_record_is_read_only() -> None:
    record = parse_line(EVAL)
    assert record is not None
    with pytest.raises(TypeError):
        record.values["loss"] = 1.0  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "sign"),
    [
        ("nan", 0),
        ("NaN", 0),
        ("NAN", 0),
        ("-nan", 0),
        ("inf", 1),
        ("+inf", 1),
        ("Infinity", 1),
        ("INFINITY", 1),
        ("-inf", -1),
        ("-Infinity", -1),
        ("'nan'", 0),
        ('"-inf"', -1),
        ("' Infinity '", 1),
        ("1e999", 1),
        ("-1e999", -1),
    ],
)
def test_non_finite_values_are_kept(text: str, sign: int) -> None:
    got = values(f"{{'loss': {text}, 'epoch': 1.5}}")
    assert got is not None
    assert got["epoch"] == 1.5
    if sign == 0:
        assert math.isnan(got["loss"])
    else:
        assert got["loss"] == sign * math.inf


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("0", 0.0),
        ("42", 42.0),
        ("-3", -3.0),
        ("+3", 3.0),
        ("007", 7.0),
        ("1.", 1.0),
        (".5", 0.5),
        ("-.5", -0.5),
        ("1.6e-04", 1.6e-4),
        ("1.6E-04", 1.6e-4),
        ("2e3", 2000.0),
        ("2e+3", 2000.0),
        ("-2.5e-3", -0.0025),
        ("1e-05", 1e-5),
        ("'1.6e-5'", 1.6e-5),
        ('"0.25"', 0.25),
        ("' 3 '", 3.0),
        ("1" * 400, math.inf),  # overflows as Python reads it
    ],
)
def test_number_forms(text: str, number: float) -> None:
    assert values(f"{{'learning_rate': {text}}}") == {"learning_rate": number}


@pytest.mark.parametrize(
    "line",
    [
        "{'loss':1.5,'epoch':2}",
        "{ 'loss' : 1.5 , 'epoch' : 2 }",
        "\t{'loss':\t1.5,\t'epoch': 2}\t",
        "   {'loss': 1.5, 'epoch': 2}\r\n",
        '{"loss": 1.5, "epoch": 2}',
        "{'loss': 1.5, \"epoch\": 2}",
    ],
)
def test_whitespace_and_quote_variations(line: str) -> None:
    assert values(line) == {"loss": 1.5, "epoch": 2.0}


@pytest.mark.parametrize(
    "line",
    [
        # Other keys are checked and dropped, whatever their value's shape.
        "{'loss': 1.5, 'step': 10, 'note': 'warm-up done', 'x': \"it's\", 'unit': ''}",
        "{'total_flos': 1.2e+16, 'loss': 1.5, 'eval_runtime': nan}",
        "{'lösung': 1, 'loss': 1.5}",
        "{'': 3, 'loss': 1.5}",
    ],
)
def test_other_keys_are_ignored(line: str) -> None:
    assert values(line) == {"loss": 1.5}


@pytest.mark.parametrize(
    "line",
    [
        # No recognised key: no record.
        "{}",
        "{ }",
        "{'train_samples_per_second': 2.066}",
        "{'Loss': 1.5}",
        "{'loss ': 1.5}",
        # Truncated records.
        "{'loss': 1.62, 'learning_rate': 1.6e-04, 'epoch': 0.9",
        "{'loss': 1.62, 'learning_rate': 1.6e-04, 'epo",
        "{'loss': 1.62, 'learning_rate'",
        "{'loss': 1.62, 'learning_rate':",
        "{'loss': 1.62,",
        "{'loss'",
        "{'loss",
        "{",
        # Nested braces and other containers as values.
        "{'loss': {'value': 1.5}}",
        "{'loss': 1.5, 'extra': {'a': 1}}",
        "{'loss': 1.5, 'extra': [1, 2]}",
        "{'loss': [1.5]}",
        "{'loss': (1.5,)}",
        "{{'loss': 1.5}}",
        "{'loss': 1.5}}",
        # Strings that hold no number under a recognised key; escapes and broken quotes.
        "{'loss': 'high'}",
        "{'loss': ''}",
        "{'loss': '1.5', 'epoch': 'one'}",
        "{'loss': 1.5, 'note': 'it\\'s'}",
        "{'loss': 1.5, 'note': 'open}",
        "{'loss': 1.5, 'note': \"mixed'}",
        "{loss: 1.5}",
        "{'loss' 1.5}",
        "{'loss':: 1.5}",
        # Duplicate keys: which one is meant is not certain.
        "{'loss': 1.5, 'loss': 2.5}",
        "{'loss': 1.5, 'step': 1, 'step': 2}",
        # Separators.
        "{'loss': 1.5,}",
        "{'loss': 1.5 'epoch': 2}",
        "{'loss': 1.5;'epoch': 2}",
        "{,'loss': 1.5}",
        "{'loss': 1.5,, 'epoch': 2}",
        # Other tokens as values.
        "{'loss': None}",
        "{'loss': True}",
        "{'loss': 1_000}",
        "{'loss': 0x10}",
        "{'loss': 1.5.5}",
        "{'loss': 1e}",
        "{'loss': e5}",
        "{'loss': --1}",
        "{'loss': infinit}",
        "{'loss': nano}",
        "{'loss': 1.5abc}",
        # Unicode look-alikes: Arabic-Indic digits, a dotless i, a full-width digit.
        "{'loss': \u0661.\u0665}",
        "{'loss': \u0131nf}",
        "{'loss': '\u0131nf'}",
        "{'loss': \uff11}",
        # Text around the record.
        "{'loss': 1.5} and more",
        "loss {'loss': 1.5}",
        "INFO - {'loss': 1.5}",
        "2024-10-29 17:11:25,130 - {'loss': 1.5}",
        "2024-10-29 17:11:25,130 INFO {'loss': 1.5}",
        "2024-10-29 - INFO - {'loss': 1.5}",
        "2024-10-29 17:11:25,130 - INFO - {'loss': 1.5} x",
        # Garbage.
        "",
        "   ",
        "}",
        "'loss': 1.5",
        "\x00{'loss': 1.5}",
        "{'loss': \x00 1.5}",
        "{'loss': 1.5\n, 'epoch': 2}",
        "{'lo\nss': 1.5}",
        "\ud800{'loss': 1.5}",
    ],
)
def test_malformed_or_empty_records_are_free_text(line: str) -> None:
    assert classify(line) == (LineKind.TEXT, None)
    assert parse_line(line) is None


def test_unicode_in_an_ignored_string_keeps_the_record() -> None:
    line = "{'loss': 1.5, 'stage': 'Ünïcödé 训练 🚀', 'epoch': -0.0}"
    got = values(line)
    assert got == {"loss": 1.5, "epoch": 0.0}
    assert math.copysign(1.0, got["epoch"]) == -1.0


def _padded(size: int) -> str:
    """A record whose ignored note pads it to ``size`` characters (ASCII: as many bytes)."""
    head, tail = "{'loss': 1.5, 'note': '", "'}"
    return head + "x" * (size - len(head) - len(tail)) + tail


def test_a_line_of_exactly_64_kib_is_read() -> None:
    line = _padded(MAX_LINE_BYTES)
    assert len(line.encode()) == 65536 == len(line)
    assert classify(line) == (LineKind.RECORD, Record({"loss": 1.5}))


def test_a_line_of_64_kib_and_one_byte_is_skipped() -> None:
    line = _padded(MAX_LINE_BYTES + 1)
    assert len(line) == 65537
    assert classify(line) == (LineKind.TOO_LONG, None)
    assert parse_line(line) is None


def test_the_limit_counts_utf8_bytes_not_characters() -> None:
    core = "{'loss': 1.5, 'note': ''}"
    fits = core[:-2] + "é" * ((MAX_LINE_BYTES - len(core)) // 2) + core[-2:]
    over = core[:-2] + "é" * ((MAX_LINE_BYTES - len(core)) // 2 + 1) + core[-2:]
    assert (len(fits.encode()), len(over.encode())) == (65535, 65537)
    assert classify(fits) == (LineKind.RECORD, Record({"loss": 1.5}))
    assert classify(over) == (LineKind.TOO_LONG, None)
    assert len(over) < MAX_LINE_BYTES  # only the byte count tells


def test_free_text_past_the_limit_is_too_long_not_text() -> None:
    assert classify("x" * 100_000) == (LineKind.TOO_LONG, None)
    assert classify("\ud800" * 30_000) == (LineKind.TOO_LONG, None)  # 3 bytes each
    assert classify("\ud800" * 20_000) == (LineKind.TEXT, None)


@pytest.mark.parametrize(
    ("hyper_parameters", "epochs"),
    [
        ({"n_epochs": 3}, 3.0),
        ({"n_epochs": 2.5, "batch_size": 8}, 2.5),
        ({"n_epochs": "3"}, 3.0),
        ({"n_epochs": " 1e1 "}, 10.0),
        ({"n_epochs": 1e-9}, 1e-9),
        ({"n_epochs": 0}, None),
        ({"n_epochs": -1}, None),
        ({"n_epochs": "0"}, None),
        ({"n_epochs": "-2"}, None),
        ({"n_epochs": "nan"}, None),
        ({"n_epochs": float("nan")}, None),
        ({"n_epochs": "inf"}, None),
        ({"n_epochs": float("inf")}, None),
        ({"n_epochs": True}, None),
        ({"n_epochs": 10**9}, 1e9),
        ({"n_epochs": 10**9 + 1}, None),
        ({"n_epochs": 10**400}, None),
        ({"n_epochs": -(10**400)}, None),
        ({"n_epochs": "three"}, None),
        ({"n_epochs": ""}, None),
        ({"n_epochs": None}, None),
        ({"n_epochs": [3]}, None),
        ({"n_epochs": {"value": 3}}, None),
        ({"epochs": 3}, None),
        ({}, None),
        (None, None),
        ([("n_epochs", 3)], None),
        ("n_epochs=3", None),
    ],
)
def test_planned_epochs(hyper_parameters: object, epochs: float | None) -> None:
    assert planned_epochs(hyper_parameters) == epochs


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200) | st.text(alphabet="{}'\":,. -+eE0123456789naifINF", max_size=80))
def test_any_text_never_raises_and_yields_only_recognised_floats(line: str) -> None:
    kind, record = classify(line)
    assert (kind is LineKind.RECORD) == (record is not None)
    if record is not None:
        assert record.values
        assert set(record.values) <= RECOGNISED
        assert all(type(value) is float for value in record.values.values())


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(sorted(RECOGNISED)),
        st.floats(allow_nan=False, allow_infinity=False),
        min_size=1,
    ),
    st.dictionaries(st.sampled_from(["step", "total_flos", "note"]), st.integers()),
    st.booleans(),
)
def test_a_dict_repr_round_trips(
    recognised: dict[str, float], others: dict[str, int], stamped: bool
) -> None:
    line = repr({**others, **recognised})
    assert values(STAMP + line if stamped else line) == recognised


@pytest.mark.parametrize(
    ("line", "stamp"),
    [
        # 2024-10-29 09:11:25 UTC is 1730193085.
        ("2024-10-29 17:11:25 - INFO - no fraction", 1730193085.0),
        ("2024-10-29 17:11:25,130 - INFO - step", 1730193085.13),
        ("2024-10-29 17:11:59.5 - INFO - step", 1730193119.5),
        ("2024-02-30 17:11:25 - INFO - no such day", None),
        ("Start training!", None),
    ],
)
def test_line_time_reads_the_leading_time_in_the_accounts_zone(
    line: str, stamp: float | None
) -> None:
    from datetime import timedelta, timezone

    assert line_time(line, timezone(timedelta(hours=8))) == stamp
