"""Sharding accounts across replicas: disjoint, complete, and the same in every process."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from ft_exporter.sharding import check_shards, owned, shard_of

NAMES = [f"team-{i:02d}" for i in range(20)]


@pytest.mark.parametrize(
    ("name", "shards"),
    [
        # From `printf %s NAME | sha256sum | cut -c1-16` and bc, as the module docstring shows:
        # {total: shard} for totals 1, 2, 3, 7 and 1000.
        ("sg-research", {1: 0, 2: 0, 3: 0, 7: 4, 1000: 710}),  # 734f38c5baf4252e
        ("bj-prod", {1: 0, 2: 0, 3: 2, 7: 1, 1000: 842}),  # ab5f57523b5f1b6a
        ("", {1: 0, 2: 0, 3: 1, 7: 1, 1000: 652}),  # e3b0c44298fc1c14
        ("\u00e9", {1: 0, 2: 1, 3: 0, 7: 3, 1000: 51}),  # 4a99557e4033c353: UTF-8, not Latin-1
    ],
)
def test_known_vectors_from_sha256sum(name: str, shards: dict[int, int]) -> None:
    assert {total: shard_of(name, total) for total in shards} == shards


def test_the_rule_is_the_first_8_bytes_big_endian_modulo_total() -> None:
    for name in NAMES:
        prefix = hashlib.sha256(name.encode()).hexdigest()[:16]
        assert shard_of(name, 3) == int(prefix, 16) % 3
        assert shard_of(name, 2**64 + 1) == int(prefix, 16)  # all 8 bytes, no more


def test_three_shards_own_disjoint_sets_that_cover_all_names() -> None:
    # From sha256sum and bc (see the module docstring), not from this code.
    assert [owned(NAMES, shard, 3) for shard in range(3)] == [
        [f"team-{i:02d}" for i in (4, 5, 6, 9, 10, 11, 14, 17, 18)],
        [f"team-{i:02d}" for i in (0, 1, 7, 8, 12, 13, 15, 19)],
        [f"team-{i:02d}" for i in (2, 3, 16)],
    ]
    sets = [set(owned(NAMES, shard, 3)) for shard in range(3)]
    assert sets[0] | sets[1] | sets[2] == set(NAMES)
    assert sum(len(s) for s in sets) == len(NAMES)  # disjoint


@pytest.mark.e2e
def test_every_process_agrees() -> None:
    """A new interpreter, with another hash seed: the shards must not move."""
    code = (
        "import json, sys; from ft_exporter.sharding import owned; "
        "names = json.loads(sys.argv[1]); "
        "print(json.dumps([owned(names, s, 3) for s in range(3)]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(NAMES)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    )
    assert json.loads(result.stdout) == [owned(NAMES, s, 3) for s in range(3)]


def test_adding_accounts_moves_no_existing_one() -> None:
    before = {name: shard_of(name, 3) for name in NAMES}
    more = NAMES + [f"new-{i}" for i in range(10)]
    assert {name: shard_of(name, 3) for name in more if name in before} == before
    assert owned(more, 1, 3)[: len(owned(NAMES, 1, 3))] == owned(NAMES, 1, 3)


@pytest.mark.parametrize(
    ("shard", "total", "problem"),
    [
        (0, 0, "--total-shards must be at least 1, got 0"),
        (0, -2, "--total-shards must be at least 1, got -2"),
        (3, 3, "--shard must be between 0 and 2 (--total-shards - 1), got 3"),
        (-1, 3, "--shard must be between 0 and 2 (--total-shards - 1), got -1"),
    ],
)
def test_impossible_shards_are_refused(shard: int, total: int, problem: str) -> None:
    with pytest.raises(ValueError, match="shards") as caught:
        check_shards(shard, total)
    assert str(caught.value) == problem


@pytest.mark.parametrize(("shard", "total"), [(0, 1), (2, 3), (0, 3)])
def test_possible_shards_pass(shard: int, total: int) -> None:
    check_shards(shard, total)
