"""The pure hook policy: targets, keys, environment, signature, verdicts, backoff."""

from __future__ import annotations

import hashlib
import hmac
import random

from orchestrator.core.hooks import (
    HookTarget,
    RunState,
    after_failure,
    concerned,
    hook_environment,
    idempotency_key,
    sign,
    tail,
    verify,
    webhook_verdict,
)
from orchestrator.core.retry import RetryPolicy


def test_targets_are_filtered_by_event_and_job_type() -> None:
    every = HookTarget("hook", "hooks[0]", "delivered", "", 3)
    users = HookTarget("webhook", "webhooks[0]", "delivered", "users", 3)
    paused = HookTarget("hook", "hooks[1]", "paused", "tweets", 3)
    targets = (every, users, paused)
    assert concerned(targets, "delivered", "tweets") == [every]
    assert concerned(targets, "delivered", "users") == [every, users]
    assert concerned(targets, "rejected", "users") == []
    assert concerned(targets, "paused", None) == [paused]  # a pause is about no one type


def test_the_key_is_stable_per_input_and_delivery() -> None:
    assert idempotency_key("delivered", 7, "co-abc") == "7-co-abc"
    assert idempotency_key("delivered", 7, "co-abc") == idempotency_key("delivered", 7, "co-abc")
    assert idempotency_key("rejected", 7, "co-abc") == "7-rejected"
    assert idempotency_key("paused", None, None, 1700000000) == "paused-1700000000"


def test_the_environment_inherits_only_path_lang_tz() -> None:
    env = hook_environment(
        {"PATH": "/usr/bin", "LANG": "C.UTF-8", "X_BEARER_TOKEN": "secret", "HOME": "/root"},
        {"event": "delivered", "results": "/o/a.jsonl", "affected": 3, "reason": None},
    )
    assert env == {"PATH": "/usr/bin", "LANG": "C.UTF-8", "COMPLIANCE_EVENT": "delivered",
                   "COMPLIANCE_RESULTS": "/o/a.jsonl", "COMPLIANCE_AFFECTED": "3"}


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    header = sign(b"k", 1700000000, b'{"a":1}')
    expected = hmac.new(b"k", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify(b"k", header, b'{"a":1}', 1700000100)
    assert not verify(b"k", header, b'{"a":2}', 1700000100)  # body changed
    assert not verify(b"k", header, b'{"a":1}', 1700009999)  # replayed too late
    assert not verify(b"k", "garbage", b'{"a":1}', 1700000000)


def test_webhook_status_verdicts() -> None:
    assert [webhook_verdict(s) for s in (200, 204, 400, 404, 408, 429, 500, 503, 302)] == [
        "done", "done", "failed", "failed", "retry", "retry", "retry", "retry", "retry"]


def test_failures_back_off_then_fail_after_max_attempts() -> None:
    rng = random.Random(1)
    policy = RetryPolicy(backoff_initial_s=1.0, backoff_max_s=8.0)
    delays = [after_failure(n, 6, rng, policy).delay_s for n in range(1, 6)]
    assert all(0.5 <= d <= 8.0 for d in delays) and delays[-1] >= 4.0
    assert after_failure(6, 6, rng, policy).state is RunState.FAILED
    assert after_failure(1, 6, rng, policy, permanent=True).state is RunState.FAILED
    assert after_failure(1, 6, rng, policy).state is RunState.PENDING


def test_output_keeps_only_the_tail() -> None:
    assert tail(b"a" * 10, b"b" * 10, limit=5) == b"bbbbb"
