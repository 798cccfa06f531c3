"""Named datasets: the inbox naming convention that ties recurring checks of one dataset
together, so each delivery can be compared with the one before.

A file named `NAME@STAMP.ext` in an inbox type folder belongs to dataset NAME (`submit
--dataset NAME` writes such names; a producer may too). STAMP is anything that makes the
name unique (`submit` uses the UTC time, e.g. 20261202T120000Z); deliveries of one dataset
are compared in the order they were claimed, not by STAMP.
"""

from __future__ import annotations

import re
from datetime import datetime

NAME_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SEPARATOR = "@"


def valid_dataset_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def dataset_of(file_name: str) -> str | None:
    """The dataset a file name belongs to, or None for an ordinary input."""
    name, sep, rest = file_name.partition(SEPARATOR)
    if not sep or not rest or not valid_dataset_name(name):
        return None
    return name


def dataset_file_name(dataset: str, now: datetime, suffix: str, attempt: int = 0) -> str:
    """`NAME@20261202T120000Z.jsonl` (`-2`, `-3`... before the suffix when taken)."""
    if not valid_dataset_name(dataset):
        raise ValueError(f"dataset name {dataset!r}: expected {NAME_RULE}")
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    counter = f"-{attempt + 1}" if attempt else ""
    return f"{dataset}{SEPARATOR}{stamp}{counter}{suffix}"
