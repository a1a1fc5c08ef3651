"""free_port() never gives the same port twice (two parts told one port cannot both listen)."""

from __future__ import annotations

import socket

from baywarden.demo import free_port


def test_free_port_never_repeats_and_is_bindable() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))
