"""Webhooks: a signed JSON POST per run (daemon/hooks.py decides when).

Body: {"event", "idempotency_key", "input", "job_type", "paths": {...}, "document": the
manifest (delivered) or error record (rejected), "reason" (paused)}. Headers:
X-Compliance-Signature `t=<unix>,v1=<hex HMAC-SHA256 over "<t>.<body>">`, X-Compliance-Event,
X-Compliance-Idempotency-Key. The secret is read for each run (a rotated file is picked up)
from secret_file or $CREDENTIALS_DIRECTORY/<secret_credential>, and never logged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from orchestrator.clock import Clock
from orchestrator.config import WebhookConfig
from orchestrator.core.hooks import (
    EVENT_HEADER,
    KEY_HEADER,
    SIGNATURE_HEADER,
    sign,
    webhook_verdict,
)
from orchestrator.redact import redact_text, redact_url
from orchestrator.remote.http import read_limited
from orchestrator.store.hookruns import HookRun

MAX_DOCUMENT_BYTES = 1 << 20  # a manifest with many bad lines is still sent whole up to this


class SecretUnavailable(OSError):
    """The webhook's secret file or credential cannot be read (retried like an outage)."""


def read_secret(hook: WebhookConfig, environ: Mapping[str, str] = os.environ) -> bytes:
    if hook.secret_credential:
        folder = environ.get("CREDENTIALS_DIRECTORY")
        if not folder:
            raise SecretUnavailable(f"credential {hook.secret_credential!r}: "
                                    "$CREDENTIALS_DIRECTORY is not set")
        path = Path(folder) / hook.secret_credential
    else:
        assert hook.secret_file is not None
        path = hook.secret_file
    try:
        secret = path.read_bytes().strip()
    except OSError as error:
        raise SecretUnavailable(f"cannot read the webhook secret {path}: "
                                f"{error.strerror}") from None
    if not secret:
        raise SecretUnavailable(f"the webhook secret {path} is empty")
    return secret


def _document(path: object) -> Any:
    if not isinstance(path, Path):
        return None
    try:
        if path.stat().st_size > MAX_DOCUMENT_BYTES:
            return {"too_large": True, "bytes": path.stat().st_size}
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def webhook_body(facts: Mapping[str, Any]) -> bytes:
    paths = {name: str(facts[name]) for name in ("results", "manifest", "error")
             if facts.get(name) is not None}
    document = _document(facts.get("manifest") or facts.get("error"))
    body = {
        "event": facts["event"], "idempotency_key": facts["idempotency_key"],
        "attempt": facts.get("attempt"), "job_type": facts.get("job_type"),
        "input": facts.get("input"), "input_id": facts.get("input_id"),
        "batch_key": facts.get("batch_key"), "submitted": facts.get("submitted"),
        "affected": facts.get("affected"), "reason": facts.get("reason"),
        "paths": paths, "document": document,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


async def post_webhook(session: aiohttp.ClientSession, hook: WebhookConfig, run: HookRun,
                       facts: Mapping[str, Any], clock: Clock) -> tuple[str, str | None]:
    """('done' | 'retry' | 'failed', what went wrong, redacted)."""
    secret = read_secret(hook)
    body = webhook_body(facts)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, int(clock.now().timestamp()), body),
        EVENT_HEADER: run.event,
        KEY_HEADER: run.key,
        "User-Agent": "compliance-orchestrator-webhook",
    }
    where = redact_url(hook.url)
    try:
        async with session.post(hook.url, data=body, headers=headers, allow_redirects=False,
                                timeout=aiohttp.ClientTimeout(total=hook.timeout_s)) as resp:
            status = resp.status
            answer = await read_limited(resp, 512)
    except TimeoutError:
        return "retry", f"{where}: no answer within {hook.timeout_s:g} s"
    except aiohttp.ClientError as error:
        return "retry", redact_text(f"{where}: {type(error).__name__}: {error}",
                                    (secret.decode("utf-8", "replace"),))
    verdict = webhook_verdict(status)
    if verdict == "done":
        return verdict, None
    text = redact_text(answer.decode("utf-8", "replace"), (secret.decode("utf-8", "replace"),))
    return verdict, f"{where}: HTTP {status}: {text[:200]}"
