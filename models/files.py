"""Evidence files are written once: atomically (never seen half-written) and never replaced."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Literal

EVIDENCE_FILE_MODE = 0o640


def write_once(path: Path, data: bytes, mode: int = EVIDENCE_FILE_MODE) -> Literal["written", "same", "different"]:
    """Write `data` to `path` unless a file is there: "written", or for an existing file whether it
    holds the same bytes (a retried write) or others (refused by the caller). A temporary file is
    linked into place, so a concurrent writer of the same path loses instead of replacing."""
    if path.exists():
        return "same" if path.read_bytes() == data else "different"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(data)}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return "same" if path.read_bytes() == data else "different"
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return "written"
