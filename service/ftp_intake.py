"""The FTP intake: cameras that can only upload a JPEG per plate read (its file name carries the plate,
often the time and the camera) log in as their source (user = source name, password = its secret) and
upload; each file becomes a read of that source (`sources.formats.filename_read`) and is then deleted,
the picture kept as evidence. pyftpdlib in a thread; every user is confined to its own upload folder
and may only store files (no listing, reading or deleting of others' uploads)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from service.context import AppContext

log = logging.getLogger(__name__)


class FtpIntakeComponent:
    name = "ftp"

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.server: Any = None
        self._thread: threading.Thread | None = None
        self.root = Path(ctx.settings.data_dir) / "ftp-incoming"
        self.port: int | None = None

    def _handler(self) -> type:
        from pyftpdlib.authorizers import AuthenticationFailed, DummyAuthorizer
        from pyftpdlib.handlers import FTPHandler

        ctx, component = self.ctx, self
        cfg = ctx.settings.ftp

        class SourceAuthorizer(DummyAuthorizer):
            """Users are the ftp sources in use at the moment of login (stored edits over the file), so a
            source added, re-keyed, disabled or deleted in the dashboard applies without a restart."""

            def validate_authentication(self, username: str, password: str, handler: Any) -> None:
                source = component.login_source(username)
                if source is None or source.secret is None or not hmac.compare_digest(
                        password.encode(), source.secret.get_secret_value().encode()):
                    raise AuthenticationFailed("Authentication failed.")
                home = component.root / source.name
                home.mkdir(parents=True, exist_ok=True)
                home.chmod(0o700)
                # e: enter its folder, w: store files. Nothing else: no list, read, delete or rename.
                self.user_table[username] = {"pwd": "", "home": os.path.realpath(home), "perm": "ew",
                                             "operms": {}, "msg_login": "Login successful.",
                                             "msg_quit": "Goodbye."}

        authorizer = SourceAuthorizer()

        class Handler(FTPHandler):
            banner = "Baywarden FTP intake"
            permit_foreign_addresses = False
            max_login_attempts = 3

            def on_file_received(self, file: str) -> None:
                component.received(self.username, file)

            def on_incomplete_file_received(self, file: str) -> None:
                component.discard(self.username, file, "upload interrupted")

        Handler.authorizer = authorizer
        low, _, high = cfg.passive_ports.partition("-")
        Handler.passive_ports = range(int(low), int(high) + 1)
        return Handler

    def login_source(self, username: str) -> Any:
        """The enabled ftp source a login names, or None (also when the database cannot say)."""
        from service.sources import find_source

        try:
            source = find_source(self.ctx, username)
        except Exception:
            log.exception("ftp login of %s: the sources could not be read", username[:64])
            return None
        return source if source is not None and source.kind == "ftp" and source.enabled else None

    # --- a file arrived --------------------------------------------------------------------------

    def received(self, source_name: str, file: str) -> None:
        from service.sources import count, find_source, store_reads
        from sources.formats import filename_read
        from sources.reads import SourceError

        now = self.ctx.clock()
        path = Path(file)
        source = find_source(self.ctx, source_name)
        try:
            if source is None or source.kind != "ftp" or not source.enabled:
                raise SourceError("no enabled ftp source of this name (deleted or disabled since the login?)")
            from service.sources import LIMITS

            if LIMITS.allow(source):
                raise SourceError(f"more than {source.max_per_s:g} uploads per second: dropped")
            size = path.stat().st_size
            if size > self.ctx.settings.ftp.max_file_bytes:
                raise SourceError(f"file of {size} bytes is larger than ftp.max_file_bytes")
            data = path.read_bytes()
            read = filename_read(path.name, data, source.file_pattern or "", source.time_format,
                                 source.utc_offset_min, source.cameras[0].id, now)
            with self.ctx.session() as db:
                envelopes = store_reads(db, source, [read], now, self.ctx.settings.evidence_dir)
                count(db, source.name, now)
                db.commit()
            self.ctx.publish_from_thread(envelopes)
        except (SourceError, OSError) as exc:
            log.warning("ftp upload %s from %s refused: %s", path.name[:120], source_name, exc)
            try:
                with self.ctx.session() as db:
                    count(db, source_name, now, f"{path.name[:120]}: {exc}")
                    db.commit()
            except Exception:
                log.exception("could not count the refusal")
        except Exception:
            log.exception("ftp upload %s from %s could not be stored", path.name[:120], source_name)
        finally:
            with_suppress_unlink(path)

    def discard(self, source_name: str, file: str, why: str) -> None:
        log.info("ftp upload %s from %s discarded: %s", Path(file).name[:120], source_name, why)
        with_suppress_unlink(Path(file))

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        from pyftpdlib.servers import FTPServer

        cfg = self.ctx.settings.ftp
        handler = await asyncio.to_thread(self._handler)
        self.server = FTPServer((cfg.host, cfg.port), handler)
        self.server.max_cons = 64
        self.server.max_cons_per_ip = 8
        self.port = self.server.address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"handle_exit": False},
                                        name="ftp-intake", daemon=True)
        self._thread.start()
        log.info("FTP intake on %s:%d", cfg.host, self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        # Files half-uploaded when we stopped are not reads.
        for folder in self.root.glob("*"):
            for leftover in folder.glob("*"):
                with_suppress_unlink(leftover)


def with_suppress_unlink(path: Path) -> None:
    try:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
