"""``eventbus``: run workers, try the demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from redis.exceptions import RedisError

from eventbus import __version__
from eventbus.cli.args import command, option, port, positive, seconds, switch
from eventbus.cli.failures import failure, redis_failure
from eventbus.cli.output import safe
from eventbus.errors import EventBusError, describe_error
from eventbus.keys import DEFAULT_PREFIX

log = logging.getLogger("eventbus.cli")

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def _common() -> argparse.ArgumentParser:
    """The options of every command that talks to Redis."""
    common = argparse.ArgumentParser(add_help=False)
    conn = common.add_argument_group("connection")
    conn.add_argument(
        "--redis-url",
        default=os.environ.get("EVENTBUS_REDIS_URL"),
        metavar="URL",
        help="Redis URL (redis://, rediss://, unix://); default $EVENTBUS_REDIS_URL, "
        "else the embedded server of --data-dir",
    )
    conn.add_argument(
        "--data-dir",
        default=os.environ.get("EVENTBUS_DATA_DIR", ".eventbus"),
        metavar="DIR",
        help="data directory of the embedded Redis (default ./.eventbus, $EVENTBUS_DATA_DIR)",
    )
    conn.add_argument(
        "--prefix",
        default=os.environ.get("EVENTBUS_PREFIX", DEFAULT_PREFIX),
        help=f"key prefix (default {DEFAULT_PREFIX!r}, $EVENTBUS_PREFIX)",
    )
    at_start = "give up if Redis does not answer within this long at start (default 10)"
    option(conn, "--connect-timeout", seconds, 10.0, metavar="SECONDS", help=at_start)
    common.add_argument(
        "--log-level",
        default=os.environ.get("EVENTBUS_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default INFO)",
    )
    return common


def _observability() -> argparse.ArgumentParser:
    observability = argparse.ArgumentParser(add_help=False)
    observe = observability.add_argument_group("observability")
    given = os.environ.get("EVENTBUS_METRICS_PORT")
    serve = "serve Prometheus metrics on http://0.0.0.0:PORT/metrics ($EVENTBUS_METRICS_PORT)"
    option(
        observe, "--metrics-port", port, port(given) if given else None, metavar="PORT", help=serve
    )
    observe.add_argument(
        "--otel",
        action="store_true",
        default=bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")),
        help="export traces over OTLP/HTTP, configured by the OTEL_* variables "
        "(on when OTEL_EXPORTER_OTLP_ENDPOINT is set; needs eventbus[otel])",
    )
    return observability


def _app_options() -> argparse.ArgumentParser:
    app_options = argparse.ArgumentParser(add_help=False)
    app_options.add_argument(
        "app", metavar="APP", help="'package.module:router' or 'package.module'"
    )
    app_options.add_argument(
        "--service", help="service name, the group prefix (default: APP's package)"
    )
    app_options.add_argument("--consumer", help="consumer name (default: host-pid-random)")
    grace = "shutdown grace period for in-flight handlers (default 30)"
    option(app_options, "--grace", seconds, 30.0, metavar="SECONDS", help=grace)
    return app_options


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="eventbus",
        description="Typed events on Redis Streams: every handler reads through its own "
        "consumer group; delivery is at-least-once with retries and dead letters in Redis.",
        epilog="Run 'eventbus COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"eventbus {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _worker_commands(sub, [common, _observability(), _app_options()])
    schedules = command(
        sub,
        "schedules",
        None,
        [common],
        help="list schedules: spec, zone, next and last tick, fires, duplicates",
        description="List the schedules that have run under --prefix, from their state in "
        "Redis; with APP, also those it declares, with their next tick.",
    )
    schedules.add_argument("app", metavar="APP", nargs="?", help="an app, to add its schedules")
    switch(schedules, "--json", "print JSON (stable keys)")
    _demo_command(sub, [common, _observability()])
    for add_parsers in _more_commands():
        add_parsers(sub, common)
    return parser


def _worker_commands(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    run = command(
        sub,
        "run",
        None,
        parents,
        help="run a worker (and the scheduler) for an app",
        description="Run APP: every handler consumes through its own consumer group, and "
        "its schedules emit their events, until SIGTERM/SIGINT; then in-flight handlers get "
        "--grace seconds to finish and the rest are released for other workers (a second "
        "signal stops at once). Run as many replicas as you like: each tick is emitted once.",
    )
    switch(run, "--no-scheduler", "do not run the schedules")
    switch(run, "--no-worker", "do not run the handlers")
    command(
        sub,
        "scheduler",
        None,
        parents,
        help="run only an app's schedules",
        description="Run APP's schedules only (same as 'run --no-worker'). Any number of "
        "replicas emit each tick's events once, with no leader election.",
    )


def _demo_command(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    demo = command(
        sub,
        "demo",
        None,
        parents,
        help="run the sample notes app end to end and print a summary",
        description="Publish notes events to the sample app in handlers/ (a note store, a "
        "search index, an audit log and a notifier that fails on poison notes), wait until "
        "every group has settled every event, and summarise what Redis holds.",
    )
    option(
        demo,
        "--events",
        positive,
        3000,
        metavar="N",
        help="how many events to publish (default 3000)",
    )
    until = "give up waiting for the groups after this long (default 120)"
    option(demo, "--timeout", seconds, 120.0, metavar="SECONDS", help=until)
    demo.set_defaults(prefix_default="demo")


def _more_commands() -> list[Callable[[Any, argparse.ArgumentParser], None]]:
    """Modules adding subcommands: ``add_parsers(subparsers, common)``; each subparser
    sets ``handler=`` (an async function of the parsed arguments, returning the exit code)."""
    from eventbus.cli import admin, appdoc, inspect, top

    return [inspect.add_parsers, admin.add_parsers, top.add_parsers, appdoc.add_parsers]


def _command(name: str, args: argparse.Namespace) -> Command:
    handler: Command | None = getattr(args, "handler", None)
    if handler is not None:
        return handler
    if name in ("run", "scheduler"):
        from eventbus.cli import run

        return run.run if name == "run" else run.scheduler
    if name == "schedules":
        from eventbus.cli.schedules import schedules

        return schedules
    from eventbus.cli.demo import run_demo

    return run_demo


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed, else None (asyncio's own)."""
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _run_async(command: Command, args: argparse.Namespace) -> int:
    # the loop runs outside the except block of the uvloop import: inside it, every
    # exception raised by the command (and every dead letter's traceback) would carry
    # "ModuleNotFoundError: No module named 'uvloop'" as its context
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(command(args))


def _given(argv: Sequence[str], option: str) -> bool:
    """Whether the command line sets `option`: ``--opt V``, ``--opt=V``, or an
    abbreviation argparse accepts (``--log-lev=DEBUG``)."""
    for arg in argv:
        if arg == "--":
            return False
        name = arg.split("=", 1)[0]
        if len(name) > 4 and name.startswith("--") and option.startswith(name):
            return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    given = list(argv if argv is not None else sys.argv[1:])
    if args.command == "demo" and not _given(given, "--prefix"):
        args.prefix = "demo"
    quiet = args.command not in ("run", "scheduler", "demo")
    log_level_given = _given(given, "--log-level")
    if quiet and not os.environ.get("EVENTBUS_LOG_LEVEL") and not log_level_given:
        args.log_level = "WARNING"  # inspection output is the answer: no INFO chatter
    logging.basicConfig(
        level=getattr(args, "log_level", "WARNING"),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "demo" and not log_level_given:
        # the summary tells the story; handler failures are part of the show
        logging.getLogger("eventbus").setLevel(logging.CRITICAL)
    try:
        return _run_async(_command(args.command, args), args)
    except EventBusError as exc:
        print(f"eventbus: error: {safe(failure(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`eventbus tail ... | head`): not an error
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (RedisError, ConnectionError, TimeoutError) as exc:  # the last resort: no traceback
        print(f"eventbus: error: {safe(redis_failure(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that cannot be written, and the like
        print(f"eventbus: error: {describe_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
