"""Estimated cost: tokens per model times the price per 1,000 tokens, against a hand table."""

from __future__ import annotations

from types import MappingProxyType

from ft_exporter.cost import Prices, estimated_costs
from ft_exporter.model import Job

PRICES = Prices(
    currency="CNY",
    per_1k_tokens=MappingProxyType({"qwen3-8b": 0.06, "qwen3-14b": 0.5, "free-model": 0.0}),
    default=0.1,
)


def job(job_id: str, model: str, tokens: int, status: str = "SUCCEEDED") -> Job:
    return Job(
        job_id=job_id,
        job_name="",
        status=status,
        model=model,
        base_model=model,
        training_type="sft",
        finetuned_output="",
        created=None,
        ended=None,
        usage_tokens=tokens,
    )


JOBS = [
    job("ft-1", "qwen3-8b", 1_000_000),
    job("ft-2", "qwen3-8b", 234_567, "FAILED"),  # every listed job counts, whatever its status
    job("ft-3", "qwen3-14b", 1_500),
    job("ft-4", "qwen3-14b", 0, "RUNNING"),
    job("ft-5", "qwen2.5-7b-instruct", 3_000),  # no price of its own: the default
    job("ft-6", "free-model", 999_999),  # priced at 0: a cost of 0, not "unpriced"
    job("ft-7", "qwen2.5-7b-instruct", 0),
]


def test_costs_against_the_hand_computed_table() -> None:
    # qwen3-8b:   (1,000,000 + 234,567) tokens * 0.06 / 1000 = 74.07402
    # qwen3-14b:  (1,500 + 0) * 0.5 / 1000                  = 0.75
    # qwen2.5-7b-instruct: (3,000 + 0) * 0.1 (default) / 1000 = 0.3
    # free-model: 999,999 * 0 / 1000                        = 0
    assert estimated_costs(JOBS, PRICES) == (
        {"qwen3-8b": 74.07402, "qwen3-14b": 0.75, "qwen2.5-7b-instruct": 0.3, "free-model": 0.0},
        set(),
    )


def test_without_a_default_a_model_with_no_price_has_no_cost() -> None:
    no_default = Prices(currency="USD", per_1k_tokens=PRICES.per_1k_tokens, default=None)
    costs, unpriced = estimated_costs([*JOBS, job("ft-8", "mystery", 10)], no_default)
    assert costs == {"qwen3-8b": 74.07402, "qwen3-14b": 0.75, "free-model": 0.0}
    assert unpriced == {"qwen2.5-7b-instruct", "mystery"}


def test_tokens_are_summed_exactly_before_the_one_multiplication() -> None:
    # 0.1 per 1k on ten jobs of 1 token: summed first, 10 * 0.1 / 1000 = 0.001 exactly as
    # Python computes it; adding ten per-job costs of 0.0001 would give 0.0010000000000000002.
    ten = [job(f"ft-{i}", "m", 1) for i in range(10)]
    costs, _ = estimated_costs(ten, Prices("CNY", MappingProxyType({}), default=0.1))
    assert costs == {"m": 0.001}
    assert sum([1 * 0.1 / 1000] * 10) != 0.001  # the order this guards against


def test_jobs_are_read_once() -> None:
    """An iterator (a generator over the snapshot) is enough."""
    costs, unpriced = estimated_costs(iter(JOBS), PRICES)
    assert costs["qwen3-8b"] == 74.07402
    assert unpriced == set()
