"""`requeue FILE`: a rejected file goes back into the inbox, whole, under a free name."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from admin_helpers import (
    arun_cli,
    assert_no_secrets,
    db,
    layout_of,
    make_batch,
    offline_config,
    run_cli,
)

from orchestrator.files.rejected import reject_file
from orchestrator.logs import reset_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    reset_logging()


def reject(workdir: Path, name: str, content: bytes, **record: object) -> Path:
    """Put a file into outbox/rejected/ the way the daemon does (real reject_file)."""
    spool = workdir / "state" / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    src = spool / f"claimed-{uuid.uuid4().hex}"
    src.write_bytes(content)
    document = {"file": name, "reason": "invalid_lines", "stage": "validation",
                "message": f"{name}: line 3 is not an ID", **record}
    return reject_file(src, workdir / "outbox" / "rejected", name, document)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_requeue_moves_the_file_into_its_type_folder_and_drops_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    reject(tmp_path, "typo.txt", b"123\n456\n", job_type="tweets", input_id=4)
    run = run_cli(capsys, "requeue", "typo.txt", "--config", config)
    assert run.code == 0, run.err
    assert "requeued typo.txt" in run.out and "inbox/tweets/typo.txt" in run.out
    assert "line 3 is not an ID" in run.out  # why it had been rejected
    assert "daemon is not running" in run.out
    assert (tmp_path / "inbox/tweets/typo.txt").read_bytes() == b"123\n456\n"
    assert listing(tmp_path / "outbox/rejected") == []
    assert listing(tmp_path / "inbox/tweets") == ["typo.txt"]  # nothing partial, no temp


def test_requeue_json_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = offline_config(tmp_path)
    reject(tmp_path, "u.txt", b"1\n", job_type="users", input_id=9, reason="empty")
    run = run_cli(capsys, "requeue", "u.txt", "--config", config, "--json")
    assert run.code == 0, run.err
    result = run.json
    assert result["ok"] is True
    assert result["file"] == "u.txt" and result["job_type"] == "users"
    assert result["from"] == str(tmp_path / "outbox/rejected/u.txt")
    assert result["to"] == str(tmp_path / "inbox/users/u.txt")
    assert result["previous_error"]["reason"] == "empty"
    assert result["daemon_pid"] is None and result["warnings"] == []


def test_a_taken_inbox_name_is_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    reject(tmp_path, "daily.txt", b"1\n", job_type="tweets")
    waiting = tmp_path / "inbox/tweets/daily.txt"
    waiting.parent.mkdir(parents=True)
    waiting.write_bytes(b"someone else's\n")
    run = run_cli(capsys, "requeue", "daily.txt", "--config", config, "--json")
    assert run.code == 0, run.err
    assert run.json["to"].endswith("inbox/tweets/daily (2).txt")
    assert waiting.read_bytes() == b"someone else's\n"
    assert (tmp_path / "inbox/tweets/daily (2).txt").read_bytes() == b"1\n"


def test_a_renamed_rejection_goes_back_under_its_original_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    reject(tmp_path, "same.txt", b"first\n", job_type="tweets")
    second = reject(tmp_path, "same.txt", b"second\n", job_type="users")
    assert second.name == "same (2).txt"
    # A path to the file works as well as its name; so does the record's name.
    run = run_cli(capsys, "requeue", f"{second}.error.json", "--config", config)
    assert run.code == 0, run.err
    assert (tmp_path / "inbox/users/same.txt").read_bytes() == b"second\n"
    assert listing(tmp_path / "outbox/rejected") == ["same.txt", "same.txt.error.json"]


def test_without_a_recorded_type_it_asks_for_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    reject(tmp_path, "stray.txt", b"7\n", job_type=None)  # e.g. dropped in the inbox root
    run = run_cli(capsys, "requeue", "stray.txt", "--config", config)
    assert run.code == 2
    assert "--type" in run.err and run.out == ""
    assert listing(tmp_path / "outbox/rejected") == ["stray.txt", "stray.txt.error.json"]
    run = run_cli(capsys, "requeue", "stray.txt", "--type", "users", "--config", config)
    assert run.code == 0, run.err
    assert (tmp_path / "inbox/users/stray.txt").read_bytes() == b"7\n"


def test_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = offline_config(tmp_path)
    (tmp_path / "outbox/rejected").mkdir(parents=True)
    run = run_cli(capsys, "requeue", "nope.txt", "--config", config)
    assert run.code == 1
    assert "nope.txt: no such file in" in run.err and "outbox/rejected" in run.err

    run = run_cli(capsys, "requeue", "nope.txt", "--config", config, "--json")
    assert run.code == 1
    assert run.json == {"ok": False, "exit_code": 1, "error": run.json["error"]}
    assert "no such file" in run.json["error"]

    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("1\n")
    run = run_cli(capsys, "requeue", elsewhere, "--config", config)
    assert run.code == 2 and "must be in" in run.err
    assert elsewhere.exists()

    folder = tmp_path / "spool-dir"
    folder.mkdir()
    (folder / "x").write_text("1\n")
    reject_file(folder, tmp_path / "outbox/rejected", "a folder",
                {"reason": "not_a_regular_file", "job_type": "tweets"})
    run = run_cli(capsys, "requeue", "a folder", "--config", config)
    assert run.code == 1 and "not a regular file" in run.err
    assert (tmp_path / "outbox/rejected/a folder/x").exists()

    run = run_cli(capsys, "requeue", "x.txt", "--config", tmp_path / "missing.toml")
    assert run.code == 2 and "config file not found" in run.err

    with pytest.raises(SystemExit) as usage:  # argparse: usage error
        run_cli(capsys, "requeue", "x.txt", "--type", "spaces", "--config", config)
    assert usage.value.code == 2


def test_requeue_is_noted_in_the_event_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    assert run_cli(capsys, "migrate", "--config", config).code == 0
    reject(tmp_path, "noted.txt", b"1\n", job_type="tweets", input_id=12,
           message="see https://storage.example/o?X-Goog-Signature=deadbeef")
    run = run_cli(capsys, "requeue", "noted.txt", "--config", config, "--json")
    assert run.code == 0, run.err
    assert_no_secrets(run.out, run.err)
    events = db(tmp_path, "SELECT kind, input_id, detail_json FROM events")
    assert [(e["kind"], e["input_id"]) for e in events] == [("operator.requeue", 12)]
    assert "Signature=deadbeef" not in events[0]["detail_json"]


@pytest.fixture
def other_filesystem(tmp_path: Path) -> Iterator[Path]:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's tmp_path")
    folder = shm / f"co-test-{uuid.uuid4().hex}"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def outbox_elsewhere(workdir: Path, outbox: Path) -> Path:
    """An offline config whose outbox (and so outbox/rejected/) is `outbox`."""
    config = offline_config(workdir)
    text = config.read_text().replace('outbox = "outbox"', f'outbox = "{outbox}"')
    config.write_text(text)
    return config


def test_across_filesystems_the_copy_appears_whole_and_keeps_its_times(
    tmp_path: Path, other_filesystem: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = outbox_elsewhere(tmp_path, other_filesystem)
    layout = layout_of(tmp_path)
    rejected_dir = other_filesystem / "rejected"
    src = tmp_path / "claimed"
    src.write_bytes(b"42\n" * 1000)
    src.chmod(0o640)
    os.utime(src, (1_700_000_000, 1_700_000_000))
    reject_file(src, rejected_dir, "far.txt", {"job_type": "tweets", "reason": "gave_up"})
    run = run_cli(capsys, "requeue", "far.txt", "--config", config)
    assert run.code == 0, run.err
    dest = layout.inbox / "tweets" / "far.txt"
    assert dest.read_bytes() == b"42\n" * 1000
    assert dest.stat().st_mtime == 1_700_000_000 and dest.stat().st_mode & 0o777 == 0o640
    assert listing(layout.inbox / "tweets") == ["far.txt"]  # the .requeue-* copy is gone
    assert listing(rejected_dir) == []


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs (not even the CLI's error handling)."""


def _crash_before_unlinking(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """kill -9 right after the file was placed in the inbox: removing it from `folder`
    (outbox/rejected/) never happens."""
    real_unlink = Path.unlink

    def crash(self: Path, missing_ok: bool = False) -> None:
        if self.parent == folder and not self.name.endswith(".error.json"):
            raise Killed
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", crash)


@pytest.mark.parametrize("claimed_meanwhile", [False, True])
def test_a_requeue_killed_between_link_and_unlink_is_finished_not_copied_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    claimed_meanwhile: bool,
) -> None:
    config = offline_config(tmp_path)
    layout = layout_of(tmp_path)
    reject(tmp_path, "twice.txt", b"7\n8\n", job_type="tweets")
    with monkeypatch.context() as patch:
        _crash_before_unlinking(patch, layout.rejected)
        with pytest.raises(Killed):
            run_cli(capsys, "requeue", "twice.txt", "--config", config)
    assert listing(layout.inbox / "tweets") == ["twice.txt"]  # placed ...
    assert "twice.txt" in listing(layout.rejected)  # ... and still here: one inode, 2 names
    if claimed_meanwhile:  # the daemon renamed it into the spool before the rerun
        (layout.inbox / "tweets" / "twice.txt").rename(layout.spool / "0123.tweets")
    run = run_cli(capsys, "requeue", "twice.txt", "--config", config)
    assert run.code == 0, run.err
    expected = [] if claimed_meanwhile else ["twice.txt"]
    assert listing(layout.inbox / "tweets") == expected  # no `twice (2).txt`
    assert listing(layout.rejected) == []


def test_a_requeue_across_filesystems_killed_before_the_unlink_is_finished_once(
    tmp_path: Path, other_filesystem: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = outbox_elsewhere(tmp_path, other_filesystem)
    layout = layout_of(tmp_path)
    rejected_dir = other_filesystem / "rejected"
    src = tmp_path / "claimed"
    src.write_bytes(b"42\n" * 100)
    reject_file(src, rejected_dir, "far.txt", {"job_type": "tweets", "reason": "gave_up"})
    with monkeypatch.context() as patch:
        _crash_before_unlinking(patch, rejected_dir)
        with pytest.raises(Killed):
            run_cli(capsys, "requeue", "far.txt", "--config", config)
    inbox = layout.inbox / "tweets"
    assert "far.txt" in listing(inbox) and "far.txt" in listing(rejected_dir)
    run = run_cli(capsys, "requeue", "far.txt", "--config", config)
    assert run.code == 0, run.err
    assert [n for n in listing(inbox) if not n.startswith(".requeue-")] == ["far.txt"]
    assert listing(rejected_dir) == []


def test_a_different_file_of_the_same_size_is_no_reason_to_skip_a_requeue(
    tmp_path: Path, other_filesystem: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = outbox_elsewhere(tmp_path, other_filesystem)
    layout = layout_of(tmp_path)
    src = tmp_path / "claimed"
    src.write_bytes(b"1\n")
    os.utime(src, (1_700_000_000, 1_700_000_000))
    reject_file(src, other_filesystem / "rejected", "x.txt", {"job_type": "tweets"})
    other = layout.inbox / "tweets" / "x.txt"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"2\n")
    os.utime(other, (1_700_000_000, 1_700_000_000))
    run = run_cli(capsys, "requeue", "x.txt", "--config", config)
    assert run.code == 0, run.err
    assert listing(layout.inbox / "tweets") == ["x (2).txt", "x.txt"]
    assert (layout.inbox / "tweets" / "x (2).txt").read_bytes() == b"1\n"


def test_requeue_all_filters_by_reason_and_time_and_moves_each_safely(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    reject(tmp_path, "old.txt", b"1\n", job_type="tweets", reason="empty",
           rejected_at="2026-01-01T00:00:00.000Z")
    reject(tmp_path, "new.txt", b"2\n", job_type="users", reason="empty",
           rejected_at="2026-06-01T00:00:00.000Z")
    reject(tmp_path, "bad.txt", b"x\n", job_type="tweets", reason="invalid_lines",
           rejected_at="2026-06-01T00:00:00.000Z")
    (tmp_path / "outbox/rejected/stray.txt").write_bytes(b"no record: not ours to judge")
    run = run_cli(capsys, "requeue", "--all", "--reason", "empty", "--since",
                  "2026-03-01T00:00:00Z", "--config", config, "--json")
    assert run.code == 0, run.err
    assert [r["file"] for r in run.json["requeued"]] == ["new.txt"] and not run.json["failed"]
    assert listing(tmp_path / "inbox/users") == ["new.txt"]
    assert (tmp_path / "inbox/users/new.txt").read_bytes() == b"2\n"

    rest = run_cli(capsys, "requeue", "--all", "--config", config)
    assert rest.code == 0, rest.err
    assert rest.out.startswith("requeued 2 files")
    assert listing(tmp_path / "inbox/tweets") == ["bad.txt", "old.txt"]
    assert listing(tmp_path / "outbox/rejected") == ["stray.txt"]

    none = run_cli(capsys, "requeue", "--all", "--config", config, "--json")
    assert none.code == 0 and none.json["requeued"] == []


async def test_requeue_all_notes_each_file_in_the_event_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    await make_batch(tmp_path)  # a state database to note the requeues in
    reject(tmp_path, "a.txt", b"1\n", job_type="tweets", input_id=1)
    reject(tmp_path, "b.txt", b"2\n", job_type="tweets")
    run = await arun_cli(capsys, "requeue", "--all", "--config", config, "--json")
    assert run.code == 0 and run.json["warnings"] == [], run.out
    notes = db(tmp_path, "SELECT input_id, detail_json FROM events"
               " WHERE kind = 'operator.requeue' ORDER BY id")
    assert [n["input_id"] for n in notes] == [1, None]
    assert all('"all": true' in n["detail_json"] for n in notes)


def test_requeue_all_reports_a_file_it_cannot_move_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    reject(tmp_path, "fine.txt", b"1\n", job_type="tweets")
    reject(tmp_path, "typeless.txt", b"2\n")  # no job type in its record
    run = run_cli(capsys, "requeue", "--all", "--config", config, "--json")
    assert run.code == 1
    assert [r["file"] for r in run.json["requeued"]] == ["fine.txt"]
    assert [f["file"] for f in run.json["failed"]] == ["typeless.txt"]
    assert "typeless.txt" in run.err
    assert listing(tmp_path / "inbox/tweets") == ["fine.txt"]


@pytest.mark.parametrize("argv", [
    ["requeue"], ["requeue", "a.txt", "--all"], ["requeue", "a.txt", "--reason", "empty"],
])
def test_requeue_needs_exactly_one_of_file_and_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert run_cli(capsys, *argv, "--config", offline_config(tmp_path)).code == 2


def test_requeue_since_must_be_a_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run_cli(capsys, "requeue", "--all", "--since", "yesterday", "--config",
                offline_config(tmp_path))
    assert exited.value.code == 2
