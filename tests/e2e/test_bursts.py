"""Files that arrive together become one remote job (issue 11 part 4).

Before: the first file of a burst was queued while the others were still being claimed, and
its job was created at once: ten files dropped together made two jobs (1 + 9). Now the pack
waits for the claim pass and a quiet period (`jobs.pack_quiet_s`, bounded by pack_wait_s).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from daemon_helpers import drained, drop, load, make_ids, read_results, running_service
from resilience_helpers import write_config_ex

from orchestrator.sandbox import Sandbox


def creates(sandbox: Sandbox) -> int:
    return sum(1 for method, path, status in sandbox.request_log
               if method == "POST" and path.rstrip("/") == "/2/compliance/jobs"
               and status < 300)


@pytest.mark.parametrize("files", [10, 100])
async def test_files_dropped_at_once_share_exactly_one_job(
    tmp_path: Path, sandbox: Sandbox, files: int
) -> None:
    # The shipped quiet period (1 s) and a bound well above it.
    config = load(write_config_ex(tmp_path, sandbox.base_url, pack_wait_s=30.0,
                                  extra={"jobs": {"pack_quiet_s": 1.0}}))
    ids = {f"burst-{n:03}.txt": make_ids(7000 + n, 20) for n in range(files)}
    async with running_service(config) as service:
        for name, lines in ids.items():  # a producer writing a batch, as fast as it can
            drop(tmp_path, "tweets", name, lines)
            await anyio.sleep(0)  # with the daemon scanning and claiming beside it
        await drained(service)
    assert len(sandbox.jobs()) == 1
    assert creates(sandbox) == 1
    assert sandbox.jobs()[0]["uploaded_ids"] == 20 * files
    for name, lines in ids.items():
        assert read_results(tmp_path, "tweets", Path(name).stem) == (
            sandbox.expected_results("tweets", lines))


async def test_a_copy_without_part_names_is_one_job_too(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """`cp *.txt inbox/tweets/`: the files appear under their own names, written in place,
    and become stable one after another, so many scans each claim a few (with
    pack_quiet_s = 0 this very copy made 5 jobs): the quiet period bridges the passes."""
    config = load(write_config_ex(tmp_path, sandbox.base_url, min_age_s=0.3, pack_wait_s=30.0,
                                  extra={"jobs": {"pack_quiet_s": 1.0}}))
    folder = tmp_path / "inbox" / "tweets"
    folder.mkdir(parents=True)
    async with running_service(config) as service:
        for n in range(30):
            (folder / f"copy-{n:02}.txt").write_text(
                "".join(f"{i}\n" for i in make_ids(8000 + n, 15)))
            await anyio.sleep(0.05)  # a copy of 30 files over 1.5 s: many scans, many passes
        await drained(service)
    assert creates(sandbox) == 1
    assert sandbox.jobs()[0]["uploaded_ids"] == 30 * 15
