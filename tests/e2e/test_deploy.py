"""The systemd deployment files in deploy/.

An operator installs these as they are, so they are checked the way systemd itself reads them:
`systemd-analyze verify` and `systemd-analyze security --offline=yes` on the unit (exposure at
most 2.0), systemd-sysusers and systemd-tmpfiles on the snippets, and the files must agree with
each other and with the config the daemon loads. The systemd checks skip only where the
systemd tool they run is not installed.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.config import load_config
from orchestrator.core.model import JobType
from orchestrator.credentials import CREDENTIAL_NAME

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "compliance-orchestrator.service"
SYSUSERS = DEPLOY / "compliance-orchestrator.sysusers"
TMPFILES = DEPLOY / "compliance-orchestrator.tmpfiles"
CONFIG = DEPLOY / "config.toml"
INSTALL = DEPLOY / "INSTALL.md"

UNIT_NAME = UNIT.name
SERVICE_USER = "compliance-orchestrator"
PRODUCERS = "compliance-producers"
VENV_SCRIPT = "/opt/compliance-orchestrator/venv/bin/compliance-orchestrator"
ETC_CONFIG = "/etc/compliance-orchestrator/config.toml"
MAX_EXPOSURE = 2.0


def _tool(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        shutil.which(name) is None,
        reason=f"{name} is not installed (not a systemd host); this check needs systemd's own "
        "parser",
    )


needs_analyze = _tool("systemd-analyze")
needs_sysusers = _tool("systemd-sysusers")
needs_tmpfiles = _tool("systemd-tmpfiles")


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    # No colours or pager, so the output can be parsed.
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C.UTF-8"}
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, env=env, timeout=60, check=False
    )


# --- reading the files -------------------------------------------------------------------


def unit_settings(text: str) -> dict[str, list[tuple[str, str]]]:
    """Section -> [(key, value)] in order, the way systemd reads a unit: `#`/`;` comments,
    backslash continuations, repeated keys kept."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"setting outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(sections: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in sections.get(section, []) if k == key]


def one(sections: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    found = values(sections, section, key)
    assert len(found) == 1, f"[{section}] {key}= set {len(found)} times: {found}"
    return found[0]


def data_lines(path: Path) -> Iterator[list[str]]:
    """Fields of the non-comment lines of a sysusers.d/tmpfiles.d file (quotes respected)."""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            yield re.findall(r'"[^"]*"|\S+', line)


def sysusers_names() -> tuple[set[str], set[str]]:
    """(users, groups) the sysusers snippet creates; a `u` line also makes the group."""
    users: set[str] = set()
    groups: set[str] = set()
    for fields in data_lines(SYSUSERS):
        kind, name = fields[0], fields[1]
        assert kind in ("u", "g", "m"), f"unexpected sysusers line type {kind!r}"
        if kind == "u":
            users.add(name)
            groups.add(name)
        elif kind == "g":
            groups.add(name)
    return users, groups


def tmpfiles_entries() -> dict[str, tuple[int, str, str]]:
    """path -> (mode, user, group) of the folders the tmpfiles snippet creates."""
    entries: dict[str, tuple[int, str, str]] = {}
    for fields in data_lines(TMPFILES):
        assert len(fields) == 6, f"want Type Path Mode User Group Age: {fields}"
        kind, path, mode, user, group, age = fields
        assert kind == "d", f"{path}: only plain `d` folders are expected, got {kind!r}"
        assert re.fullmatch(r"[0-7]{3,4}", mode), f"{path}: mode {mode!r} is not octal"
        # "-": never cleaned. Any age would let `systemd-tmpfiles --clean` delete ID files
        # and results.
        assert age == "-", f"{path}: age {age!r} would make systemd-tmpfiles --clean delete files"
        assert path not in entries, f"{path} listed twice"
        entries[path] = (int(mode, 8), user, group)
    return entries


def verify_problems(result: subprocess.CompletedProcess[str], unit_file: Path) -> list[str]:
    """The lines of systemd-analyze output about our unit file.

    systemd-analyze reports unknown keys and unparsable values as "<file>:<line>: ...,
    ignoring." and still exits 0, so the exit code alone would hide real errors. Lines about
    other units (the host's targets in a container, missing man pages, ...) are not ours.
    """
    ours = (str(unit_file), unit_file.name)
    return [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if any(name in line for name in ours) and "Overall exposure level" not in line
    ]


def id_in(root: Path, database: str, name: str) -> int:
    """The number of user/group `name` in `root`/etc/passwd or /etc/group (root is 0)."""
    if name == "root":
        return 0
    for line in (root / "etc" / database).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise AssertionError(f"{name} is not in {database} under {root}")


@pytest.fixture
def verifiable_unit(tmp_path: Path) -> Path:
    """The unit as installed, except that ExecStart= points at an executable that exists here:
    `verify` rejects a unit whose program is missing, and /opt/... is only on a real host."""
    stub = tmp_path / "venv" / "bin" / "compliance-orchestrator"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text()
    assert text.count(f"ExecStart={VENV_SCRIPT} ") == 1
    copy = tmp_path / UNIT_NAME  # same name: verify derives the unit name from the file name
    copy.write_text(text.replace(f"ExecStart={VENV_SCRIPT} ", f"ExecStart={stub} "))
    return copy


# --- systemd's own checks -----------------------------------------------------------------


@needs_analyze
def test_unit_passes_systemd_analyze_verify(verifiable_unit: Path) -> None:
    result = run("systemd-analyze", "verify", "--man=no", "--recursive-errors=no",
                 verifiable_unit)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert verify_problems(result, verifiable_unit) == [], output


@needs_analyze
def test_verify_check_catches_a_typo_in_the_unit(verifiable_unit: Path) -> None:
    # The guard above is only worth something if a real mistake makes it fail.
    broken = verifiable_unit.read_text().replace("ProtectHome=yes", "ProtectHome=yess")
    verifiable_unit.write_text(broken.replace("NoNewPrivileges=yes", "NoNewPriviledges=yes"))
    result = run("systemd-analyze", "verify", "--man=no", "--recursive-errors=no",
                 verifiable_unit)
    problems = verify_problems(result, verifiable_unit)
    assert any("yess" in line for line in problems), problems
    assert any("NoNewPriviledges" in line for line in problems), problems


@needs_analyze
def test_unit_exposure_is_at_most_2(verifiable_unit: Path) -> None:
    result = run("systemd-analyze", "security", "--offline=yes", verifiable_unit)
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", output)
    assert match, f"no exposure level in the output:\n{output}"
    assert verify_problems(result, verifiable_unit) == [], output
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, (
        f"exposure {exposure} > {MAX_EXPOSURE}; the checks that cost points:\n"
        + "\n".join(line for line in output.splitlines() if line.startswith("✗"))
    )


@needs_sysusers
def test_sysusers_snippet_creates_the_user_and_groups(tmp_path: Path) -> None:
    # An empty --root, so the answer does not depend on what this machine already has.
    result = run("systemd-sysusers", "--dry-run", f"--root={tmp_path}", SYSUSERS)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"Creating user '{SERVICE_USER}'" in output, output
    assert f"Creating group '{SERVICE_USER}'" in output, output
    assert f"Creating group '{PRODUCERS}'" in output, output


@needs_sysusers
@needs_tmpfiles
def test_tmpfiles_snippet_creates_private_folders(tmp_path: Path) -> None:
    """Create the folders for real in a scratch root and look at what a producer, the daemon
    and everybody else get."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    snippet = TMPFILES
    as_root = os.geteuid() == 0
    if as_root:
        result = run("systemd-sysusers", f"--root={root}", SYSUSERS)
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        # Only root may give folders to other users: keep the modes, own them ourselves
        # ("-"), and leave the owners to test_deploy_files_agree_with_each_other.
        snippet = tmp_path / "owners-dropped.conf"
        snippet.write_text(re.sub(r"(?m)^(d\s+\S+\s+\S+)\s+\S+\s+\S+", r"\1 - -",
                                  TMPFILES.read_text()))
    result = run("systemd-tmpfiles", f"--root={root}", "--create", snippet)
    assert result.returncode == 0, result.stdout + result.stderr

    for path, (mode, user, group) in tmpfiles_entries().items():
        st = (root / path.lstrip("/")).stat()
        assert stat.S_ISDIR(st.st_mode), path
        assert stat.S_IMODE(st.st_mode) == mode, f"{path}: {oct(st.st_mode)} != {oct(mode)}"
        assert not st.st_mode & stat.S_IWOTH, f"{path} is world-writable"
        if as_root:
            assert st.st_uid == id_in(root, "passwd", user), f"{path}: owner is not {user}"
            assert st.st_gid == id_in(root, "group", group), f"{path}: group is not {group}"


# --- the files agree with each other and keep results private -----------------------------


def test_folder_modes_keep_results_private() -> None:
    entries = tmpfiles_entries()
    for path, (mode, _user, _group) in entries.items():
        assert not mode & 0o002, f"{path} would be world-writable ({oct(mode)})"
    outbox = [p for p in entries if p.startswith("/srv/compliance/outbox")]
    inbox = [p for p in entries if p.startswith("/srv/compliance/inbox")]
    assert outbox and inbox
    for path in outbox:
        mode, user, group = entries[path]
        assert mode & 0o007 == 0, f"{path}: results would be visible to everyone ({oct(mode)})"
        assert (user, group) == (SERVICE_USER, SERVICE_USER), path
    for path in inbox:
        mode, user, group = entries[path]
        # Producers write through the group; setgid keeps their files in it so the daemon
        # (a member through SupplementaryGroups=) can read them.
        assert mode == 0o2770, f"{path}: {oct(mode)}"
        assert (user, group) == (SERVICE_USER, PRODUCERS), path
        assert not mode & stat.S_ISVTX, f"{path}: sticky would stop the daemon moving files"


def test_deploy_files_agree_with_each_other() -> None:
    unit = unit_settings(UNIT.read_text())
    users, groups = sysusers_names()
    entries = tmpfiles_entries()
    config = load_config(CONFIG)  # the production config is valid for the real loader

    # Identities: the unit runs as the user the sysusers snippet creates; folders are owned
    # by users and groups that exist.
    assert one(unit, "Service", "User") in users
    assert one(unit, "Service", "Group") in groups
    for group in " ".join(values(unit, "Service", "SupplementaryGroups")).split():
        assert group in groups
    for path, (_mode, user, group) in entries.items():
        assert user in users | {"root"}, f"{path}: unknown user {user}"
        assert group in groups | {"root"}, f"{path}: unknown group {group}"

    # The state directory the daemon is configured with is the one systemd makes writable.
    state_dirs = one(unit, "Service", "StateDirectory").split()
    assert [Path("/var/lib", d) for d in state_dirs] == [config.paths.state_dir]

    # Inbox and outbox: created by tmpfiles (with the type subfolders and rejected/), and
    # writable through ONE ReadWritePaths= entry: rename(2) fails between two mount points,
    # so two entries would break moving rejected input from the inbox to the outbox.
    rw_paths = [Path(p.lstrip("-+")) for v in values(unit, "Service", "ReadWritePaths")
                for p in v.split()]
    common = [p for p in rw_paths
              if config.paths.inbox.is_relative_to(p) and config.paths.outbox.is_relative_to(p)]
    assert common, f"inbox and outbox not under one ReadWritePaths= entry: {rw_paths}"
    for p in common:
        assert str(p) in entries, f"ReadWritePaths={p} is not created by the tmpfiles snippet"
    expected = [config.paths.inbox, config.paths.outbox, config.paths.outbox / "rejected"]
    for job_type in JobType:
        expected += [config.paths.inbox / str(job_type), config.paths.outbox / str(job_type)]
    for folder in expected:
        assert str(folder) in entries, f"{folder} is not created by the tmpfiles snippet"

    # The credential has the name the daemon looks up in $CREDENTIALS_DIRECTORY.
    (credential,) = values(unit, "Service", "LoadCredential")
    assert credential.split(":", 1)[0] == CREDENTIAL_NAME

    # Python itself is the main process (no shell in between) and reads the installed config.
    exec_start = one(unit, "Service", "ExecStart")
    assert exec_start.split() == [VENV_SCRIPT, "run", "--config", ETC_CONFIG]
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "NotifyAccess") == "main"


def test_install_guide_uses_the_files_under_their_names() -> None:
    guide = INSTALL.read_text()
    for needle in (
        "deploy/compliance-orchestrator.service",
        "/etc/systemd/system/compliance-orchestrator.service",
        "deploy/compliance-orchestrator.sysusers",
        "/etc/sysusers.d/compliance-orchestrator.conf",
        "deploy/compliance-orchestrator.tmpfiles",
        "/etc/tmpfiles.d/compliance-orchestrator.conf",
        "deploy/config.toml",
        ETC_CONFIG,
        VENV_SCRIPT,
        "install -m 600",
        "/etc/compliance-orchestrator/bearer-token",  # the LoadCredential= source
    ):
        assert needle in guide, f"INSTALL.md does not mention {needle}"
    (credential,) = values(unit_settings(UNIT.read_text()), "Service", "LoadCredential")
    assert credential.split(":", 1)[1] in guide


# --- MemoryDenyWriteExecute=yes -----------------------------------------------------------

# The seccomp rule systemd installs for MemoryDenyWriteExecute=yes: mmap() with both
# PROT_WRITE and PROT_EXEC, mprotect()/pkey_mprotect() adding PROT_EXEC and shmat(SHM_EXEC)
# fail with EPERM. Built here as classic BPF so the check needs no systemd and no libseccomp.
_MDWE_CHILD = r"""
import ctypes, platform, struct, sys

ARCHES = {  # AUDIT_ARCH, mmap, mprotect, pkey_mprotect, shmat
    "x86_64": (0xC000003E, 9, 10, 329, 30),
    "aarch64": (0xC00000B7, 222, 226, 288, 196),
}
audit, mmap_nr, mprotect_nr, pkey_nr, shmat_nr = ARCHES[platform.machine()]
LD, JEQ, JSET, AND, RET = 0x20, 0x15, 0x45, 0x54, 0x06
ARG2 = 16 + 2 * 8  # seccomp_data.args[2], low 32 bits (little endian)
program = [  # (label, code, k, jump-if-true label, jump-if-false label); jumps go forward
    ("", LD, 4, None, None),
    ("", JEQ, audit, None, "allow"),
    ("", LD, 0, None, None),
    ("", JEQ, mmap_nr, "mmap", None),
    ("", JEQ, mprotect_nr, "mprotect", None),
    ("", JEQ, pkey_nr, "mprotect", None),
    ("", JEQ, shmat_nr, "shmat", "allow"),
    ("mmap", LD, ARG2, None, None),
    ("", AND, 0x6, None, None),
    ("", JEQ, 0x6, "deny", "allow"),
    ("mprotect", LD, ARG2, None, None),
    ("", JSET, 0x4, "deny", "allow"),
    ("shmat", LD, ARG2, None, None),
    ("", JSET, 0o100000, "deny", "allow"),
    ("allow", RET, 0x7FFF0000, None, None),
    ("deny", RET, 0x00050000 | 1, None, None),
]
at = {label: i for i, (label, *_rest) in enumerate(program) if label}
jump = lambda i, label: 0 if label is None else at[label] - i - 1
raw = b"".join(struct.pack("HBBI", code, jump(i, t), jump(i, f), k)
               for i, (_label, code, k, t, f) in enumerate(program))
buffer = ctypes.create_string_buffer(raw)

class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

fprog = SockFprog(len(program), ctypes.cast(buffer, ctypes.c_void_p))
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong,
                       ctypes.c_ulong]
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) or libc.prctl(
    PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0
):
    sys.exit(f"cannot install the seccomp filter: errno {ctypes.get_errno()}")

import mmap
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("the filter is not active: a writable+executable mapping was allowed")
except PermissionError:
    pass

# From here on, what the daemon does at run time, loaded only now (as under systemd).
import asyncio, hashlib, importlib, pkgutil, ssl, tempfile
from pathlib import Path

import orchestrator
for module in pkgutil.walk_packages(orchestrator.__path__, "orchestrator."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)

import aiohttp, aiohttp.web, aiosqlite, google_crc32c, watchfiles

ssl.create_default_context()
hashlib.sha256(b"x").hexdigest()
google_crc32c.value(b"x")
callback = ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7)  # libffi closure
assert callback() == 7

async def main() -> None:
    folder = Path(tempfile.mkdtemp())
    async with aiosqlite.connect(folder / "s.db") as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("CREATE TABLE t (x)")
        await db.execute("INSERT INTO t VALUES (json('{\"a\": 1}'))")
        await db.commit()
    app = aiohttp.web.Application()
    app.router.add_get("/", lambda request: aiohttp.web.Response(text="ok"))
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/") as response:
            assert await response.text() == "ok"
    await runner.cleanup()
    stop = asyncio.Event()
    async def touch() -> None:
        while not stop.is_set():
            (folder / "f").write_text("x")
            await asyncio.sleep(0.05)
    toucher = asyncio.create_task(touch())
    async for _changes in watchfiles.awatch(folder, rust_timeout=10_000):
        break
    stop.set()
    await toucher

asyncio.run(main())
print("ok")
"""


@pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"),
    reason="the seccomp filter equivalent to MemoryDenyWriteExecute= is written for "
    "Linux on x86_64 and aarch64",
)
def test_runtime_works_without_writable_executable_memory() -> None:
    """The unit sets MemoryDenyWriteExecute=yes: everything the daemon loads must work
    without writable+executable memory. A dependency that JITs would fail here first."""
    result = subprocess.run([sys.executable, "-c", _MDWE_CHILD], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", (
        result.stdout + result.stderr
    )



def test_stop_grace_fits_inside_the_units_stop_timeout() -> None:
    """systemd SIGKILLs after TimeoutStopSec; the daemon's own grace must end well before."""
    from orchestrator.config import load_config

    timeout = one(unit_settings(UNIT.read_text()), "Service", "TimeoutStopSec")
    assert timeout.endswith("s")
    grace = load_config(DEPLOY / "config.toml").service.stop_grace_s
    assert grace + 10 <= float(timeout[:-1])


def test_the_shipped_spool_sits_beside_the_inbox_so_claims_are_renames() -> None:
    """Under the shipped unit the state directory (/var/lib) is another mount than the inbox:
    a spool there makes every claim a copy (disk-full loops, blind to late writes)."""
    unit = unit_settings(UNIT.read_text())
    config = load_config(CONFIG)
    spool = config.paths.spool_dir
    assert spool is not None, "deploy/config.toml must set paths.spool_dir"
    assert not spool.is_relative_to(config.paths.state_dir)
    assert not spool.is_relative_to(config.paths.inbox)
    assert not spool.is_relative_to(config.paths.outbox)
    rw_paths = [Path(p.lstrip("-+")) for v in values(unit, "Service", "ReadWritePaths")
                for p in v.split()]
    # One entry holding inbox and spool: no mount point between them, rename(2) works.
    assert [p for p in rw_paths
            if spool.is_relative_to(p) and config.paths.inbox.is_relative_to(p)], rw_paths
    mode, user, group = tmpfiles_entries()[str(spool)]
    assert mode == 0o700 and (user, group) == (SERVICE_USER, SERVICE_USER)
