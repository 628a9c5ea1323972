"""The wire layer's errors, and error replies parsed into them.

A bridge while the rest of the package moves off redis-py: each type derives from our
own tree (`EventBusError`, `ConnectionFailed`) and from the redis-py exception callers
still catch (`ResponseError`, `NoScriptError`, `NoPermissionError`, `ConnectionError`,
`TimeoutError`, `AuthenticationError`, ...). Once no caller names a redis-py type, the
second bases go.

An error reply's message reads as redis-py's did (the code stripped off the replies
redis-py maps to a type of its own, kept on the others), so that code matching the text
behaves as before; ``code`` and ``reply`` keep what the server sent.
"""

from __future__ import annotations

from redis import exceptions as rx

from eventbus.errors import ConnectionFailed, EventBusError


class _Described(Exception):
    """redis-py's exceptions print as ``NETWORK:ConnectionError`` (attributes set by an
    __init__ that a multiple-inheritance chain may skip); ours print as exceptions do."""

    status_code: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class _FromReply(_Described):
    """Made from an error reply: `code` is its first word (``ERR``, ``WRONGTYPE``, ...),
    `reply` the whole text as sent."""

    code: str = ""
    reply: str = ""

    def __init__(self, message: str, *, code: str = "", reply: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reply = reply or message


class ReplyError(_FromReply, EventBusError, rx.ResponseError):
    """Redis answered a command with an error reply."""


class NoScript(ReplyError, rx.NoScriptError):
    """NOSCRIPT: the server does not have the script (EVALSHA); send it with EVAL."""


class NoPermission(ReplyError, rx.NoPermissionError):
    """NOPERM: the ACL user may not run the command or touch the key."""


class ReadOnly(ReplyError, rx.ReadOnlyError):
    """READONLY: a write sent to a replica."""


class OutOfMemory(ReplyError, rx.OutOfMemoryError):
    """OOM: the server is at maxmemory and refuses writes."""


class ExecAbort(ReplyError, rx.ExecAbortError):
    """EXECABORT: a transaction discarded for an earlier error."""


class TryAgain(ReplyError, rx.TryAgainError):
    """TRYAGAIN: a cluster slot is moving; the command may succeed later."""


class CrossSlot(ReplyError, rx.ClusterCrossSlotError):
    """CROSSSLOT: the keys of one command hash to different cluster slots."""


class ClusterDown(ReplyError, rx.ClusterDownError):
    """CLUSTERDOWN: the cluster cannot serve the slot."""


class MasterDown(ClusterDown, rx.MasterDownError):
    """MASTERDOWN: a replica lost its primary."""


class Redirected(ReplyError, rx.ResponseError):
    """MOVED or ASK: the key's slot lives on another cluster node (`node`)."""

    def __init__(self, message: str, *, code: str = "", reply: str = "") -> None:
        super().__init__(message, code=code, reply=reply)
        slot, _, node = message.partition(" ")
        self.slot = int(slot) if slot.isdigit() else -1
        self.node = node


class ConnectionLost(_Described, ConnectionFailed, rx.ConnectionError):
    """The connection broke, could not be made, or the pool was closed."""


class IncompleteExchange(ConnectionLost):
    """The connection failed after the request was (maybe) sent. `replies` holds the
    replies read before the failure: the commands after them may or may not have run."""

    def __init__(self, message: str, replies: list[object]) -> None:
        super().__init__(message)
        self.replies = replies


class ConnectTimeout(_Described, ConnectionFailed, rx.TimeoutError):
    """No connection (and handshake) within the connect timeout."""


class Refusal(_FromReply, ConnectionLost):
    """An error reply that says this connection cannot be served (redis-py raises these
    as connection errors): a wrong login, a server still loading, too many clients. An
    exchange that reads one ends like a broken one."""


class AuthReply(Refusal, rx.AuthenticationError):
    """WRONGPASS, NOAUTH, or an AUTH the server has no password for."""


class BusyLoading(Refusal, rx.BusyLoadingError):
    """LOADING: the server is loading its data set into memory."""


class TooManyClients(Refusal):
    """ERR max number of clients reached."""


class AuthenticationFailed(_Described, ConnectionFailed, rx.AuthenticationError):
    """The server refused our login (the handshake's AUTH, or a command before it):
    the message names the user and the fix, never the password."""


_BY_CODE: dict[str, type[ReplyError] | type[Refusal]] = {
    "NOSCRIPT": NoScript,
    "NOPERM": NoPermission,
    "READONLY": ReadOnly,
    "OOM": OutOfMemory,
    "EXECABORT": ExecAbort,
    "TRYAGAIN": TryAgain,
    "CROSSSLOT": CrossSlot,
    "CLUSTERDOWN": ClusterDown,
    "MASTERDOWN": MasterDown,
    "MOVED": Redirected,
    "ASK": Redirected,
    "WRONGPASS": AuthReply,
    "NOAUTH": AuthReply,
    "LOADING": BusyLoading,
}

# ERR replies that redis-py treats as connection errors (the text after "ERR ")
_ERR_REFUSALS: dict[str, type[Refusal]] = {
    "max number of clients reached": TooManyClients,
    "invalid password": AuthReply,
    "Client sent AUTH, but no password is set": AuthReply,
    "AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?": AuthReply,
}


def parse_error(text: str) -> ReplyError | Refusal:
    """The error value for an error reply (hiredis's `replyError` hook)."""
    code = text.split(" ", 1)[0]
    if code == "ERR":
        rest = text[4:]
        return _ERR_REFUSALS.get(rest, ReplyError)(rest, code=code, reply=text)
    kind = _BY_CODE.get(code)
    if kind is None:
        return ReplyError(text, code=code, reply=text)
    return kind(text[len(code) + 1 :], code=code, reply=text)
