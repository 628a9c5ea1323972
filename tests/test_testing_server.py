"""eventbus.testing.server under parallel workers: ports reserved across processes, a
server whose port another socket took moves before it serves, a restart keeps its port."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import redis

from eventbus.errors import EmbeddedServerError
from eventbus.testing import RedisServer
from eventbus.testing.server import free_port, release_port


def reserved_elsewhere(port: int) -> bool:
    """Whether another process finds `port` reserved (it cannot reserve it)."""
    code = f"from eventbus.testing.server import _reserve; print(_reserve({port}))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    return out == "False"


def test_a_port_is_reserved_until_released() -> None:
    port = free_port()
    assert port != free_port()  # never the same one twice
    assert reserved_elsewhere(port)
    release_port(port)
    assert not reserved_elsewhere(port)


def listening_on(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_a_server_whose_port_was_taken_moves_before_it_serves() -> None:
    server = RedisServer()
    taken = server.port
    squatter = listening_on(taken)  # another socket got there between choice and bind
    try:
        with server:
            assert server.port != taken
            with redis.Redis(port=server.port) as client:
                assert client.ping()
            port = server.port
            server.kill()  # a restart keeps its port (its clients know that one)
            server.start()
            assert server.port == port
    finally:
        squatter.close()


def test_a_port_given_is_kept_and_a_taken_one_fails() -> None:
    port = free_port()
    squatter = listening_on(port)
    try:
        server = RedisServer(port=port)
        with pytest.raises(EmbeddedServerError, match="did not start"):
            server.start(timeout=5)
        assert server.port == port
        server.close()
    finally:
        squatter.close()
        release_port(port)
