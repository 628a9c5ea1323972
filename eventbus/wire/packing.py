"""Commands packed into RESP bytes: hiredis's packer when it has one, else ours."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import hiredis

Arg = bytes | str | int | float


def _pack_python(args: Sequence[Arg]) -> bytes:
    """One command in RESP: ``*<n> $<len> <arg> ...``."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = repr(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def _pack_hiredis(args: Sequence[Arg]) -> bytes:
    packed: bytes = hiredis.pack_command(tuple(args))  # type: ignore[arg-type]  # stub: 1-tuple
    return packed


def _packer() -> Callable[[Sequence[Arg]], bytes]:
    try:
        hiredis.pack_command(("PING",))
    except AttributeError:  # a hiredis too old to pack: pack in Python
        return _pack_python
    return _pack_hiredis


pack = _packer()
