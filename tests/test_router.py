"""Declaration mistakes fail when the handler is declared, naming it and the fix; the
group names handlers get."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from eventbus import (
    ConfigurationError,
    Context,
    Event,
    EventBus,
    Router,
    Worker,
    default_router,
    subscribe,
)
from eventbus.handlers import HandlerFunc, HandlerSettings, HandlerSpec
from eventbus.router import Router as RouterClass
from eventbus.testing import running_worker
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


# -- group names ----------------------------------------------------------------------


def handler_in(module: str, qualname: str = "fraud_check") -> HandlerFunc:
    """A handler function that looks as if it were defined in `module`."""

    async def fn(event: Job) -> None: ...

    fn.__module__, fn.__qualname__, fn.__name__ = module, qualname, qualname.rpartition(".")[2]
    return fn


def spec_of(fn: HandlerFunc, **options: Any) -> HandlerSpec:
    router = Router()
    router.subscribe(**options)(fn)
    [spec] = router.handlers
    return spec


@pytest.mark.parametrize(
    ("module", "qualname", "group"),
    [
        # the service's own package: the service is not repeated
        ("orders.handlers", "fraud_check", "orders.handlers.fraud_check"),
        ("orders", "fraud_check", "orders.fraud_check"),
        ("orders.api.consumers", "Mailer.send", "orders.api.consumers.Mailer.send"),
        # any other module: the service, then the module path, as in 0.1
        ("billing.handlers", "fraud_check", "orders.billing.handlers.fraud_check"),
        ("orders_v2.handlers", "fraud_check", "orders.orders_v2.handlers.fraud_check"),
        ("__main__", "fraud_check", "orders.__main__.fraud_check"),
    ],
)
def test_default_group_names(module: str, qualname: str, group: str) -> None:
    spec = spec_of(handler_in(module, qualname))
    assert spec.name == f"{module}.{qualname}"  # the handler's name itself is unchanged
    assert spec.group("orders") == group


def test_explicit_name_and_group_keep_their_0_1_group_names() -> None:
    fn = handler_in("orders.handlers")
    assert spec_of(fn, name="fraud").group("orders") == "orders.fraud"
    assert spec_of(fn, name="orders.fraud").group("orders") == "orders.orders.fraud"
    assert spec_of(fn, group="orders.orders.handlers.fraud_check").group("orders") == (
        "orders.orders.handlers.fraud_check"
    )
    for spec in (spec_of(fn, name="fraud"), spec_of(fn, group="kept")):
        assert spec.legacy_group("orders") is None


def test_legacy_group_is_the_0_1_default_when_it_differs() -> None:
    assert spec_of(handler_in("orders.handlers")).legacy_group("orders") == (
        "orders.orders.handlers.fraud_check"
    )
    assert spec_of(handler_in("billing")).legacy_group("orders") is None  # unchanged name


def test_same_function_name_in_two_modules_gets_two_groups() -> None:
    router = Router()
    router.subscribe(handler_in("orders.handlers"))
    router.subscribe(handler_in("orders.admin.handlers"))
    router.subscribe(handler_in("orders"))
    groups = [spec.group("orders") for spec in router.handlers]
    assert groups == [
        "orders.handlers.fraud_check",
        "orders.admin.handlers.fraud_check",
        "orders.fraud_check",
    ]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # a top-level package `billing` and the service's own `orders.billing`
        ({"fn": handler_in("billing")}, {"fn": handler_in("orders.billing")}),
        # name="fraud_check" and a handler of that name in the service's own module
        ({"fn": handler_in("tools"), "name": "fraud_check"}, {"fn": handler_in("orders")}),
    ],
)
def test_a_group_name_two_handlers_would_share_fails_at_start(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    router = Router()
    for options in (first, second):
        fn = options.pop("fn")
        router.subscribe(**options)(fn)
    bus = EventBus.from_url("redis://127.0.0.1:1", service="orders")  # never connects
    with pytest.raises(ConfigurationError, match=r"group 'orders\.[a-z._]+' on stream 'jobs'"):
        Worker(bus, router)


async def test_worker_warns_of_the_group_0_1_named_this_handler(
    eventbus_redis_url: str,
    eventbus_prefix: str,
    make_bus: Callable[..., EventBus],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = make_bus(eventbus_redis_url, eventbus_prefix, service="orders")
    key = bus.keys.stream("jobs")
    old, new = "orders.orders.handlers.fraud_check", "orders.handlers.fraud_check"
    # eventbus 0.1's group: 1 entry delivered and not acked, 2 not read yet
    await bus.redis.xgroup_create(key, old, id="0", mkstream=True)
    for n in range(3):
        await bus.publish(Job(n=n))
    await bus.redis.xreadgroup(old, "c", {key: ">"}, count=1)
    upgraded = Router()
    upgraded.subscribe(handler_in("orders.handlers"))
    kept = Router()
    kept.subscribe(group=old)(handler_in("orders.handlers"))

    with caplog.at_level(logging.WARNING, logger="eventbus.worker"):
        async with running_worker(bus, kept):
            pass
        assert not caplog.records  # group= names the old group: nothing to say
        async with running_worker(bus, upgraded):
            pass
        async with running_worker(bus, upgraded):
            pass
    first, again = (r.getMessage() for r in caplog.records)
    assert first == (
        f"handler orders.handlers.fraud_check: group {old} on {key} is from eventbus 0.1's "
        "default naming (1 pending, 2 unread) and is no longer read: the handler's "
        f"group is now {new} (created now). Pass group='{old}' to "
        f"subscribe() to keep the old group, or delete it with `eventbus group delete jobs "
        f"{old}` (until then it holds back trimming)"
    )
    assert "(it exists too)" in again
    names = {g["name"].decode() for g in await bus.redis.xinfo_groups(key)}
    assert names == {old, new}


async def test_no_warning_without_a_group_of_the_old_name(
    eventbus_redis_url: str,
    eventbus_prefix: str,
    make_bus: Callable[..., EventBus],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = make_bus(eventbus_redis_url, eventbus_prefix, service="orders")
    router = Router()
    router.subscribe(handler_in("orders.handlers"))
    router.subscribe(handler_in("billing"))  # named as in 0.1: no old name to look for
    with caplog.at_level(logging.WARNING, logger="eventbus.worker"):
        async with running_worker(bus, router):
            pass
    assert not caplog.records


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"concurrency": 0}, "handler settings: concurrency must be an int >= 1, got 0"),
        ({"max_attempts": True}, "handler settings: max_attempts must be an int >= 1"),
        ({"lease": "30s"}, "handler settings: lease must be seconds"),
        ({"timeout": float("inf")}, "handler settings: timeout must be a finite number"),
        ({"backoff": -1}, "handler settings: .*must not be negative"),
        ({"start_from": "oldest"}, "handler settings: start_from must be"),
        ({"idempotent": "yes"}, "handler settings: idempotent must be True or False"),
        ({"idempotent": True, "on_store_error": "x"}, "on_store_error must be"),
        ({"max_event_bytes": 0}, "handler settings: max_event_bytes must be a positive int"),
    ],
)
def test_handler_settings_check_every_field_when_built(
    options: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        HandlerSettings(**options)


def test_router_defaults_apply_where_subscribe_gives_no_option() -> None:
    router = Router(defaults=HandlerSettings(concurrency=2, lease=timedelta(minutes=2)))
    router.subscribe(concurrency=4)(ok_handler)
    [spec] = router.handlers
    assert (spec.concurrency, spec.lease_s, spec.max_attempts) == (4, 120.0, 5)
    assert spec.settings == HandlerSettings(concurrency=4, lease=timedelta(minutes=2))
    assert Router().defaults == HandlerSettings()
    with pytest.raises(ConfigurationError, match="defaults cannot set group"):
        Router(defaults=HandlerSettings(group="g"))
    with pytest.raises(ConfigurationError, match="defaults must be a HandlerSettings"):
        Router(defaults={"concurrency": 2})  # type: ignore[arg-type]
