"""A file written and hashed by a helper thread, so that the thread producing the bytes (the
results check, which holds the GIL) need not wait for the disk or for sha256 (both release
the GIL: on a second core they cost the producer nothing).

Bounded: at most QUEUE_BLOCKS blocks wait, and `put()` blocks beyond. The blocks are
written and hashed in order; an error of the helper (ENOSPC, EIO) is raised by the next
`put()` or by `close()`.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from typing import BinaryIO

QUEUE_BLOCKS = 16  # blocks of ~256 KiB waiting at most: a few MiB
WRITEBACK_BYTES = 8 << 20  # the written bytes are handed to writeback this often

_END = None


class WriteBehind:
    """`put()` blocks of bytes (immutable: `bytes`, or a memoryview of `bytes`); they are
    written to `out` and hashed in a helper thread. `close()` waits for all of them."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue(QUEUE_BLOCKS)
        self._error: BaseException | None = None
        self._written = self._flushed = 0
        self._thread: threading.Thread | None = threading.Thread(
            target=self._run, name="results-writer", daemon=True)
        self._thread.start()

    def put(self, data: bytes | memoryview) -> None:
        if self._error is not None:
            raise self._error
        if self._thread is None:
            raise ValueError("put() after close()")
        self._queue.put(data)

    def close(self) -> None:
        """Wait until every block is written and hashed; raise the helper's error if any.
        Idempotent."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_END)
            thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (data := self._queue.get()) is not _END:
            if self._error is not None:
                continue  # drained, so that put() never blocks on a dead helper
            try:
                self.out.write(data)
                self.hash.update(data)
                self._written += len(data)
                if self._written - self._flushed >= WRITEBACK_BYTES:
                    self._start_writeback()
            except BaseException as exc:  # handed to the producer
                self._error = exc

    def _start_writeback(self) -> None:
        """Have the kernel start writing what is written so far (without waiting), so the
        final fsync finds little left to do instead of a whole file's worth."""
        self.out.flush()
        if hasattr(os, "posix_fadvise"):
            # DONTNEED starts writeback of dirty pages (and drops clean ones: the results are
            # delivered by a hard link and counted here, not read again).
            os.posix_fadvise(self.out.fileno(), self._flushed, self._written - self._flushed,
                             os.POSIX_FADV_DONTNEED)
        self._flushed = self._written
