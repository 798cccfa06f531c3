"""Where things live on disk: the inbox, the outbox and the daemon's state directory.

Every name the daemon gives a file is spelled here: an input's spool files (`InputFiles`) and
a batch's work files (`BatchFiles`), so the writer, the reader and the spool sweep agree.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.core.model import JobType

if TYPE_CHECKING:
    from orchestrator.config import Config, StoreConfig


@dataclass(frozen=True, slots=True)
class InputFiles:
    """An input's own files in the spool, all named after its `<hex>.<type>` spool name."""

    spool: Path
    spool_name: str

    @staticmethod
    def new_name(job_type: JobType) -> str:
        """A fresh spool name for a claimed input: `<16 hex>.<type>`."""
        return f"{secrets.token_hex(8)}.{job_type}"

    @staticmethod
    def owner(file_name: str) -> str:
        """The spool name a spool file belongs to: `<hex>.<type>.part-2.ids` -> `<hex>.<type>`."""
        return ".".join(file_name.split(".")[:2])

    @property
    def claimed(self) -> Path:
        """The file as it was claimed from the inbox, untouched."""
        return self.spool / self.spool_name

    @property
    def ids(self) -> Path:
        """The validated, normalised IDs (InputFile.ids_name)."""
        return self.spool / f"{self.spool_name}.ids"

    @property
    def pack_ids(self) -> Path:
        """Upload body of a batch packing several inputs, named after its first one."""
        return self.spool / f"{self.spool_name}.pack.ids"

    def part_ids(self, part: int) -> Path:
        """Upload body of one part of an input too big for one job."""
        return self.spool / f"{self.spool_name}.part-{part}.ids"

    def part_results(self, part: int) -> Path:
        """Results of one part, kept until the whole input is delivered."""
        return self.spool / f"{self.spool_name}.part-{part}.results.jsonl"

    def parts(self) -> list[Path]:
        """Every part file of this input present in the spool."""
        return list(self.spool.glob(f"{self.spool_name}.part-*"))


@dataclass(frozen=True, slots=True)
class BatchFiles:
    """A batch's work files in the spool."""

    raw: Path  # the download as received
    results: Path  # normalised results
    report: Path  # counts + sha256 of the results

    @property
    def all(self) -> tuple[Path, Path, Path]:
        return (self.raw, self.results, self.report)


@dataclass(frozen=True, slots=True)
class Layout:
    inbox: Path
    outbox: Path
    state_dir: Path
    spool_dir: Path | None = None  # None: <state_dir>/spool
    # Where the state lives when it is not <state_dir>/state.db ([store], PostgreSQL).
    store: StoreConfig | None = None
    # This host's id when the store is shared (its daemon's lock is daemon.<host_id>.lock).
    host_id: str | None = None

    @classmethod
    def from_config(cls, config: Config) -> Layout:
        paths = config.paths
        host = config.service.host if config.store.shared else None
        return cls(paths.inbox, paths.outbox, paths.state_dir, paths.spool_dir, config.store,
                   host)

    @property
    def spool(self) -> Path:
        """Claimed inputs and work files, owned by the daemon until delivered (`paths.spool_dir`;
        on the inbox's filesystem a claim is a rename, elsewhere a copy)."""
        return self.spool_dir if self.spool_dir is not None else self.state_dir / "spool"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def backups(self) -> Path:
        return self.state_dir / "backups"

    @property
    def rejected(self) -> Path:
        return self.outbox / "rejected"

    def input_files(self, spool_name: str) -> InputFiles:
        return InputFiles(self.spool, spool_name)

    def batch_files(self, batch_id: int) -> BatchFiles:
        return BatchFiles(
            raw=self.spool / f"batch-{batch_id}.download",
            results=self.spool / f"batch-{batch_id}.results.jsonl",
            report=self.spool / f"batch-{batch_id}.results.json",
        )

    def inbox_for(self, job_type: JobType) -> Path:
        return self.inbox / str(job_type)

    def outbox_for(self, job_type: JobType) -> Path:
        return self.outbox / str(job_type)

    def results_path(self, job_type: JobType, out_stem: str) -> Path:
        return self.outbox_for(job_type) / f"{out_stem}.jsonl"

    def manifest_path(self, job_type: JobType, out_stem: str) -> Path:
        return self.outbox_for(job_type) / f"{out_stem}.manifest.json"

    def ensure(self) -> list[tuple[Path, OSError]]:
        """Create the folders. The spool is the daemon's own: failing there is fatal. An
        outbox folder that cannot be made is returned instead: the daemon starts anyway and
        keeps results in the spool until the outbox is fixed.

        The state directory, the spool and backups are private (0700) whatever the umask:
        state.db holds signed URLs and the spool holds producers' ID files."""
        for private in (self.state_dir, self.spool, self.backups):
            private.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = private.stat()
            if info.st_mode & 0o077 and info.st_uid == os.geteuid():
                private.chmod(0o700)  # made looser by an older version or by hand
        problems = []
        for folder in (self.rejected, *(self.outbox_for(t) for t in JobType)):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                problems.append((folder, error))
        return problems
