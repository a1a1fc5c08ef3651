"""free_port() never gives the same port twice (two parts told one port cannot both listen)."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest

from baywarden import demo
from baywarden.demo import free_port


def test_free_port_never_repeats_and_is_bindable() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))


class _RepeatingKernel:
    """A socket whose bind(0) gets the ports 40000, 40000, 40001 in turn: what the kernel may do."""

    ports = iter([40000, 40000, 40001])

    def __init__(self, *args: object) -> None:
        self.port = 0

    def __enter__(self) -> _RepeatingKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def bind(self, address: tuple[str, int]) -> None:
        self.port = next(self.ports)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def test_a_port_the_kernel_repeats_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "_ports_given", set())
    monkeypatch.setattr(demo, "socket", SimpleNamespace(socket=_RepeatingKernel))  # this module's view only
    assert [demo.free_port(), demo.free_port()] == [40000, 40001]
