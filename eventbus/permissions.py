"""ACL permissions: telling a missing permission (NOPERM) from an outage, and checking
up front that the Redis user may run what a worker needs."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from eventbus.errors import ConnectionFailed, EventBusError, PermissionDenied, describe_error

# "NOPERM User u has no permissions to run the 'xack' command" (7.x),
# "NOPERM this user has no permissions to run the 'xack' command or its subcommand" (6.2)
_COMMAND = re.compile(r"run the '([^']+)' command")


def is_noperm(exc: BaseException) -> bool:
    """A reply refusing a command or key for lack of an ACL permission. ("in": before
    Redis 7 an error inside a script arrives wrapped in "ERR Error running script".)"""
    # redis-py strips the NOPERM code off the message of the NoPermissionError it raises;
    # Redis 7.0 reports a refusal inside a script as "ERR The user executing the script
    # can't run this command or subcommand"
    if isinstance(exc, NoPermissionError):
        return True
    text = str(exc)
    return isinstance(exc, ResponseError) and (
        "NOPERM" in text or "user executing the script can't run" in text
    )


def missing_permission(exc: BaseException) -> str:
    """What the NOPERM reply says is missing: a command name, or "a key" / "a channel"."""
    text = str(exc)
    found = _COMMAND.search(text)
    if found:
        return found.group(1)
    if "script" in text:  # refused inside a script: Redis does not say which command
        return "a command of one of its scripts"
    if "key" in text:
        return "access to a key"
    if "channel" in text:
        return "access to a channel"
    return "a permission"


def explain_noperm(exc: BaseException, *, user: str | None, what: str) -> str:
    """One line: what was refused, and how to grant it."""
    missing = missing_permission(exc)
    who = user or "default"
    if missing.startswith("access to"):
        fix = f"grant the key patterns with ACL SETUSER {who} ~<prefix>:*"
    elif missing.startswith("a command"):
        fix = f"grant what {what} needs (the worker's start check lists it: restart it)"
    else:
        fix = f"grant it with ACL SETUSER {who} +{missing}"
    shown = missing if missing.startswith(("a ", "access")) else repr(missing)
    return f"{what}: the Redis user {who!r} lacks {shown} (NOPERM: {exc}); {fix}"


def user_of(url: str | None) -> str | None:
    """The ACL user a Redis URL logs in as (None: the default user)."""
    if not url:
        return None
    try:
        name = urlsplit(url).username
    except ValueError:
        return None
    return unquote(name) if name else None


_REFUSALS = ("NOPERM", "WRONGPASS", "NOAUTH", "INVALID PASSWORD", "DB INDEX", "INVALID DATABASE")


def is_refusal(exc: BaseException) -> bool:
    """The server answered but will not serve us as configured (a wrong password or
    user, no such database, a missing permission): retrying cannot help. (LOADING,
    MASTERDOWN and the like pass with time: not refusals.)"""
    if isinstance(exc, AuthenticationError) or is_noperm(exc):
        return True
    text = str(exc).upper()
    return any(word in text for word in _REFUSALS)


def refused(
    exc: BaseException, *, url: str | None, display_url: str, user: str | None = None
) -> EventBusError:
    """The error for a server that answered but refused us: credentials, database,
    permission. Retrying would not help, so callers raise it at once. (The ACL user is
    the URL's, else `user`.)"""
    text = describe_error(exc)
    if is_noperm(exc):
        who = user_of(url) or user
        return PermissionDenied(explain_noperm(exc, user=who, what=display_url))
    upper = text.upper()
    if isinstance(exc, AuthenticationError) or any(
        word in upper for word in ("WRONGPASS", "NOAUTH", "AUTHENTICATION", "INVALID PASSWORD")
    ):
        return ConnectionFailed(
            f"Redis at {display_url} refused the login ({text}); check the user and "
            "password in the URL (redis://user:password@host:port/db)"
        )
    if "DB INDEX" in upper or "INVALID DATABASE" in upper:
        return ConnectionFailed(
            f"Redis at {display_url} has no such database ({text}); use a database number "
            "the server has (redis://host:port/0; see its `databases` setting)"
        )
    return ConnectionFailed(f"Redis at {display_url} refused the connection: {text}")
