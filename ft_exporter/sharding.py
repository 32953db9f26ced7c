"""Which replica exports which account: a stable hash every replica computes alike.

An account belongs to shard ``shard_of(name, total)``: the first 8 bytes of the SHA-256
of its name (UTF-8, nothing appended) read as a big-endian unsigned integer, modulo the
number of shards. No state, no coordination: every replica started with the same
``--total-shards`` agrees, across restarts, Python versions and machines, and adding an
account never moves another. To reproduce it in a shell (``bc``, since a shell's
arithmetic is signed 64-bit and would go wrong for half of all names)::

    h=$(printf %s "$NAME" | sha256sum | cut -c1-16 | tr a-f A-F)
    echo "ibase=16; $h % $(printf %X "$TOTAL")" | bc
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def shard_of(name: str, total: int) -> int:
    """The shard, in 0 .. total - 1, that owns the account ``name``."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % total


def owned(names: Iterable[str], shard: int, total: int) -> list[str]:
    """The names, in their order, that shard ``shard`` of ``total`` owns."""
    return [name for name in names if shard_of(name, total) == shard]


def check_shards(shard: int, total: int) -> None:
    """Refuse a shard that cannot exist; the messages name the flags."""
    if total < 1:
        raise ValueError(f"--total-shards must be at least 1, got {total}")
    if not 0 <= shard < total:
        raise ValueError(
            f"--shard must be between 0 and {total - 1} (--total-shards - 1), got {shard}"
        )
