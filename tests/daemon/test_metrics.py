"""The /metrics names and values an operator's Prometheus relies on: a live scrape passes
`promtool check metrics` with no lint output, the shipped alert rules pass `promtool check
rules` and their `promtool test rules` unit tests, and the fed counters read what happened."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from clocks import FakeClock
from daemon_helpers import drained, drop, load, make_ids, outcome, running_service, wait_for
from daemon_helpers import write_config as write_test_config
from pg_server import PgServer
from prometheus_client.parser import text_string_to_metric_families

from orchestrator import __version__
from orchestrator.config import Config
from orchestrator.core.ratelimit import RateLimit
from orchestrator.daemon.metrics import Deadline, LiveSources, Metrics
from orchestrator.daemon.service import Service
from orchestrator.remote.storage import log_request
from orchestrator.sandbox import Sandbox

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
P = "compliance_orchestrator_"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool not found (Debian: apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}: CI must check the metrics and alert rules")
        pytest.skip(message)
    return found


def run_promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> (
    subprocess.CompletedProcess[str]
):
    return subprocess.run([promtool(), *args], input=stdin, capture_output=True, text=True,
                          cwd=cwd, timeout=60, check=False)


def health_config(tmp_path: Path, base_url: str) -> Config:
    path = write_test_config(tmp_path, base_url)
    path.write_text(path.read_text() + '\n[health]\nenabled = true\nhost = "127.0.0.1"\nport = 0\n')
    return load(path)


async def scrape(service: Service) -> str:
    assert service.health_port is not None
    url = f"http://127.0.0.1:{service.health_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        return await resp.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict[Any, float], name: str, **labels: str) -> float | None:
    return found.get((P + name, tuple(sorted(labels.items()))))


async def test_a_live_scrape_after_a_job_passes_promtool_and_reads_what_happened(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    promtool()  # skip before starting anything
    config = health_config(tmp_path, sandbox.base_url)
    started = time.time()
    async with running_service(config) as service:
        drop(tmp_path, "tweets", "ids.txt", make_ids(5, 100))
        drop(tmp_path, "tweets", "words.txt", ["not an id"])  # rejected at intake
        (tmp_path / "inbox" / "stray.txt").write_text("1\n")  # outside a type folder
        await drained(service)
        assert outcome(tmp_path, "tweets", "ids.txt") == "delivered"
        assert outcome(tmp_path, "tweets", "words.txt") == "rejected"
        await wait_for(lambda: (tmp_path / "outbox" / "rejected" / "stray.txt").exists(),
                       what="the stray entry rejected")
        with anyio.fail_after(10):  # the counters follow the batch's cleanup
            while value(samples(text := await scrape(service)), "batches_finished_total",
                        job_type="tweets", outcome="done") != 1:
                await anyio.sleep(0.05)
    checked = run_promtool("check", "metrics", stdin=text)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")
    found = samples(text)
    assert not [name for name, _ in found if name.endswith("_created")]
    assert value(found, "build_info", version=__version__) == 1
    assert value(found, "inputs_finished_total", job_type="tweets", outcome="delivered",
                 reason="none") == 1
    delivered_at = value(found, "last_delivery_timestamp_seconds")
    assert delivered_at is not None and started <= delivered_at <= time.time()
    error_json = tmp_path / "outbox" / "rejected" / "words.txt.error.json"
    words = json.loads(error_json.read_text())["reason"]
    assert value(found, "inputs_finished_total", job_type="tweets", outcome="rejected",
                 reason=words) == 1
    assert value(found, "inputs_finished_total", job_type="none", outcome="rejected",
                 reason="not_in_type_folder") == 1
    # One PUT of the body, one GET of the results: HTTP requests, by status.
    assert value(found, "storage_requests_total", operation="upload", status="200") == 1
    assert value(found, "storage_requests_total", operation="download", status="200") == 1
    assert value(found, "auth_paused") == 0
    assert value(found, "oldest_queued_input_age_seconds") == 0
    limit = value(found, "rate_limit_limit", endpoint="create")
    remaining = value(found, "rate_limit_remaining", endpoint="create")
    assert limit is not None and remaining is not None and 0 <= remaining < limit


async def test_a_resumable_upload_counts_every_chunk_request(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    path = write_test_config(tmp_path, sandbox.base_url, resumable_threshold_bytes=0)
    path.write_text(path.read_text() + '\n[health]\nenabled = true\nhost = "127.0.0.1"\nport = 0\n')
    async with running_service(load(path)) as service:
        drop(tmp_path, "tweets", "big.txt", make_ids(6, 40_000))  # ~760 KB: 3 chunks of 256 KiB
        await drained(service)
        assert outcome(tmp_path, "tweets", "big.txt") == "delivered"
        found = samples(await scrape(service))
    uploads = {labels: count for (name, labels), count in found.items()
               if name == P + "storage_requests_total" and ("operation", "upload") in labels}
    # The session POST and a PUT per chunk, each counted once, by its HTTP status.
    by_status = {dict(labels)["status"]: count for labels, count in uploads.items()}
    # The session POST (201), the chunk PUTs but the last (308: resume incomplete), the last
    # one (200): each HTTP request counted once.
    assert by_status.get("201") == 1 and by_status.get("200") == 1, by_status
    assert (by_status.get("308") or 0) >= 2, by_status


def test_live_values_read_at_scrape_time() -> None:
    metrics = Metrics()
    paused = [False]
    expires = datetime(2030, 1, 2, tzinfo=UTC)
    metrics.watch(LiveSources(
        rate_limits=lambda: {"get": RateLimit(limit=75, remaining=70, reset_at=0.0)},
        deadlines=lambda: [Deadline("users", "download", expires)],
        heartbeat_age_s=lambda: 1.5,
        auth_paused=lambda: paused[0],
    ))
    metrics.set_queue({"tweets": 2}, datetime.fromtimestamp(time.time() - 600, UTC))
    first = samples(metrics.render().decode())
    paused[0] = True
    metrics.set_queue({})
    second = samples(metrics.render().decode())
    assert value(first, "auth_paused") == 0 and value(second, "auth_paused") == 1
    assert 599 <= (value(first, "oldest_queued_input_age_seconds") or 0) < 660
    assert value(second, "oldest_queued_input_age_seconds") == 0
    assert value(first, "queue_length", job_type="tweets") == 2
    assert value(second, "queue_length", job_type="tweets") == 0
    assert value(first, "job_deadline_timestamp_seconds", job_type="users",
                 deadline="download") == expires.timestamp()
    assert value(first, "rate_limit_limit", endpoint="get") == 75


def test_storage_requests_count_each_http_request_inside_a_transfer() -> None:
    metrics = Metrics()
    clock = FakeClock()
    with metrics.storage_request("upload"):  # a resumable upload: POST, chunk PUTs, a retry
        for status in (201, 308, 308, None, 200):
            log_request(clock, "upload", "PUT", status, clock.monotonic())
    log_request(clock, "download", "GET", 200, clock.monotonic())  # outside: not counted
    found = samples(metrics.render().decode())
    assert value(found, "storage_requests_total", operation="upload", status="308") == 2
    assert value(found, "storage_requests_total", operation="upload", status="error") == 1
    assert value(found, "storage_requests_total", operation="upload", status="201") == 1
    assert value(found, "storage_requests_total", operation="download", status="200") is None


def test_retries_are_counted_by_stage_and_class() -> None:
    metrics = Metrics()
    metrics.retry("uploading", "Refused")
    metrics.retry("uploading", "Refused")
    found = samples(metrics.render().decode())
    assert value(found, "retries_total", stage="uploading", error_class="Refused") == 2


def test_alert_rules_are_clean_and_their_unit_tests_pass() -> None:
    checked = run_promtool("check", "rules", "alerts.yml", cwd=DEPLOY)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout and checked.stderr == ""
    tested = run_promtool("test", "rules", "alerts_test.yml", cwd=DEPLOY)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


# ---- the Grafana dashboard ----------------------------------------------------------------

DASHBOARD = DEPLOY.parent / "grafana" / "dashboard.json"
METRIC_NAME = re.compile(r"\b" + P + r"[a-zA-Z0-9_]+")


def exported_names(text: str) -> set[str]:
    """Every series name a query may use: samples, and the families (even without samples
    yet), with a histogram's _bucket/_sum/_count and a counter's _total."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(s.name for s in family.samples)
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        elif family.type == "counter":
            names.add(family.name + "_total")
        else:
            names.add(family.name)
    return names


def dashboard_queries() -> list[tuple[str, str]]:
    model = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in model["panels"]]
    assert len(ids) == len(set(ids)) and model["panels"]
    queries = []
    for panel in model["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], panel["title"]
            queries.append((panel["title"], target["expr"]))
    queries.append(("$instance", variables["instance"]["definition"]))
    return queries


# Families a daemon exports only on some store backends (the dashboard may query them).
BACKEND_SPECIFIC = {P + "standbys": "postgresql"}  # hosts to fail over to: a shared store


async def scrape_after_a_job(tmp_path: Path, base_url: str, extra: str = "") -> str:
    """A daemon with a hook (so hook series have samples) after one delivered file."""
    path = write_test_config(tmp_path, base_url)
    command = json.dumps([sys.executable, "-c", "pass"])
    text = path.read_text()
    if extra:  # a shared store: the spool beside the inbox
        (tmp_path / "spool").mkdir()
        text = text.replace("[paths]\n", '[paths]\nspool_dir = "spool"\n', 1)
    path.write_text(text + extra
                    + '\n[health]\nenabled = true\nhost = "127.0.0.1"\nport = 0\n'
                    + f'\n[[hooks]]\non = "delivered"\ncommand = {command}\n')
    async with running_service(load(path)) as service:
        drop(tmp_path, "users", "ids.txt", make_ids(6, 50))
        await drained(service)
        with anyio.fail_after(10):
            while value(samples(text := await scrape(service)), "hook_runs_total", kind="hook",
                        on="delivered", outcome="done") != 1:
                await anyio.sleep(0.05)
    return text


async def test_every_metric_the_dashboard_queries_is_exported(
    tmp_path: Path, sandbox: Sandbox, pg_server: PgServer
) -> None:
    """On SQLite every queried family but the backend-specific ones; on PostgreSQL (a real
    server, a leader with its lease) all of them, and that scrape passes promtool too."""
    used = {(title, name) for title, expr in dashboard_queries()
            for name in METRIC_NAME.findall(expr)}
    assert {name for _, name in used} >= {
        P + "queue_length", P + "stage_duration_seconds_bucket", P + "rate_limit_limit",
        P + "transfer_bytes_total", P + "hook_runs_total", P + "hook_runs_pending",
        P + "leader", P + "lease_age_seconds", P + "standbys"}
    (tmp_path / "sqlite").mkdir()
    on_sqlite = exported_names(await scrape_after_a_job(tmp_path / "sqlite", sandbox.base_url))
    assert sorted(name for _, name in used if name not in on_sqlite) == sorted(BACKEND_SPECIFIC)

    pg_server.psql("CREATE DATABASE co_dashboard")
    (tmp_path / "pg").mkdir()
    extra = (f'\n[store]\nbackend = "postgresql"\ndsn = "{pg_server.dsn("co_dashboard")}"\n'
             'lease_ttl_s = 6.0\n')
    text = await scrape_after_a_job(tmp_path / "pg", sandbox.base_url, extra)
    checked = run_promtool("check", "metrics", stdin=text)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")
    on_pg = exported_names(text)
    assert sorted((title, name) for title, name in used if name not in on_pg) == []
    found = samples(text)
    assert value(found, "leader") == 1 and value(found, "standbys") == 0
    assert (value(found, "lease_age_seconds") or 0) >= 0


def test_hook_outcomes_are_counted_and_pass_promtool() -> None:
    promtool()
    metrics = Metrics()
    metrics.hook_run("hook", "delivered", "retry")
    metrics.hook_run("hook", "delivered", "done")
    metrics.hook_run("webhook", "rejected", "failed")
    metrics.hook_runs_pending.set(3)
    text = metrics.render().decode()
    checked = run_promtool("check", "metrics", stdin=text)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")
    found = samples(text)
    assert value(found, "hook_runs_total", kind="hook", on="delivered", outcome="done") == 1
    assert value(found, "hook_runs_total", kind="webhook", on="rejected", outcome="failed") == 1
    assert value(found, "hook_runs_pending") == 3
