"""What a Redis failure means to an operator: one line naming the problem and the fix."""

from __future__ import annotations

from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    ClusterDownError,
    NoPermissionError,
)

from eventbus.errors import EventBusError, Param, describe_error

CLUSTER = (
    "this server is a Redis Cluster node ({reply}); eventbus does not support cluster "
    "mode yet: point --redis-url (or EVENTBUS_REDIS_URL) at a standalone Redis server"
)

_CLUSTER_CODES = ("MOVED", "ASK", "CLUSTERDOWN", "CROSSSLOT", "TRYAGAIN")


def _reply(exc: BaseException) -> str:
    """The error reply as Redis sent it (redis-py strips the code off some of them)."""
    text = describe_error(exc)
    code = getattr(exc, "status_code", None)
    if isinstance(code, str) and code and not text.startswith(code):
        text = f"{code} {text}"
    return text


def _cause(exc: BaseException) -> BaseException:
    """The Redis error behind `exc` (an EventBusError raised ``from`` one), else `exc`."""
    seen = exc
    for _ in range(5):  # a short chain; never loop on a cycle
        inner = seen.__cause__
        if inner is None:
            break
        seen = inner
    return seen


def explain(exc: BaseException) -> str | None:
    """A clear line for a failure with a known fix (cluster node, missing ACL permission,
    wrong or missing password), or None when there is nothing better to say."""
    err = _cause(exc)
    reply = _reply(err)
    first = reply.split(" ", 1)[0].upper()
    if isinstance(err, AskError | ClusterDownError) or first in _CLUSTER_CODES:
        return CLUSTER.format(reply=reply)
    if isinstance(err, NoPermissionError) or first == "NOPERM":
        return (
            f"the Redis user lacks a permission eventbus needs ({reply}); grant it with "
            "ACL SETUSER (docs/operations.md, 'Redis ACL'), or connect as "
            "another user"
        )
    if isinstance(err, AuthenticationError | AuthenticationWrongNumberOfArgsError) or first in (
        "WRONGPASS",
        "NOAUTH",
    ):
        return (
            f"Redis refused the credentials ({reply}); put the right user and password in "
            "the URL: redis://USER:PASSWORD@HOST:PORT (or redis://:PASSWORD@HOST:PORT)"
        )
    return None


def redis_failure(exc: BaseException) -> str:
    """The message for a Redis error that reached the command line."""
    return explain(exc) or f"Redis failed the command: {describe_error(exc)}"


# the library's arguments that its messages name (`Param`), as the command line says them
FLAGS = {
    "url": "--redis-url / EVENTBUS_REDIS_URL",
    "prefix": "--prefix",
    "group": "--group",
    "ids": "--id",
    "to": "--to",
    "claim_to": "--claim-to",
    "force": "--force",
}
COMMANDS = {"dead_letters": "'eventbus dlq ls {value}'"}  # functions, as commands


def flag(param: Param) -> str | None:
    """`param` as the command line names it: its flag (and the value to give), or the
    command doing what the function does; None for a name the CLI does not know."""
    if param.name in COMMANDS:
        return COMMANDS[param.name].format(value=param.value)
    name = FLAGS.get(param.name)
    if name is None:
        return None
    return name if param.value is None else f"{name} {param.value}"


def failure(exc: EventBusError) -> str:
    """The line for an eventbus error that reached the command line: a Redis failure
    explained (cluster node, ACL, password), else its message in the CLI's names."""
    return explain(exc) or exc.render(flag)


def cause_of(exc: BaseException) -> BaseException:
    """What failed: the Redis error an eventbus error translated, else `exc` itself."""
    return (exc.__cause__ or exc) if isinstance(exc, EventBusError) else exc
