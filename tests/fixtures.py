"""Expected figures for the simulator's ``static`` scenario (see simulator.static_jobs)."""

from __future__ import annotations

Key = tuple[str, str, str]

#: (model, training_type, status) -> (jobs, tokens) for every non-zero group.
NONZERO: dict[Key, tuple[int, int]] = {
    ("qwen3-14b", "sft", "SUCCEEDED"): (3, 279808 + 100000 + 50000),
    ("qwen3-14b", "sft", "RUNNING"): (1, 0),
    ("qwen3-14b", "sft", "FAILED"): (1, 0),
    ("qwen3-14b", "sft", "CANCELED"): (1, 0),
    ("qwen3-14b", "efficient_sft", "SUCCEEDED"): (1, 12345),  # sent as "SUCCEED"
    ("qwen3-14b", "efficient_sft", "PENDING"): (1, 0),
    ("qwen3-14b", "efficient_sft", "QUEUING"): (1, 0),  # sent as "queuing"
    ("qwen3-8b", "sft", "SUCCEEDED"): (2, 5000),
    ("qwen3-8b", "sft", "CANCELING"): (1, 0),
    ("qwen3-8b", "sft", "QUEUING"): (2, 0),
    ("qwen3-8b", "dpo_lora", "RUNNING"): (1, 0),
    ("qwen3-8b", "dpo_lora", "FAILED"): (1, 0),  # usage: null
    ("qwen3-8b", "dpo_lora", "SUSPENDED"): (1, 0),  # not a documented status
    ("qwen2.5-7b-instruct", "cpt", "SUCCEEDED"): (1, 4096),  # usage as a string
    ("qwen2.5-7b-instruct", "cpt", "RUNNING"): (1, 0),
}
#: The seven statuses the vendor documents, spelt out here rather than read from the code
#: under test: a status dropped from (or added to) model.DOCUMENTED_STATUSES must fail.
DOCUMENTED = ("PENDING", "QUEUING", "RUNNING", "CANCELING", "SUCCEEDED", "FAILED", "CANCELED")
GROUPS = sorted({(m, t) for m, t, _ in NONZERO})
#: Every group has the seven documented statuses; SUSPENDED only the group with such a job.
SERIES = sorted(
    {(m, t, s) for m, t in GROUPS for s in DOCUMENTED}
    | {key for key in NONZERO if key[2] not in DOCUMENTED}
)
assert len(SERIES) == 5 * 7 + 1


def expected_job_counts() -> dict[Key, float]:
    return {key: float(NONZERO.get(key, (0, 0))[0]) for key in SERIES}


def expected_usage_tokens() -> dict[Key, float]:
    return {key: float(NONZERO.get(key, (0, 0))[1]) for key in SERIES}
