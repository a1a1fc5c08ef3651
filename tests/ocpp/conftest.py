"""Helpers for the OCPP tests: ocpp-rpc peers (Node) run as subprocesses on 127.0.0.1.

Helpers are handed out through fixtures (not imported by module name) so the tests work in any
pytest import mode. Node peers need `npm ci` in tests/node; without it the tests that use them
skip, except under CI=true where they fail: CI must not go green without its real peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


def _ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


class NodePeer:
    """A running csms.js / cp.js; its JSON-line output is collected in `lines`."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, script: str, opts: dict[str, Any]) -> NodePeer:
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(NODE_DIR / script),
            json.dumps(opts),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=NODE_DIR,
            limit=1 << 22,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(raw))
                self._changed.set()
        self._changed.set()

    async def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 15.0) -> dict[str, Any]:
        async def scan() -> dict[str, Any]:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if pred(line):
                        return line
                seen = len(self.lines)
                if self._reader.done():
                    raise AssertionError(f"peer exited before the expected line; got {self.lines[-5:]}")
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout)

    async def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()

    async def finished(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(self.proc.wait(), timeout)
        await self._reader

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    def frames(self, cp_id: str, direction: str) -> list[str]:
        """SHA-256 of each frame this peer sent ('out') or received ('in') for one charger."""
        return [x["sha"] for x in self.lines if x.get("ev") == "msg" and x["id"] == cp_id and x["dir"] == direction]

    def events(self, ev: str, cp_id: str | None = None) -> list[dict[str, Any]]:
        return [x for x in self.lines if x.get("ev") == ev and (cp_id is None or x.get("id") == cp_id)]


async def start_csms(opts: dict[str, Any] | None = None) -> tuple[NodePeer, int]:
    csms = await NodePeer.start("csms.js", opts or {})
    line = await csms.wait_for(lambda x: x.get("ev") == "listening")
    return csms, int(line["port"])


@pytest.fixture
def node_peers() -> Any:
    """Checks that Node and ocpp-rpc are there (skip locally, fail under CI) and returns helpers."""
    missing = None
    if shutil.which("node") is None:
        missing = "node is not installed"
    elif not (NODE_DIR / "node_modules" / "ocpp-rpc").is_dir():
        missing = f"ocpp-rpc is not installed: run `npm ci` in {NODE_DIR}"
    if missing:
        if _ci():
            pytest.fail(f"{missing} (CI=true: the relay tests must run, not skip)")
        pytest.skip(missing)

    class Peers:
        start = staticmethod(NodePeer.start)
        csms = staticmethod(start_csms)

    return Peers


def run(coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
    """asyncio.run with a hard limit, so a hung peer fails one test instead of the whole run."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@pytest.fixture
def arun() -> Callable[..., Any]:
    return run


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 / localhost."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
