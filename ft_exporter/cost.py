"""What the fine-tuning cost: tokens of the listed jobs times the price per 1,000 tokens.

Arithmetic, so that anyone can check a figure by hand: per model, the jobs'
``usage_tokens`` are summed as integers (exact), then the cost is
``tokens * price / 1000`` in floats, one multiplication and one division, each rounded
to the nearest float as Python does; nothing is rounded to the currency's units (a
dashboard formats the figure). A model's price is its entry in ``per_1k_tokens``, else
the table's ``default``; a model with neither gets no cost at all (not 0), and is
returned in the second set so the caller can log it once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ft_exporter.model import Job


@dataclass(frozen=True, slots=True)
class Prices:
    """Price per 1,000 tokens by model (``job.model``), and of every other model."""

    currency: str
    per_1k_tokens: Mapping[str, float]
    default: float | None = None


def estimated_costs(jobs: Iterable[Job], prices: Prices) -> tuple[dict[str, float], set[str]]:
    """Cost per model (``job.model``), and the models that have no price."""
    tokens: dict[str, int] = {}
    for job in jobs:
        tokens[job.model] = tokens.get(job.model, 0) + job.usage_tokens
    costs: dict[str, float] = {}
    unpriced: set[str] = set()
    for model, total in tokens.items():
        price = prices.per_1k_tokens.get(model, prices.default)
        if price is None:
            unpriced.add(model)
        else:
            costs[model] = total * price / 1000
    return costs, unpriced
