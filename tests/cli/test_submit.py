"""`submit FILE --type T [--dataset NAME]`: the file reaches the inbox whole under its final
name (never replacing one waiting there), a dataset gets `NAME@<time>`, and a missing or
read-only inbox is a clear non-zero exit; the running daemon then delivers what was submitted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from admin_helpers import arun_cli, offline_config, run_cli
from daemon_helpers import drained, load, make_ids, read_results, running_service
from resilience_helpers import write_config_ex

from orchestrator.core.datasets import dataset_of
from orchestrator.sandbox import Sandbox


def inbox(tmp_path: Path, job_type: str = "tweets") -> Path:
    folder = tmp_path / "inbox" / job_type
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_submit_copies_the_file_under_its_name_and_leaves_no_temp(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    folder = inbox(tmp_path)
    src = tmp_path / "export.txt"
    src.write_bytes(b"1\n2\n3\n")
    run = run_cli(capsys, "submit", src, "--type", "tweets", "--config", config, "--json")
    assert run.code == 0, run.err
    assert run.json["path"] == str(folder / "export.txt")
    assert run.json["bytes"] == 6
    assert sorted(p.name for p in folder.iterdir()) == ["export.txt"]  # no dotfile left
    assert (folder / "export.txt").read_bytes() == src.read_bytes()
    assert src.exists()  # a copy: the user's file stays


def test_submit_never_replaces_a_file_waiting_in_the_inbox(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    folder = inbox(tmp_path)
    (folder / "export.txt").write_bytes(b"9\n")
    src = tmp_path / "export.txt"
    src.write_bytes(b"1\n")
    run = run_cli(capsys, "submit", src, "--type", "tweets", "--config", config)
    assert run.code == 1
    assert "already exists and is waiting to be claimed" in run.err
    assert (folder / "export.txt").read_bytes() == b"9\n"
    assert sorted(p.name for p in folder.iterdir()) == ["export.txt"]


def test_submit_as_a_dataset_names_it_and_never_collides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    folder = inbox(tmp_path, "users")
    src = tmp_path / "accounts.csv"
    src.write_bytes(b"user_id\n12\n")
    names = []
    for _ in range(3):  # within one second: the same stamp, so -2, -3
        run = run_cli(capsys, "submit", src, "--type", "users", "--dataset", "weekly-users",
                      "--config", config, "--json")
        assert run.code == 0, run.err
        names.append(run.json["name"])
    assert len(set(names)) == 3
    for name in names:
        assert dataset_of(name) == "weekly-users"
        assert name.endswith(".csv")
        assert (folder / name).read_bytes() == b"user_id\n12\n"


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--dataset", "../etc"], "expected 1-64 letters", 2),
        (["--dataset", "x" * 65], "expected 1-64 letters", 2),
    ],
)
def test_submit_refuses_bad_dataset_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str, code: int
) -> None:
    config = offline_config(tmp_path)
    inbox(tmp_path)
    src = tmp_path / "a.txt"
    src.write_bytes(b"1\n")
    run = run_cli(capsys, "submit", src, "--type", "tweets", *args, "--config", config)
    assert run.code == code
    assert message in run.err


def test_submit_says_why_when_the_inbox_or_file_is_unusable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    src = tmp_path / "a.txt"
    src.write_bytes(b"1\n")
    run = run_cli(capsys, "submit", src, "--type", "tweets", "--config", config)
    assert run.code == 1
    assert f"the inbox folder {tmp_path / 'inbox' / 'tweets'} does not exist" in run.err
    assert not (tmp_path / "inbox").exists()  # never created by submit

    run = run_cli(capsys, "submit", tmp_path / "missing.txt", "--type", "tweets",
                  "--config", config)
    assert run.code == 2
    assert "missing.txt: no such file" in run.err

    folder = inbox(tmp_path)
    if os.geteuid() != 0:  # root writes anywhere: the permission check cannot be shown
        folder.chmod(0o555)
        try:
            run = run_cli(capsys, "submit", src, "--type", "tweets", "--config", config)
            assert run.code == 1
            assert "is not writable" in run.err
        finally:
            folder.chmod(0o755)
    run = run_cli(capsys, "submit", tmp_path / "a.txt.part", "--type", "tweets",
                  "--config", config)
    assert run.code == 2


async def test_a_submitted_file_is_delivered_by_the_running_daemon(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config_ex(tmp_path, sandbox.base_url)
    lines = make_ids(4242, 25)
    src = tmp_path / "weekly.txt"
    src.write_text("".join(f"{i}\n" for i in lines))
    inbox(tmp_path)
    async with running_service(load(config_path)) as service:
        run = await arun_cli(capsys, "submit", src, "--type", "tweets", "--dataset", "archive",
                             "--config", config_path, "--json")
        assert run.code == 0, run.err
        await drained(service)
    stem = Path(run.json["name"]).stem
    assert read_results(tmp_path, "tweets", stem) == sandbox.expected_results("tweets", lines)
