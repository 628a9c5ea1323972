"""Routing by slot on a Redis Cluster: one `NodePool` per master, a slot map, redirects.

    router = ClusterRouter([ConnectionOptions.from_url(seed_url)])
    await router.refresh()                       # CLUSTER SLOTS from a seed
    replies = await router.request(key_slot(key), [pack(["XADD", key, "*", "f", "v"])])

Each request carries commands of ONE slot (every key of a stream shares its ``{tag}``, so
a stream's commands always do). They go to the master serving the slot, pipelined;
their replies come back in order. Then, per command:

- ``MOVED slot node``: the slot lives elsewhere now and the command did not run. The
  slot map is refreshed and only the moved commands are sent again, to the new node.
- ``ASK slot node``: the slot is migrating and this key has left already: ``ASKING``
  then the command, on the target node, once; the map is not changed.
- ``TRYAGAIN`` (keys of a slot in the middle of a migration), ``CLUSTERDOWN`` (a
  failover in progress) and a node that cannot be connected to: the command did not
  run; after a pause the map is refreshed and the command is tried again, until the
  request's `deadline_s` passes (then its last reply stands).

A connection lost with a command in flight is not retried for that command (the server
may have run it: a resent XADD is a duplicate event); the caller sees IncompleteExchange
as on one node. This is the piece the bus's Cluster support is built on (issue 12); the
bus does not use it yet.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from eventbus.backoff import Backoff
from eventbus.wire.errors import (
    ClusterDown,
    ConnectionLost,
    IncompleteExchange,
    Redirected,
    ReplyError,
    TryAgain,
)
from eventbus.wire.options import ConnectionOptions
from eventbus.wire.packing import pack
from eventbus.wire.pool import NodePool
from eventbus.wire.slots import SLOTS

# pauses between tries of a slot that cannot be served now (a failover: seconds)
RETRY_BACKOFF = Backoff(initial=0.05, maximum=1.0, jitter=0.5)
ASKING = pack(["ASKING"])
# how long a request may keep trying by default
DEFAULT_DEADLINE_S = 30.0


class ClusterRouter:
    """Connections to a cluster's masters, and where each slot is served."""

    def __init__(self, seeds: Sequence[ConnectionOptions]) -> None:
        if not seeds:
            raise ValueError("a cluster router needs at least one seed node")
        self._template = seeds[0]
        self._seeds = list(seeds)
        self._slots: list[str | None] = [None] * SLOTS
        self._pools: dict[str, NodePool] = {}
        # every node the last slot map named (masters and replicas): where to ask next
        self._known: list[str] = []
        self._refreshing: asyncio.Lock | None = None

    # -- the slot map ----------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the slot map (CLUSTER SLOTS) from a known node or a seed."""
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:
            errors: list[str] = []
            for pool in self._candidates():
                try:
                    reply = await pool.call("CLUSTER", "SLOTS")
                except (ConnectionLost, ReplyError) as exc:
                    errors.append(f"{_address(pool.options)}: {exc}")
                    continue
                self._install(reply)
                return
            raise ConnectionLost(
                "no cluster node answered CLUSTER SLOTS (" + "; ".join(errors) + ")"
            )

    def _candidates(self) -> list[NodePool]:
        """Whom to ask for the slot map: the nodes the last map named (any of them
        survives a failover of the others), then the seeds."""
        known = [self.pool_for(node) for node in self._known]
        return known + [self._pool(s) for s in self._seeds if _address(s) not in self._known]

    def _install(self, reply: Any) -> None:
        slots: list[str | None] = [None] * SLOTS
        known: dict[str, None] = {}
        for row in reply:
            start, end = int(row[0]), int(row[1])
            nodes = [self._node_address(entry) for entry in row[2:]]
            slots[start : end + 1] = [nodes[0]] * (end - start + 1)
            known.update(dict.fromkeys(nodes))
        self._slots = slots
        self._known = list(known)

    def _node_address(self, entry: Any) -> str:
        """``host:port`` of a CLUSTER SLOTS node entry ([host, port, id, ...]); an empty
        host (a node that does not know its own address) is the seed's."""
        host = entry[0].decode() if isinstance(entry[0], bytes) else str(entry[0])
        return f"{host or self._template.host}:{int(entry[1])}"

    def node_of(self, slot: int) -> str | None:
        """The address (``host:port``) of the master serving `slot`, as last read."""
        return self._slots[slot]

    @property
    def nodes(self) -> list[str]:
        """The masters' addresses, as last read."""
        return sorted({node for node in self._slots if node is not None})

    def _pool(self, options: ConnectionOptions) -> NodePool:
        address = _address(options)
        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools[address] = NodePool(options)
        return pool

    def pool_for(self, node: str) -> NodePool:
        """The pool of connections to `node` (``host:port``), made on first use with the
        seeds' options (user, password, TLS, timeouts)."""
        host, _, port = node.rpartition(":")
        options = ConnectionOptions(
            host=host,
            port=int(port),
            username=self._template.username,
            password=self._template.password,
            tls=self._template.tls,
            socket_timeout=self._template.socket_timeout,
            connect_timeout=self._template.connect_timeout,
            client_name=self._template.client_name,
            connect_retries=self._template.connect_retries,
            credentials=self._template.credentials,
        )
        return self._pool(options)

    # -- requests --------------------------------------------------------------------

    async def request(
        self, slot: int, commands: Sequence[bytes], *, deadline_s: float = DEFAULT_DEADLINE_S
    ) -> list[Any]:
        """Send `commands` (packed, all of `slot`) to the slot's master; their replies in
        order, error replies as values. Redirects and retryable refusals are followed
        (module docstring) until `deadline_s` passes; then the last reply stands."""
        loop = asyncio.get_running_loop()
        until = loop.time() + deadline_s
        replies: list[Any] = [None] * len(commands)
        todo = list(range(len(commands)))
        asking: dict[int, str] = {}
        tries = 0
        while todo:
            if self._slots[slot] is None:
                await self.refresh()
            node = self._slots[slot]
            assert node is not None  # refresh raised, or the slot is served
            todo, asking = await self._send(node, commands, todo, asking, replies)
            if not todo:
                break
            tries += 1
            if loop.time() >= until:
                break
            if not asking:  # moved, or not servable now: where is the slot now?
                await asyncio.sleep(min(RETRY_BACKOFF.delay(tries), until - loop.time()))
                await self._refresh_quietly()
        return replies

    async def _send(
        self,
        node: str,
        commands: Sequence[bytes],
        todo: list[int],
        asking: dict[int, str],
        replies: list[Any],
    ) -> tuple[list[int], dict[int, str]]:
        """One round: the commands of `todo` to `node`, except those of `asking`, which
        go with ASKING to their node; returns what to try again and where to ask."""
        rounds: list[tuple[str, list[int], bool]] = []
        plain = [i for i in todo if i not in asking]
        if plain:
            rounds.append((node, plain, False))
        rounds.extend(
            (target, [i for i in todo if asking.get(i) == target], True)
            for target in sorted(set(asking.values()))
        )
        again: list[int] = []
        next_asking: dict[int, str] = {}
        for target, indexes, ask in rounds:
            got = await self._exchange(target, [commands[i] for i in indexes], ask=ask)
            for index, reply in zip(indexes, got, strict=True):
                replies[index] = reply
                if isinstance(reply, Redirected) and reply.code == "ASK":
                    next_asking[index] = reply.node
                    again.append(index)
                elif _retryable(reply):
                    again.append(index)
        return sorted(again), next_asking

    async def _exchange(self, node: str, packed: list[bytes], *, ask: bool) -> list[Any]:
        """Packed commands to `node`; with `ask`, each preceded by ASKING (whose OK
        replies are dropped). A node that cannot be reached answers each command with
        its error (nothing was sent), so the round retries them."""
        pool = self.pool_for(node)
        if ask:
            packed = [ASKING + command for command in packed]
        try:
            got = await pool.request(b"".join(packed), len(packed) * (2 if ask else 1))
        except IncompleteExchange:
            raise  # sent, and maybe run: never resent
        except ConnectionLost as exc:  # could not connect: nothing was sent
            return [exc] * len(packed)
        return got[1::2] if ask else got

    async def _refresh_quietly(self) -> None:
        with contextlib.suppress(ConnectionLost):  # no node answers now: the next round
            await self.refresh()

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


def _retryable(reply: Any) -> bool:
    """A reply that means the command did not run and may succeed later (or elsewhere)."""
    if isinstance(reply, Redirected):
        return True  # MOVED (ASK is handled by the caller)
    if isinstance(reply, TryAgain | ClusterDown):
        return True
    return isinstance(reply, ConnectionLost) and not isinstance(reply, IncompleteExchange)


def _address(options: ConnectionOptions) -> str:
    return f"{options.host}:{options.port}"


__all__ = ["ClusterRouter"]
