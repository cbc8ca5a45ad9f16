"""Jump consistent hash and the channel → shard mapping (pure functions, no Redis)."""

from __future__ import annotations

from collections import Counter

import pytest

from hubbub.cluster.sharding import channel_key, jump_hash, shard_of


def test_known_vectors() -> None:
    # The published examples of the algorithm (the Rust crate jump-consistent-hash).
    assert [jump_hash(k, 60) for k in (0, 1, 2)] == [0, 55, 46]
    assert jump_hash(2**64 - 1, 1) == 0


def test_one_bucket_is_always_zero() -> None:
    assert {jump_hash(k * 7919, 1) for k in range(1000)} == {0}


def test_result_in_range() -> None:
    for buckets in (1, 2, 3, 7, 64, 1000):
        for key in range(0, 2**64, 2**64 // 300):
            assert 0 <= jump_hash(key, buckets) < buckets


def test_bad_bucket_count() -> None:
    with pytest.raises(ValueError):
        jump_hash(1, 0)


def test_adding_a_bucket_moves_keys_only_to_it() -> None:
    """Consistency: from n to n+1 buckets a key stays or moves to bucket n."""
    keys = [channel_key(f"chat:room-{i}") for i in range(3000)]
    for n in range(1, 8):
        moved = 0
        for key in keys:
            before, after = jump_hash(key, n), jump_hash(key, n + 1)
            if before != after:
                assert after == n
                moved += 1
        # About 1/(n+1) of the keys move (loose bounds: a deterministic sample).
        assert 0.5 / (n + 1) < moved / len(keys) < 1.5 / (n + 1)


def test_spread_is_even() -> None:
    counts = Counter(shard_of(f"feed:{i}", 4) for i in range(8000))
    assert set(counts) == {0, 1, 2, 3}
    assert all(1600 < c < 2400 for c in counts.values())


def test_channel_key_is_stable() -> None:
    # Every node, every Python version: never the salted built-in hash().
    assert channel_key("chat:lobby") == channel_key("chat:lobby")
    assert channel_key("chat:lobby") != channel_key("chat:lobby2")
    assert channel_key("") == int.from_bytes(
        bytes.fromhex("e4a6a0577479b2b4"), "big"
    )  # blake2b-64 of b"" (RFC 7693 parameters, digest_size 8)


def test_single_shard_owns_everything() -> None:
    assert {shard_of(f"c{i}", 1) for i in range(100)} == {0}
