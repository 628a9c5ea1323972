"""Lua scripts called by EVALSHA, sent whole (EVAL) when the server has not got them."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from eventbus.wire.errors import NoScript
from eventbus.wire.packing import Arg


class Script:
    """A Lua script called by EVALSHA, loaded on NOSCRIPT."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def evalsha(self, keys: Sequence[Arg], args: Sequence[Arg]) -> list[Arg]:
        return ["EVALSHA", self.sha, len(keys), *keys, *args]

    def eval(self, keys: Sequence[Arg], args: Sequence[Arg]) -> list[Arg]:
        return ["EVAL", self.source, len(keys), *keys, *args]


async def run_script(
    call: Callable[..., Awaitable[Any]], script: Script, keys: Sequence[Arg], args: Sequence[Arg]
) -> Any:
    """Run `script` through `call` (one command, an error reply raising): EVALSHA, then
    EVAL when the server does not have it (new, restarted, or SCRIPT FLUSHed)."""
    try:
        return await call(*script.evalsha(keys, args))
    except NoScript:
        return await call(*script.eval(keys, args))
