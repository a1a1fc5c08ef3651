"""Scratch databases and folders for the benches, removed when the bench ends (also on an error or Ctrl-C).

A bench run used to leave its PostgreSQL database and its data folder behind: `bench/ingest.py` alone
kept ~2 GB of evidence pictures per run. `--keep` on the benches that take it leaves them for a look.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text


@contextmanager
def scratch_database(admin: str, prefix: str, keep: bool = False) -> Iterator[str]:
    """A new, empty PostgreSQL database on the server of the `admin` URL; dropped on exit unless `keep`."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    eng = create_engine(admin, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        if keep:
            print(f"kept database {name}", flush=True)
        else:
            with eng.connect() as c:  # FORCE: a killed instance may still hold a connection
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        eng.dispose()


@contextmanager
def scratch_dir(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A new temporary folder; removed on exit unless `keep`."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if keep:
            print(f"kept folder {path}", flush=True)
        else:
            shutil.rmtree(path, ignore_errors=True)
