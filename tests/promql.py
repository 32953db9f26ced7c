"""Just enough PromQL reading to list the metric and label names an expression uses.

Prometheus itself checks that an expression parses (the end-to-end test runs every one);
this module answers the question Prometheus cannot: does every name refer to something
the exporter serves? An expression whose metric name has a typo parses fine and simply
returns nothing, which a dashboard shows as "No data" and an alert as silence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(
    r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    | (?P<comment>\#[^\n]*)
    | (?P<range>\[[^\]]*\])
    | (?P<number>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^(){},=<>!])
    | (?P<space>\s+)
    """,
    re.VERBOSE,
)

#: Keywords whose parenthesised argument is a list of label names.
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
#: Keywords and literals that are neither metrics nor labels.
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "Inf", "NaN", "inf", "nan"})
#: Aggregation operators, which may take ``by (...)`` or ``without (...)`` before their argument.
AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)

_LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_LABEL_VALUES = re.compile(
    r"^\s*label_values\((?P<selector>.*),\s*(?P<label>[A-Za-z_]\w*)\s*\)\s*$"
)


@dataclass
class Names:
    """Metric names, label names and function names an expression uses."""

    metrics: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)

    def update(self, other: Names) -> None:
        self.metrics |= other.metrics
        self.labels |= other.labels
        self.functions |= other.functions


def tokenize(expr: str) -> list[tuple[str, str]]:
    """(kind, text) pairs without comments and white space; raises on what it cannot read."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot read PromQL at {expr[pos : pos + 20]!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind not in ("space", "comment"):
            tokens.append((kind, match.group()))
        pos = match.end()
    return tokens


def _label_list(tokens: list[tuple[str, str]], start: int, names: Names) -> int:
    """Read ``( a, b )`` from ``tokens[start]``; returns the index after ``)``."""
    if start >= len(tokens) or tokens[start][1] != "(":
        raise ValueError("expected a label list in parentheses")
    i = start + 1
    while i < len(tokens) and tokens[i][1] != ")":
        kind, text = tokens[i]
        if kind == "ident":
            names.labels.add(text)
        elif text != ",":
            raise ValueError(f"unexpected {text!r} in a label list")
        i += 1
    return i + 1


def _matchers(tokens: list[tuple[str, str]], start: int, names: Names) -> int:
    """Read ``{ label op "value", ... }`` from ``tokens[start]``; returns the index after ``}``."""
    i = start + 1
    while i < len(tokens) and tokens[i][1] != "}":
        kind, text = tokens[i]
        if kind == "ident" and i + 1 < len(tokens) and tokens[i + 1][1] in ("=", "!=", "=~", "!~"):
            if text == "__name__":
                value = tokens[i + 2][1].strip("\"'`") if i + 2 < len(tokens) else ""
                if re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", value):
                    names.metrics.add(value)
            else:
                names.labels.add(text)
            i += 3
        elif text == ",":
            i += 1
        else:
            raise ValueError(f"unexpected {text!r} in a label matcher")
    return i + 1


def names(expr: str) -> Names:
    """Every metric, label and function name in one PromQL expression."""
    tokens = tokenize(expr)
    found = Names()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "ident" and text in LABEL_LIST_KEYWORDS:
            i = _label_list(tokens, i + 1, found) if following == "(" else i + 1
        elif kind == "ident" and text in KEYWORDS:
            i += 1
        elif kind == "ident" and (
            following == "(" or (text in AGGREGATIONS and following in ("by", "without"))
        ):
            found.functions.add(text)
            i += 1
        elif kind == "ident":
            found.metrics.add(text)
            i += 1
        elif text == "{":
            i = _matchers(tokens, i, found)
        else:
            i += 1
    return found


def legend_labels(legend: str) -> set[str]:
    """Label names a Grafana legend format such as ``{{model}} {{status}}`` refers to."""
    return set(_LEGEND_LABEL.findall(legend))


def variable_query_names(query: str) -> Names:
    """Names in a Grafana Prometheus variable query, ``label_values(selector, label)``."""
    match = _LABEL_VALUES.match(query)
    if match is None:
        raise ValueError(f"not a label_values() query: {query!r}")
    found = names(match.group("selector"))
    found.labels.add(match.group("label"))
    return found
