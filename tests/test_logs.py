"""The production log pipeline: JSON lines, redaction everywhere, journald priorities, levels."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.logs import add_secret, configure_logging, reset_logging, set_level
from orchestrator.redact import redact_text

TOKEN = "AAAAAAAAAAAAAAAAAAAAAMLheAAAAAAA0%2BuSeid%2BULvsea4JtiGRiSDSJSI%3DEUifiRBkKG5E2"
SIGNATURE = "5a6b3c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f"
SIGNED_URL = (
    "https://storage.googleapis.com/twttr-tweet-compliance/1447227761489620999/submission/"
    "1447227761489620999_1447227761489620999?X-Goog-Algorithm=GOOG4-RSA-SHA256"
    "&X-Goog-Credential=complianceapi-public-svc-acct%40twttr-compliance-public-prod.iam"
    f".gserviceaccount.com%2F20211010%2Fauto%2Fstorage%2Fgoog4_request&X-Goog-Expires=900"
    f"&X-Goog-SignedHeaders=content-type%3Bhost&X-Goog-Signature={SIGNATURE}"
)
LEAKS = (TOKEN, SIGNATURE, "X-Goog-Credential=complianceapi", "GOOG4-RSA-SHA256")

log = structlog.get_logger(__name__)


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    yield stream
    reset_logging()


@pytest.fixture(autouse=True)
def _no_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(stream)]


def assert_no_leak(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text


def log_everything_secret() -> None:
    """Secrets in values, nested structures, objects, exception messages and chained causes."""

    class Holder:
        def __str__(self) -> str:
            return f"Holder({SIGNED_URL})"

    log.info(
        "upload.started",
        file="ids.txt",
        upload_url=SIGNED_URL,
        note=f"PUT {SIGNED_URL} with Authorization: Bearer {TOKEN}",
        nested={"deeper": [{"url": SIGNED_URL}, f"token={TOKEN}"], "headers": {"Authorization": 1}},
        obj=Holder(),
        path=Path("/srv/inbox/ids.txt"),
        count=3,
    )
    try:
        try:
            raise ConnectionResetError(f"reset while reading {SIGNED_URL}")
        except ConnectionResetError as cause:
            raise RuntimeError(
                f"GET {SIGNED_URL} failed; request had Authorization: Bearer {TOKEN}"
            ) from cause
    except RuntimeError:
        log.exception("download.failed", job_id="b-1")


def test_json_lines_parse_and_nothing_secret_survives(out: io.StringIO) -> None:
    configure_logging("info", "json", stream=out, secrets=[TOKEN])
    log_everything_secret()
    text = out.getvalue()
    assert_no_leak(text)
    assert TOKEN not in text

    started, failed = records(out)
    assert started["event"] == "upload.started"
    assert started["level"] == "info"
    assert started["timestamp"].endswith("Z")
    assert started["file"] == "ids.txt"
    assert started["count"] == 3
    assert started["upload_url"] == "<redacted>"  # a secret-looking key is masked whole
    assert started["path"] == "/srv/inbox/ids.txt"
    assert "storage.googleapis.com" in started["nested"]["deeper"][0]["url"]  # host kept
    assert started["nested"]["headers"]["Authorization"] == 1  # numbers carry no secret

    assert failed["event"] == "download.failed"
    assert failed["level"] == "error"
    assert failed["job_id"] == "b-1"
    # The traceback is inside the JSON object (one journal entry), with both exceptions.
    types = [exc["exc_type"] for exc in failed["exception"]]
    assert types == ["RuntimeError", "ConnectionResetError"]
    assert (
        "failed; request had Authorization: Bearer <redacted>"
        in failed["exception"][0]["exc_value"]
    )


def test_console_format_is_redacted_too(out: io.StringIO) -> None:
    configure_logging("info", "console", stream=out, secrets=[TOKEN])
    log_everything_secret()
    text = out.getvalue()
    assert_no_leak(text)
    assert "upload.started" in text
    assert "Traceback" in text
    assert "RuntimeError" in text


def test_known_secret_is_redacted_even_without_a_pattern(out: io.StringIO) -> None:
    configure_logging("info", "json", stream=out, secrets=["plain-secret-value"])
    log.info("x.y", msg="value plain-secret-value inside")
    add_secret("late-secret-value")
    log.info("x.z", msg="now late-secret-value too")
    text = out.getvalue()
    assert "plain-secret-value" not in text
    assert "late-secret-value" not in text
    assert [r["msg"] for r in records(out)] == [
        "value <redacted> inside",
        "now <redacted> too",
    ]


def test_a_message_about_the_bearer_token_keeps_its_words() -> None:
    text = "X refused the bearer token: HTTP 401; replace the Bearer token and restart"
    assert redact_text(text) == text
    assert redact_text("Authorization: Bearer tokenABC123") == "Authorization: Bearer <redacted>"


TOKEN_CHARS = st.sampled_from(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789%._~+/=-"
)


@settings(max_examples=50, deadline=None)
@given(secret=st.text(TOKEN_CHARS, min_size=16, max_size=120), around=st.text(max_size=20))
def test_any_registered_secret_never_appears(secret: str, around: str) -> None:
    stream = io.StringIO()
    try:
        configure_logging("debug", "json", stream=stream, secrets=[secret])
        log.info("a.b", value=f"{around}{secret}{around}", items=[{"x": secret}], e=around)
        try:
            raise KeyError(f"{around}{secret}")
        except KeyError:
            log.exception("a.c")
    finally:
        reset_logging()
    assert secret not in stream.getvalue()
    for line in stream.getvalue().splitlines():
        json.loads(line)


def test_stdlib_loggers_share_the_stream_and_the_redaction(out: io.StringIO) -> None:
    configure_logging("info", "json", stream=out, secrets=[TOKEN])
    aiohttp_log = logging.getLogger("aiohttp.client")
    aiohttp_log.warning("retrying %s", SIGNED_URL)
    try:
        raise OSError(f"Bearer {TOKEN} rejected at {SIGNED_URL}")
    except OSError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    text = out.getvalue()
    assert_no_leak(text)
    warning, error = records(out)
    assert warning["logger"] == "aiohttp.client"
    assert warning["level"] == "warning"
    assert warning["event"].startswith("retrying https://storage.googleapis.com/")
    assert error["logger"] == "asyncio"
    assert error["level"] == "error"
    assert error["exception"][0]["exc_type"] == "OSError"


def test_chatty_libraries_only_from_warning(out: io.StringIO) -> None:
    configure_logging("debug", "json", stream=out)
    logging.getLogger("aiosqlite").info("executing")
    logging.getLogger("watchfiles.main").info("1 change detected")
    logging.getLogger("watchfiles.main").warning("watcher trouble")
    assert [r["event"] for r in records(out)] == ["watcher trouble"]


def test_level_filter_and_set_level(out: io.StringIO) -> None:
    configure_logging("info", "json", stream=out)
    bound = log.bind(job_id="b-7")  # bound before the change: must follow it too
    bound.debug("poll.tick")
    logging.getLogger("aiohttp.client").debug("stdlib debug")
    set_level("debug")
    bound.debug("poll.tick")
    logging.getLogger("aiohttp.client").debug("stdlib debug")
    set_level("error")
    bound.warning("job.retrying")
    bound.error("job.failed")
    assert [r["event"] for r in records(out)] == ["poll.tick", "stdlib debug", "job.failed"]


def test_reconfigure_moves_existing_loggers_to_the_new_stream(out: io.StringIO) -> None:
    first = io.StringIO()
    configure_logging("info", "json", stream=first)
    bound = log.bind(file="a.txt")
    bound.info("inbox.claimed")
    configure_logging("info", "json", stream=out)
    bound.info("inbox.claimed")
    log.info("inbox.claimed")
    assert len(lines(first)) == 1
    assert len(lines(out)) == 2


def test_capture_logs_still_works_after_configure(out: io.StringIO) -> None:
    configure_logging("info", "json", stream=out)
    with structlog.testing.capture_logs() as captured:
        log.info("job.created", x_job_id="123")
    assert captured == [{"event": "job.created", "x_job_id": "123", "log_level": "info"}]
    assert out.getvalue() == ""


def test_journald_priority_prefixes(out: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:123456")
    configure_logging("debug", "json", stream=out)
    log.debug("a.debug")
    log.info("a.info")
    log.warning("a.warning")
    log.error("a.error")
    log.critical("a.critical")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("a.exception")
    logging.getLogger("aiohttp.server").warning("stdlib warning")
    prefixes = [line[:3] for line in lines(out)]
    assert prefixes == ["<7>", "<6>", "<4>", "<3>", "<3>", "<3>", "<4>"]
    for line in lines(out):
        json.loads(line[3:])  # the rest is one JSON object


def test_no_prefix_when_stdout_is_not_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A child that inherited JOURNAL_STREAM but writes to a file or pipe must stay plain JSON.
    monkeypatch.setenv("JOURNAL_STREAM", "8:123456")
    with open(tmp_path / "log.jsonl", "w+", encoding="utf-8") as stream:
        try:
            configure_logging("info", "json", stream=stream)
            log.info("a.info")
        finally:
            reset_logging()
        stream.seek(0)
        assert json.loads(stream.read())["event"] == "a.info"


def test_prefix_when_the_file_is_the_journal_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(tmp_path / "journal", "w+", encoding="utf-8") as stream:
        st = Path(tmp_path / "journal").stat()
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        try:
            configure_logging("info", "json", stream=stream)
            log.info("a.info")
        finally:
            reset_logging()
        stream.seek(0)
        assert stream.read().startswith("<6>{")


def test_closed_stream_does_not_break_the_caller(out: io.StringIO) -> None:
    configure_logging("info", "json", stream=out)
    out.close()
    log.info("still.fine")  # must not raise


def test_bad_level_or_format_is_refused(out: io.StringIO) -> None:
    with pytest.raises(ValueError, match="verbose"):
        configure_logging("verbose", "json", stream=out)
    with pytest.raises(ValueError, match="xml"):
        configure_logging("info", "xml", stream=out)


def test_auto_format_is_json_when_not_a_tty(out: io.StringIO) -> None:
    configure_logging("info", "auto", stream=out)
    log.info("service.ready", queue=0)
    assert records(out) == [
        {
            "timestamp": records(out)[0]["timestamp"],
            "level": "info",
            "event": "service.ready",
            "queue": 0,
        }
    ]
    assert out.getvalue().startswith('{"timestamp": ')  # the lead keys come first
