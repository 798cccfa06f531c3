"""Where things live on disk: the inbox, the outbox and the daemon's state directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.model import JobType


@dataclass(frozen=True, slots=True)
class Layout:
    inbox: Path
    outbox: Path
    state_dir: Path

    @property
    def spool(self) -> Path:
        """Claimed inputs and work files, owned by the daemon until delivered."""
        return self.state_dir / "spool"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def backups(self) -> Path:
        return self.state_dir / "backups"

    @property
    def rejected(self) -> Path:
        return self.outbox / "rejected"

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
        keeps results in the spool until the outbox is fixed."""
        self.spool.mkdir(parents=True, exist_ok=True)
        problems = []
        for folder in (self.rejected, *(self.outbox_for(t) for t in JobType)):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                problems.append((folder, error))
        return problems
