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
from eventbus.cli.failures import failure, redis_failure
from eventbus.cli.output import positive, safe
from eventbus.errors import EventBusError, describe_error
from eventbus.keys import DEFAULT_PREFIX

log = logging.getLogger("eventbus.cli")

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
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
    conn.add_argument(
        "--connect-timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="give up if Redis does not answer within this long at start (default 10)",
    )
    common.add_argument(
        "--log-level",
        default=os.environ.get("EVENTBUS_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default INFO)",
    )
    observability = argparse.ArgumentParser(add_help=False)
    observe = observability.add_argument_group("observability")
    observe.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        default=_port(os.environ["EVENTBUS_METRICS_PORT"])
        if os.environ.get("EVENTBUS_METRICS_PORT")
        else None,
        help="serve Prometheus metrics on http://0.0.0.0:PORT/metrics ($EVENTBUS_METRICS_PORT)",
    )
    observe.add_argument(
        "--otel",
        action="store_true",
        default=bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")),
        help="export traces over OTLP/HTTP, configured by the OTEL_* variables "
        "(on when OTEL_EXPORTER_OTLP_ENDPOINT is set; needs eventbus[otel])",
    )

    parser = argparse.ArgumentParser(
        prog="eventbus",
        description="Typed events on Redis Streams: every handler reads through its own "
        "consumer group; delivery is at-least-once with retries and dead letters in Redis.",
        epilog="Run 'eventbus COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"eventbus {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    app_options = argparse.ArgumentParser(add_help=False)
    app_options.add_argument(
        "app", metavar="APP", help="'package.module:router' or 'package.module'"
    )
    app_options.add_argument(
        "--service", help="service name, the group prefix (default: APP's package)"
    )
    app_options.add_argument("--consumer", help="consumer name (default: host-pid-random)")
    app_options.add_argument(
        "--grace",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="shutdown grace period for in-flight handlers (default 30)",
    )

    run = sub.add_parser(
        "run",
        parents=[common, observability, app_options],
        help="run a worker (and the scheduler) for an app",
        description="Run APP: every handler consumes through its own consumer group, and "
        "its schedules emit their events, until SIGTERM/SIGINT; then in-flight handlers get "
        "--grace seconds to finish and the rest are released for other workers (a second "
        "signal stops at once). Run as many replicas as you like: each tick is emitted once.",
    )
    run.add_argument("--no-scheduler", action="store_true", help="do not run the schedules")
    run.add_argument("--no-worker", action="store_true", help="do not run the handlers")

    sub.add_parser(
        "scheduler",
        parents=[common, observability, app_options],
        help="run only an app's schedules",
        description="Run APP's schedules only (same as 'run --no-worker'). Any number of "
        "replicas emit each tick's events once, with no leader election.",
    )

    schedules = sub.add_parser(
        "schedules",
        parents=[common],
        help="list schedules: spec, zone, next and last tick, fires, duplicates",
        description="List the schedules that have run under --prefix, from their state in "
        "Redis; with APP, also those it declares, with their next tick.",
    )
    schedules.add_argument("app", metavar="APP", nargs="?", help="an app, to add its schedules")
    schedules.add_argument("--json", action="store_true", help="print JSON (stable keys)")

    demo = sub.add_parser(
        "demo",
        parents=[common, observability],
        help="run the sample notes app end to end and print a summary",
        description="Publish notes events to the sample app in handlers/ (a note store, a "
        "search index, an audit log and a notifier that fails on poison notes), wait until "
        "every group has settled every event, and summarise what Redis holds.",
    )
    demo.add_argument(
        "--events",
        type=positive,
        default=3000,
        metavar="N",
        help="how many events to publish (default 3000)",
    )
    demo.add_argument(
        "--timeout",
        type=_positive_float,
        default=120.0,
        metavar="SECONDS",
        help="give up waiting for the groups after this long (default 120)",
    )
    demo.set_defaults(prefix_default="demo")
    for add_parsers in _more_commands():
        add_parsers(sub, common)
    return parser


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
