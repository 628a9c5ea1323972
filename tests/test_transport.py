"""The wire layer's contract, held by both transports (asyncio `NodePool`, blocking
`SyncPool`) against real servers: what a half-done exchange does to the connection, TLS,
unix sockets, dead idle connections, the login, a restart, SELECT, CLIENT SETNAME."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
import pytest_asyncio
import redis

from eventbus.errors import ConnectionFailed, EventBusError
from eventbus.permissions import is_noperm
from eventbus.testing import RedisServer, wait_for
from eventbus.testing.server import free_port
from eventbus.wire import (
    AuthenticationFailed,
    ConnectionOptions,
    IncompleteExchange,
    NodePool,
    NoPermission,
    NoScript,
    ReplyError,
    SyncPool,
    pack,
)
from tests.helpers import reply_cutting_proxy

pytestmark = pytest.mark.timeout(60)


class Client(Protocol):
    """One face for both transports (the blocking one runs in a thread)."""

    async def request(self, *commands: list[Any]) -> list[Any]: ...

    async def aclose(self) -> None: ...


class AsyncClient:
    def __init__(self, options: ConnectionOptions) -> None:
        self.pool = NodePool(options)

    async def request(self, *commands: list[Any]) -> list[Any]:
        return await self.pool.request(b"".join(pack(c) for c in commands), len(commands))

    async def aclose(self) -> None:
        await self.pool.aclose()


class BlockingClient:
    def __init__(self, options: ConnectionOptions) -> None:
        self.pool = SyncPool(options)

    async def request(self, *commands: list[Any]) -> list[Any]:
        payload = b"".join(pack(c) for c in commands)
        return await asyncio.to_thread(self.pool.request, payload, len(commands))

    async def aclose(self) -> None:
        self.pool.close()


MakeClient = Callable[..., Client]


@pytest_asyncio.fixture(params=["async", "blocking"])
async def make_client(request: pytest.FixtureRequest) -> AsyncIterator[MakeClient]:
    kind = AsyncClient if request.param == "async" else BlockingClient
    made: list[Client] = []

    def make(options: ConnectionOptions | str, **overrides: Any) -> Client:
        if isinstance(options, str):
            options = ConnectionOptions.from_url(options, **overrides)
        client = kind(options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


@pytest.fixture
def server(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    return redis_server_factory()


@pytest.fixture
def admin(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=server.port, decode_responses=True)
    yield client
    client.close()


def others(admin: redis.Redis) -> list[dict[str, Any]]:
    return [c for c in admin.client_list() if c["cmd"] != "client|list"]


async def test_replies_in_order_with_error_replies_as_values(
    make_client: MakeClient, server: RedisServer
) -> None:
    client = make_client(server.url)
    replies = await client.request(
        ["SET", "k", "v"], ["INCR", "k"], ["EVALSHA", "0" * 40, 0], ["GET", "k"]
    )
    assert replies[0] == b"OK"
    assert isinstance(replies[1], ReplyError) and "not an integer" in str(replies[1])
    assert replies[1].code == "ERR" and replies[1].reply.startswith("ERR ")
    assert isinstance(replies[2], NoScript)
    assert isinstance(replies[2], redis.exceptions.NoScriptError)  # the bridge
    assert replies[3] == b"v"


async def test_noperm_is_a_no_permission_error(
    make_client: MakeClient, server: RedisServer, admin: redis.Redis
) -> None:
    admin.acl_setuser("limited", enabled=True, passwords=["+pw"], keys=["*"], commands=["+get"])
    client = make_client(f"redis://limited:pw@127.0.0.1:{server.port}/0")
    [reply] = await client.request(["SET", "k", "v"])
    assert isinstance(reply, NoPermission) and isinstance(reply, redis.ResponseError)
    assert isinstance(reply, EventBusError)
    assert is_noperm(reply)


async def test_a_deadline_passed_mid_exchange_closes_the_connection(
    make_client: MakeClient, server: RedisServer, admin: redis.Redis
) -> None:
    """One deadline for the whole exchange; the replies read before it are reported; the
    next request gets its own reply on a fresh connection."""
    client = make_client(server.url, socket_timeout=0.3)
    with pytest.raises(IncompleteExchange, match=r"within 0\.3s") as caught:
        await client.request(["PING"], ["BLPOP", "never", 5])
    assert caught.value.replies == [b"PONG"]
    assert isinstance(caught.value, redis.ConnectionError)
    await wait_for(lambda: not others(admin), message="the timed-out connection closed")
    assert await client.request(["ECHO", "mine"]) == [b"mine"]


async def test_cancellation_mid_reply_closes_the_connection(
    server: RedisServer, admin: redis.Redis
) -> None:
    pool = NodePool(ConnectionOptions.from_url(server.url, socket_timeout=5))
    try:
        task = asyncio.ensure_future(pool.request(pack(["BLPOP", "q", 5])))
        await wait_for(lambda: any(c["cmd"] == "blpop" for c in others(admin)))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # closed, not kept: the server sees the blocked client go (else it would be
        # handed the element pushed next)
        await wait_for(lambda: not any(c["cmd"] == "blpop" for c in others(admin)))
        admin.rpush("q", "for nobody")
        # never reused: the next request gets its own reply, not the BLPOP's
        assert await pool.request(pack(["ECHO", "mine"])) == [b"mine"]
        assert await pool.request(pack(["LLEN", "q"])) == [1]
        assert len(others(admin)) == 1
    finally:
        await pool.aclose()


async def test_a_connection_dying_half_way_reports_the_replies_read(
    make_client: MakeClient, server: RedisServer
) -> None:
    async with reply_cutting_proxy(server.port, marker=b"cut-here", keep_replies=2) as port:
        client = make_client(f"redis://127.0.0.1:{port}/0", socket_timeout=5)
        with pytest.raises(IncompleteExchange, match="lost") as caught:
            await client.request(
                ["ECHO", "cut-here"], ["ECHO", "two"], ["ECHO", "three"], ["ECHO", "four"]
            )
        assert caught.value.replies == [b"cut-here", b"two"]
        assert await client.request(["ECHO", "after"]) == [b"after"]


async def test_a_connection_killed_while_idle_is_replaced(
    make_client: MakeClient, server: RedisServer, admin: redis.Redis
) -> None:
    client = make_client(server.url)
    assert await client.request(["PING"]) == [b"PONG"]
    admin.client_kill_filter(_type="normal", skipme=True)
    await wait_for(lambda: not others(admin))
    assert await client.request(["ECHO", "again"]) == [b"again"]


async def test_a_server_restart_is_survived(
    make_client: MakeClient, redis_server_factory: Callable[..., RedisServer]
) -> None:
    server = redis_server_factory()
    client = make_client(server.url)
    assert await client.request(["SET", "k", "1"]) == [b"OK"]
    server.kill()
    server.start()  # the same port
    assert await client.request(["ECHO", "back"]) == [b"back"]


async def test_select_and_client_setname(
    make_client: MakeClient, server: RedisServer, admin: redis.Redis
) -> None:
    client = make_client(f"redis://127.0.0.1:{server.port}/3?client_name=wire-test")
    assert await client.request(["SET", "in-db-3", "1"]) == [b"OK"]
    assert redis.Redis(port=server.port, db=3).get("in-db-3") == b"1"
    assert admin.get("in-db-3") is None
    assert any(c["name"] == "wire-test" and c["db"] == "3" for c in others(admin))


@pytest.mark.parametrize(
    ("login", "user"),
    [("alice:wrong@", "alice"), ("nobody:pw@", "nobody"), (":pw@", "default")],
    ids=["wrong-password", "unknown-user", "password-without-one-set"],
)
async def test_a_refused_login_names_the_user_and_the_fix(
    make_client: MakeClient, server: RedisServer, admin: redis.Redis, login: str, user: str
) -> None:
    admin.acl_setuser("alice", enabled=True, passwords=["+right"], keys=["*"], commands=["+@all"])
    client = make_client(f"redis://{login}127.0.0.1:{server.port}/0")
    with pytest.raises(AuthenticationFailed) as caught:
        await client.request(["PING"])
    message = str(caught.value)
    assert f"user {user!r}" in message and "password" in message
    assert "wrong@" not in message and ":pw" not in message  # never the password
    assert isinstance(caught.value, ConnectionFailed | redis.AuthenticationError)
    good = make_client(f"redis://alice:right@127.0.0.1:{server.port}/0")
    assert await good.request(["ACL", "WHOAMI"]) == [b"alice"]


async def test_a_user_without_a_password_logs_in_as_that_user(
    make_client: MakeClient, server: RedisServer, admin: redis.Redis
) -> None:
    # an ACL user with nopass: redis://bob@host logs in as bob (AUTH bob ""), not default
    admin.acl_setuser("bob", enabled=True, nopass=True, keys=["*"], commands=["+@all"])
    client = make_client(f"redis://bob@127.0.0.1:{server.port}/0")
    assert await client.request(["ACL", "WHOAMI"]) == [b"bob"]


async def test_idle_connections_are_reused_above_descriptor_1024(
    make_client: MakeClient, server: RedisServer
) -> None:
    # select() cannot watch descriptors >= 1024; the idle check must still tell a live
    # connection from a dead one there, or every request would open a new connection
    base = os.open(__file__, os.O_RDONLY)
    spare = [os.dup(base) for _ in range(1100)]
    try:
        client = make_client(server.url)
        [first] = await client.request(["CLIENT", "ID"])
        [again] = await client.request(["CLIENT", "ID"])
        assert again == first
    finally:
        for fd in [base, *spare]:
            os.close(fd)


async def _garbage_server() -> tuple[asyncio.Server, int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"!not RESP at all\r\n")  # hiredis cannot parse this
        await writer.drain()
        await reader.read(1024)
        writer.close()

    found = await asyncio.start_server(answer, "127.0.0.1", 0)
    return found, found.sockets[0].getsockname()[1]


async def test_a_reply_that_cannot_be_parsed_is_a_lost_exchange(make_client: MakeClient) -> None:
    listening, port = await _garbage_server()
    try:
        client = make_client(f"redis://127.0.0.1:{port}/0", socket_timeout=5)
        with pytest.raises(IncompleteExchange, match="lost"):
            await client.request(["PING"])
    finally:
        listening.close()


def test_a_sentinel_managed_client_is_refused_not_misrouted() -> None:
    # its pool's kwargs name no host: connecting by them would reach localhost:6379
    from redis.asyncio.sentinel import Sentinel

    client = Sentinel([("127.0.0.1", free_port())]).master_for("mymaster")
    with pytest.raises(EventBusError, match="give the bus a URL"):
        ConnectionOptions.from_client(client)


async def test_unix_socket(
    make_client: MakeClient, redis_server_factory: Callable[..., RedisServer]
) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:  # short: unix paths have a limit
        path = str(Path(tmp) / "redis.sock")
        redis_server_factory(extra_args=["--unixsocket", path, "--unixsocketperm", "700"])
        client = make_client(f"unix://{path}?db=2")
        assert await client.request(["SET", "k", "v"], ["GET", "k"]) == [b"OK", b"v"]
        assert redis.Redis(unix_socket_path=path, db=2).get("k") == b"v"


@pytest.fixture(scope="module")
def ca_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA of the test's own, and a certificate for localhost signed by it."""
    d = tmp_path_factory.mktemp("ca")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        str(d / "ca.key"),
        "-out",
        str(d / "ca.pem"),
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        str(d / "node.key"),
        "-out",
        str(d / "node.csr"),
    )
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        str(d / "node.csr"),
        "-CA",
        str(d / "ca.pem"),
        "-CAkey",
        str(d / "ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        str(d / "ext.cnf"),
        "-out",
        str(d / "node.pem"),
    )
    return {"ca": str(d / "ca.pem"), "cert": str(d / "node.pem"), "key": str(d / "node.key")}


@pytest.fixture
def tls_port(
    redis_server_factory: Callable[..., RedisServer], ca_files: dict[str, str]
) -> tuple[RedisServer, int]:
    port = free_port()
    args = [
        "--tls-port",
        str(port),
        "--tls-cert-file",
        ca_files["cert"],
        "--tls-key-file",
        ca_files["key"],
        "--tls-ca-cert-file",
        ca_files["ca"],
        "--tls-auth-clients",
        "optional",
    ]
    try:
        return redis_server_factory(extra_args=args), port
    except EventBusError:
        pytest.skip("this redis-server was built without TLS")


async def test_tls_verified_against_a_ca(
    make_client: MakeClient,
    tls_port: tuple[RedisServer, int],
    ca_files: dict[str, str],
) -> None:
    server, port = tls_port
    admin = redis.Redis(port=server.port, decode_responses=True)
    try:
        client = make_client(f"rediss://localhost:{port}/0?ssl_ca_certs={ca_files['ca']}")
        assert await client.request(["ECHO", "secret"]) == [b"secret"]
        # a client certificate too (ssl_certfile / ssl_keyfile), and an idle TLS
        # connection killed by the server is replaced
        mutual = make_client(
            f"rediss://localhost:{port}/0?ssl_ca_certs={ca_files['ca']}"
            f"&ssl_certfile={ca_files['cert']}&ssl_keyfile={ca_files['key']}"
        )
        assert await mutual.request(["PING"]) == [b"PONG"]
        admin.client_kill_filter(_type="normal", skipme=True)
        await wait_for(lambda: not others(admin))
        assert await mutual.request(["ECHO", "again"]) == [b"again"]
        # an unknown CA fails the connection, and says so
        unverified = make_client(f"rediss://localhost:{port}/0")
        with pytest.raises(ConnectionFailed, match="certificate"):
            await unverified.request(["PING"])
    finally:
        admin.close()


def test_options_from_a_url_and_from_a_client() -> None:
    url = "rediss://u%40x:p%3Aw@example.com:6380/4?ssl_cert_reqs=none&client_name=n"
    options = ConnectionOptions.from_url(url, socket_timeout=3)
    assert (options.host, options.port, options.db) == ("example.com", 6380, 4)
    assert (options.username, options.password, options.client_name) == ("u@x", "p:w", "n")
    assert options.tls is not None and not options.tls.check_hostname
    assert options.socket_timeout == 3 and "p:w" not in repr(options)
    client = redis.Redis.from_url(url, socket_timeout=3)
    assert ConnectionOptions.from_client(client) == options
    unix = ConnectionOptions.from_url("unix:///tmp/r.sock?db=2&password=s")
    assert (unix.path, unix.db, unix.password, unix.address) == (
        "/tmp/r.sock",
        2,
        "s",
        "unix:///tmp/r.sock",
    )


def test_tls_verify_flags_are_carried_and_unknown_tls_options_refused() -> None:
    # redis-py's ssl_exclude_verify_flags (an old CA without the strict X.509 checks)
    client = redis.Redis(
        host="example.com",
        ssl=True,
        ssl_exclude_verify_flags=[ssl.VERIFY_X509_STRICT],
        ssl_include_verify_flags=[ssl.VERIFY_CRL_CHECK_LEAF],
    )
    tls = ConnectionOptions.from_client(client).tls
    assert tls is not None
    context = tls.context()
    assert not context.verify_flags & ssl.VERIFY_X509_STRICT
    assert context.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
    # an option our connections cannot honour is refused, not silently dropped
    ocsp = redis.Redis(host="example.com", ssl=True, ssl_validate_ocsp=True)
    with pytest.raises(EventBusError, match="ssl_validate_ocsp"):
        ConnectionOptions.from_client(ocsp)


def test_verify_flags_by_name_in_a_url_and_an_empty_password() -> None:
    url = "rediss://h:6380/0?ssl_exclude_verify_flags=VERIFY_X509_STRICT"
    tls = ConnectionOptions.from_url(url).tls
    assert tls is not None and tls.exclude_verify_flags == (ssl.VERIFY_X509_STRICT,)
    with pytest.raises(EventBusError, match=r"not an ssl\.VerifyFlags name"):
        ConnectionOptions.from_url("rediss://h/0?ssl_include_verify_flags=VERIFY_NOTHING_X")


async def test_an_empty_password_is_no_login(make_client: MakeClient, server: RedisServer) -> None:
    # redis.Redis(password="") sends no AUTH (password=os.environ.get("...", "") is common)
    client = make_client(
        ConnectionOptions.from_kwargs({"port": server.port, "password": ""}, tls=False)
    )
    assert await client.request(["ACL", "WHOAMI"]) == [b"default"]


def test_a_closed_blocking_pool_refuses_requests_and_closes_what_comes_back(
    server: RedisServer, admin: redis.Redis
) -> None:
    pool = SyncPool(ConnectionOptions.from_url(server.url))
    assert pool.request(pack(["PING"])) == [b"PONG"]
    pool.close()
    with pytest.raises(ConnectionFailed, match="closed"):
        pool.request(pack(["PING"]))


async def test_past_its_cap_a_pool_waits_for_a_connection_instead_of_opening_more(
    server: RedisServer, admin: redis.Redis
) -> None:
    pool = NodePool(ConnectionOptions.from_url(server.url, socket_timeout=10), max_connections=1)
    try:
        holder = asyncio.ensure_future(pool.request(pack(["BLPOP", "cap-q", 5])))
        await wait_for(lambda: any(c["cmd"] == "blpop" for c in others(admin)))
        waiter = asyncio.ensure_future(pool.request(pack(["ECHO", "after"])))
        await asyncio.sleep(0)  # it is waiting for the one connection, not opening another
        assert not waiter.done()
        assert len(others(admin)) == 1
        admin.rpush("cap-q", "x")
        assert await holder == [[b"cap-q", b"x"]]
        assert await waiter == [b"after"]
        assert len(others(admin)) == 1  # the same connection, handed over
    finally:
        await pool.aclose()


async def test_a_request_past_the_cap_gives_up_after_the_socket_timeout(
    server: RedisServer,
) -> None:
    options = ConnectionOptions.from_url(server.url, socket_timeout=0.5)
    pool = NodePool(options, max_connections=1)
    try:
        # the only connection stays taken (a pause of the event loop's turn would do too)
        taken = await pool._take()
        with pytest.raises(ConnectionFailed, match="stayed in use"):
            await pool.request(pack(["PING"]))
        pool._put_back(taken)
        assert await pool.request(pack(["PING"])) == [b"PONG"]
    finally:
        await pool.aclose()
