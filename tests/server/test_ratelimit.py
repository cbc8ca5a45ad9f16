"""The command token bucket and the abuse rule (server.ratelimit), time passed in."""

from __future__ import annotations

import pytest

from hubbub.server.ratelimit import ABUSE, ADMIT, CommandLimiter, TokenBucket, bucket_burst


def test_bucket_starts_full_and_admits_a_burst() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(0.0) == pytest.approx(0.1)


def test_bucket_refills_at_the_rate_and_caps_at_burst() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    for _ in range(5):
        bucket.take(0.0)
    assert bucket.take(0.05) == pytest.approx(0.05)  # half a token earned
    assert bucket.take(0.1) == 0.0  # one token at 0.1 s
    # A long idle time refills to burst, not beyond.
    assert [bucket.take(100.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(100.0) > 0


def test_bucket_holds_the_rate_over_time() -> None:
    bucket = TokenBucket(rate=100, burst=1, now=0.0)
    admitted = sum(1 for i in range(10_000) if bucket.take(i * 0.001) == 0.0)  # 1000/s for 10 s
    assert 999 <= admitted <= 1001


def test_full_and_configure() -> None:
    bucket = TokenBucket(rate=2, burst=4, now=0.0)
    assert bucket.full(0.0)
    bucket.take(0.0)
    assert not bucket.full(0.4)
    assert bucket.full(0.5)
    bucket.take(1.0)
    bucket.configure(rate=1, burst=2, now=1.0)  # tokens clipped to the new burst
    assert bucket.take(1.0) == 0.0
    assert bucket.take(1.0) == 0.0
    assert bucket.take(1.0) == pytest.approx(1.0)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, now=0.0)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0, now=0.0)


def test_retry_after_is_the_wait_for_one_token_in_ms() -> None:
    limiter = CommandLimiter(rate=4, burst=3, now=0.0)
    assert [limiter.check(0.0) for _ in range(3)] == [ADMIT] * 3
    assert limiter.check(0.0) == 250
    assert limiter.check(0.1) == 150
    assert limiter.check(0.25) == ADMIT


def test_retry_after_is_at_least_one_ms() -> None:
    limiter = CommandLimiter(rate=1000, burst=1, now=0.0)
    assert limiter.check(0.0) == ADMIT
    assert limiter.check(0.0009999) == 1


def test_abuse_after_more_than_twice_burst_refusals_within_the_window() -> None:
    # rate 10, burst 5: the window is 0.5 s; the 11th refusal within it is abuse.
    limiter = CommandLimiter(rate=10, burst=5, now=0.0)
    results = [limiter.check(0.0) for _ in range(5 + 10)]
    assert results[:5] == [ADMIT] * 5
    assert all(r > 0 for r in results[5:])
    assert limiter.check(0.0) == ABUSE
    assert limiter.refill_ms == 500


def test_a_client_that_honours_retry_after_is_never_cut() -> None:
    limiter = CommandLimiter(rate=10, burst=5, now=0.0)
    t, admitted = 0.0, 0
    while t < 100:
        verdict = limiter.check(t)
        assert verdict != ABUSE
        if verdict == ADMIT:
            admitted += 1
        else:
            t += verdict / 1000  # waits as told
    assert admitted == pytest.approx(5 + 1000, abs=2)


def test_a_client_at_twice_the_rate_is_never_cut() -> None:
    # Half its commands are refused: about burst per window, half the limit.
    limiter = CommandLimiter(rate=10, burst=5, now=0.0)
    verdicts = [limiter.check(i / 20) for i in range(2000)]  # 20/s for 100 s
    assert ABUSE not in verdicts
    assert sum(1 for v in verdicts if v == ADMIT) == pytest.approx(1000, abs=6)


def test_a_client_at_exactly_the_rate_is_never_refused() -> None:
    limiter = CommandLimiter(rate=100, burst=1, now=0.0)
    assert all(limiter.check(i * 0.01) == ADMIT for i in range(10_000))


def test_a_client_at_four_times_the_rate_is_cut_within_a_window() -> None:
    limiter = CommandLimiter(rate=10, burst=5, now=0.0)
    t = 0.0
    for _ in range(5):  # empties the bucket
        assert limiter.check(t) == ADMIT
    first_refusal = None
    while True:
        t += 1 / 40
        verdict = limiter.check(t)
        if verdict > 0 and first_refusal is None:
            first_refusal = t
        if verdict == ABUSE:
            break
        assert t < 5
    assert first_refusal is not None
    assert t - first_refusal <= 0.5  # within one abuse window of the first refusal


def test_refusals_in_separate_windows_do_not_add_up() -> None:
    limiter = CommandLimiter(rate=10, burst=5, now=0.0)
    t = 0.0
    for _window in range(20):
        for _ in range(20):  # 20 commands at once: the bucket's tokens, then refusals
            verdict = limiter.check(t)
            if verdict != ADMIT:
                break
        for _ in range(9):
            assert limiter.check(t) > 0  # more refused, within the rule
        t += 1.0  # then it waits: the window closes and the bucket refills
    assert limiter.check(t) == ADMIT


def test_bucket_burst_of_a_rate_only_limit() -> None:
    assert bucket_burst(0.5) == 1
    assert bucket_burst(1) == 1
    assert bucket_burst(2.5) == 3
    assert bucket_burst(100) == 100
