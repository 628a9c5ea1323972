"""Declaration mistakes fail when the handler is declared, naming it and the fix."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from eventbus import ConfigurationError, Context, Event, Router, default_router, subscribe
from eventbus.router import Router as RouterClass
from tests.apps.events import Job, Other, Ping


class Unbound(Event):
    x: int


async def no_annotation(event, ctx):  # type: ignore[no-untyped-def]
    pass


async def three_params(event: Job, ctx: Context, extra: int) -> None:
    pass


async def takes_nothing() -> None:
    pass


async def takes_int(event: int) -> None:
    pass


async def takes_unbound(event: Unbound) -> None:
    pass


async def ok_handler(event: Job) -> None:
    pass


CASES: list[tuple[Any, dict[str, Any], tuple[Any, ...], str]] = [
    (no_annotation, {}, (), "has no type annotation"),
    (three_params, {}, (), r"takes 3 positional parameters; a handler takes \(event\)"),
    (takes_nothing, {}, (), "takes 0 positional parameters"),
    (takes_int, {}, (), "is not an Event subclass"),
    (takes_unbound, {}, (), "has no stream"),
    (ok_handler, {"max_retry": 3}, (), "unknown option 'max_retry'; did you mean 'max_attempts'"),
    (ok_handler, {"concurency": 3}, (), "did you mean 'concurrency'"),
    (ok_handler, {"concurrency": 0}, (), "concurrency must be an int >= 1"),
    (ok_handler, {"max_attempts": 0}, (), "max_attempts must be an int >= 1"),
    (ok_handler, {"lease": 0.5}, (), "lease must be at least 1 second"),
    (ok_handler, {"lease": "30s"}, (), "lease must be seconds"),
    (ok_handler, {"timeout": -1}, (), "timeout must not be negative"),
    (ok_handler, {"start_from": "oldest"}, (), "start_from must be 'new', 'beginning'"),
    (ok_handler, {"start_from": datetime(2024, 1, 1)}, (), "timezone-aware"),
    (ok_handler, {"group": "a:b"}, (), "invalid group name"),
    (ok_handler, {"name": "has space"}, (), "invalid handler name"),
    (ok_handler, {}, (dict,), "is not an Event subclass"),
]


@pytest.mark.parametrize(("fn", "options", "types", "problem"), CASES)
def test_mistakes_raise_configuration_error(
    fn: Any, options: dict[str, Any], types: tuple[Any, ...], problem: str
) -> None:
    router = Router()
    with pytest.raises(ConfigurationError, match=problem) as info:
        router.subscribe(*types, **options)(fn)
    assert isinstance(info.value, ValueError)
    assert router.handlers == []


def test_error_names_the_handler() -> None:
    with pytest.raises(ConfigurationError, match=r"handler 'tests\.test_router\.no_annotation'"):
        Router().subscribe(no_annotation)


def test_two_handlers_with_one_group() -> None:
    router = Router()

    @router.subscribe(group="shared")
    async def first(event: Job) -> None: ...

    with pytest.raises(ConfigurationError, match="group 'shared' is already used by handler"):

        @router.subscribe(group="shared")
        async def second(event: Job) -> None: ...


def test_include_detects_group_clash() -> None:
    a, b = Router(), Router()
    a.subscribe(name="same")(ok_handler)
    b.subscribe(name="same")(ok_handler_2)
    with pytest.raises(ConfigurationError, match="already used"):
        a.include(b)


async def ok_handler_2(event: Job) -> None:
    pass


def test_types_from_union_annotation_and_defaults() -> None:
    router = Router()

    @router.subscribe
    async def both(event: Job | Other | Ping, ctx: Context) -> None: ...

    [spec] = router.handlers
    assert spec.name == "tests.test_router.test_types_from_union_annotation_and_defaults.both"
    assert dict(spec.types["jobs"]) == {"Job": Job, "Other": Other}
    assert dict(spec.types["pings"]) == {"Ping": Ping}
    assert spec.wants_context and spec.is_async
    assert (spec.concurrency, spec.max_attempts, spec.lease_s) == (16, 5, 30.0)
    assert spec.group("svc") == f"svc.{spec.name}"


def test_explicit_types_and_sync_handler() -> None:
    router = Router()

    @router.subscribe(Job, name="sync-one", group="custom")
    def handle(event: object) -> None: ...

    [spec] = router.handlers
    assert not spec.is_async and not spec.wants_context
    assert spec.group("svc") == "custom"
    assert list(spec.types) == ["jobs"]


def test_module_level_subscribe_uses_default_router() -> None:
    before = len(default_router.handlers)

    @subscribe(name="default-router-probe")
    async def probe(event: Job) -> None: ...

    try:
        assert len(default_router.handlers) == before + 1
        assert isinstance(default_router, RouterClass)
    finally:
        default_router._handlers.pop("default-router-probe")
