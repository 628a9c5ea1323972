"""Where and how to connect to one Redis node: address, login, database, TLS, timeouts.

Built from a URL (the forms redis-py accepts: ``redis://``, ``rediss://``, ``unix://``)
or from a redis-py client's pool (its public ``connection_kwargs`` and
``connection_class``), so a bus built on a client the user passes in talks to the same
server, as the same user, with the same TLS settings.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis import connection as sync_connection
from redis.asyncio import connection as async_connection

from eventbus.errors import ConfigurationError

DEFAULT_PORT = 6379
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_TRUE = ("1", "true", "yes", "on")
# a redis-py credential provider's get_credentials, asked at each login:
# (username, password) or (password,)
Credentials = Callable[[], tuple[str, ...]]


@dataclass(frozen=True)
class TLSOptions:
    """redis-py's ``ssl_*`` options; `context` builds the `ssl.SSLContext`."""

    cert_reqs: ssl.VerifyMode = ssl.CERT_REQUIRED
    ca_certs: str | None = None
    ca_path: str | None = None
    ca_data: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    key_password: str | None = field(default=None, repr=False)
    check_hostname: bool = True
    min_version: ssl.TLSVersion | None = None
    ciphers: str | None = None
    # redis-py's ssl_include_verify_flags / ssl_exclude_verify_flags (e.g. leaving out
    # VERIFY_X509_STRICT for an old CA)
    include_verify_flags: tuple[ssl.VerifyFlags, ...] = ()
    exclude_verify_flags: tuple[ssl.VerifyFlags, ...] = ()

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> TLSOptions:
        """From redis-py's keyword names (``ssl_cert_reqs``, ``ssl_ca_certs``, ...); an
        ``ssl_*`` option these connections cannot honour (OCSP checks) is refused rather
        than dropped."""
        unknown = sorted(
            key
            for key, value in kwargs.items()
            if key.startswith("ssl_") and key not in _TLS_KEYS and value not in (None, False)
        )
        if unknown:
            raise ConfigurationError(
                f"TLS option(s) {', '.join(unknown)} are not supported by the bus's own "
                f"connections; supported: {', '.join(sorted(_TLS_KEYS))}"
            )
        reqs = kwargs.get("ssl_cert_reqs", "required")
        if reqs is None:
            reqs = ssl.CERT_NONE
        elif isinstance(reqs, str):
            if reqs.lower() not in _CERT_REQS:
                raise ConfigurationError(
                    f"ssl_cert_reqs={reqs!r}: expected 'none', 'optional' or 'required'"
                )
            reqs = _CERT_REQS[reqs.lower()]
        check = kwargs.get("ssl_check_hostname", True)
        if isinstance(check, str):
            check = check.lower() in _TRUE
        return cls(
            cert_reqs=ssl.VerifyMode(reqs),
            ca_certs=kwargs.get("ssl_ca_certs"),
            ca_path=kwargs.get("ssl_ca_path"),
            ca_data=kwargs.get("ssl_ca_data"),
            certfile=kwargs.get("ssl_certfile"),
            keyfile=kwargs.get("ssl_keyfile"),
            key_password=kwargs.get("ssl_password"),
            # as redis-py: no hostname check when no certificate is checked at all
            check_hostname=bool(check) and reqs != ssl.CERT_NONE,
            min_version=kwargs.get("ssl_min_version"),
            ciphers=kwargs.get("ssl_ciphers"),
            include_verify_flags=_verify_flags(kwargs, "ssl_include_verify_flags"),
            exclude_verify_flags=_verify_flags(kwargs, "ssl_exclude_verify_flags"),
        )

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        context.check_hostname = self.check_hostname
        context.verify_mode = self.cert_reqs
        if self.certfile or self.keyfile:
            context.load_cert_chain(self.certfile or "", self.keyfile, self.key_password)
        if self.ca_certs or self.ca_path or self.ca_data:
            context.load_verify_locations(self.ca_certs, self.ca_path, self.ca_data)
        if self.min_version is not None:
            context.minimum_version = self.min_version
        if self.ciphers is not None:
            context.set_ciphers(self.ciphers)
        for flag in self.include_verify_flags:
            context.verify_flags |= flag
        for flag in self.exclude_verify_flags:
            context.verify_flags &= ~flag
        return context


def _verify_flags(kwargs: Mapping[str, Any], key: str) -> tuple[ssl.VerifyFlags, ...]:
    """``ssl.VerifyFlags`` values as given to redis-py, or their names as a URL gives
    them (``VERIFY_X509_STRICT,VERIFY_CRL_CHECK_LEAF``)."""
    value = kwargs.get(key) or ()
    if isinstance(value, str):
        try:
            return tuple(ssl.VerifyFlags[name.strip()] for name in value.split(",") if name)
        except KeyError as exc:
            raise ConfigurationError(
                f"{key}: {exc.args[0]!r} is not an ssl.VerifyFlags name (e.g. VERIFY_X509_STRICT)"
            ) from None
    return tuple(value)


_TLS_KEYS = frozenset(
    {
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_ca_data",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
        "ssl_include_verify_flags",
        "ssl_exclude_verify_flags",
    }
)


@dataclass(frozen=True)
class ConnectionOptions:
    """One node's address (host and port, or a unix socket `path`) and how to talk to it.

    `socket_timeout` bounds one exchange (a request and all its replies), `connect_timeout`
    the connection and its handshake (None: `socket_timeout`); `connect_retries` more
    attempts follow a failed connect after a short pause. None: no limit.
    """

    host: str = "localhost"
    port: int = DEFAULT_PORT
    path: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    tls: TLSOptions | None = None
    socket_timeout: float | None = None
    connect_timeout: float | None = None
    client_name: str | None = None
    connect_retries: int = 0
    credentials: Credentials | None = field(default=None, repr=False, compare=False)

    @property
    def address(self) -> str:
        """Where the node is, for messages (never with a password)."""
        return f"unix://{self.path}" if self.path else f"{self.host}:{self.port}"

    @property
    def handshake_timeout(self) -> float | None:
        return self.socket_timeout if self.connect_timeout is None else self.connect_timeout

    def with_socket_timeout(self, socket_timeout: float | None) -> ConnectionOptions:
        return replace(self, socket_timeout=socket_timeout)

    def login(self) -> tuple[str | None, str | None]:
        """(username, password) for AUTH, asking the credential provider if there is one."""
        if self.credentials is None:
            return self.username, self.password
        given = self.credentials()
        return (None, given[0]) if len(given) == 1 else (given[0], given[1])

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> ConnectionOptions:
        """``redis://[[user]:password@]host[:port][/db][?option=value...]``, ``rediss://``
        (TLS; ``ssl_*`` options in the query), ``unix:///path/to/sock?db=0&password=``.
        Keyword `overrides` use redis-py's names (socket_timeout=5, ...)."""
        parts = urlsplit(url)
        kwargs: dict[str, Any] = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.username:
            kwargs["username"] = unquote(parts.username)
        if parts.password:
            kwargs["password"] = unquote(parts.password)
        if parts.scheme == "unix":
            kwargs["path"] = unquote(parts.path)
        elif parts.scheme in ("redis", "rediss"):
            kwargs["host"] = unquote(parts.hostname or "localhost")
            if parts.port:
                kwargs["port"] = parts.port
            db = parts.path.lstrip("/")
            if db and "db" not in kwargs:
                kwargs["db"] = db
        else:
            raise ConfigurationError(
                f"unsupported Redis URL scheme {parts.scheme!r}: use redis://, rediss:// or unix://"
            )
        kwargs.update(overrides)
        return cls.from_kwargs(kwargs, tls=parts.scheme == "rediss")

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], *, tls: bool) -> ConnectionOptions:
        """From redis-py's connection keywords (the names its pools use)."""
        retry = kwargs.get("retry")
        provider = kwargs.get("credential_provider")
        return cls(
            host=str(kwargs.get("host") or "localhost"),
            port=int(kwargs.get("port") or DEFAULT_PORT),
            path=kwargs.get("path") or None,
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            db=int(kwargs.get("db") or 0),
            tls=TLSOptions.from_kwargs(kwargs) if tls else None,
            socket_timeout=_seconds(kwargs.get("socket_timeout")),
            connect_timeout=_seconds(kwargs.get("socket_connect_timeout")),
            client_name=kwargs.get("client_name") or None,
            connect_retries=0 if retry is None else int(retry.get_retries()),
            credentials=None if provider is None else provider.get_credentials,
        )

    @classmethod
    def from_client(cls, client: Any) -> ConnectionOptions:
        """The options of a redis-py client (asyncio or blocking), read from its pool."""
        pool = client.connection_pool
        kind = pool.connection_class
        if kind not in _PLAIN_CONNECTIONS:
            # a Sentinel-managed pool (its kwargs name no host: the master is looked up
            # per connection), a cluster's, or a user's own class: connecting by its
            # kwargs would reach the wrong server
            raise ConfigurationError(
                f"a redis-py client whose connections are {kind.__name__} cannot be used "
                "for the bus's own connections (only a plain TCP, TLS or unix-socket "
                "client can); give the bus a URL (EventBus.from_url) instead"
            )
        tls = issubclass(kind, async_connection.SSLConnection | sync_connection.SSLConnection)
        return cls.from_kwargs(pool.connection_kwargs, tls=tls)


_PLAIN_CONNECTIONS = frozenset(
    {
        async_connection.Connection,
        async_connection.SSLConnection,
        async_connection.UnixDomainSocketConnection,
        sync_connection.Connection,
        sync_connection.SSLConnection,
        sync_connection.UnixDomainSocketConnection,
    }
)


def _seconds(value: Any) -> float | None:
    return None if value is None or value == "" else float(value)
