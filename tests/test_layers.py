"""The package's layering, checked by walking its source: no import cycle anywhere (imports
inside functions and under ``TYPE_CHECKING`` count too), and every import points to the
module's own layer or one below it. docs/architecture.md explains each layer.

A new module must be placed in LAYERS; a new import that points up is a design change:
move the shared piece down instead (as histogram.py, streamid.py, connection.py were).
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "eventbus"

# lowest first; a module belongs to the layer of its longest matching name (a package
# name covers its modules)
LAYERS: list[tuple[str, list[str]]] = [
    (
        "foundation",
        [
            "eventbus.errors",
            "eventbus.durations",
            "eventbus.streamid",
            "eventbus.timefmt",
            "eventbus.text",
            "eventbus.histogram",
            "eventbus.keys",
            "eventbus.backoff",
            "eventbus.permissions",
            "eventbus.redis_errors",
            "eventbus.embedded",
            "eventbus.waiting",
            "eventbus.clock",
        ],
    ),
    ("wire", ["eventbus.wire", "eventbus.scripts"]),
    (
        "model",
        [
            "eventbus.streams",
            "eventbus.events",
            "eventbus.envelope",
            "eventbus.tracing",
            "eventbus.schedules",
            "eventbus.schedules.cron",
            "eventbus.schedules.spec",
        ],
    ),
    (
        "stores",
        ["eventbus.connection", "eventbus.idempotency", "eventbus.retention", "eventbus.status"],
    ),
    ("publishing", ["eventbus.publishing"]),
    ("bus", ["eventbus.bus", "eventbus.sync", "eventbus.service"]),
    (
        "application",
        ["eventbus.context", "eventbus.handlers", "eventbus.router", "eventbus.asyncapi"],
    ),
    (
        "runtime",
        [
            "eventbus.worker",
            "eventbus.schedules.scheduler",
            "eventbus.inspection",
            "eventbus.appcheck",
        ],
    ),
    ("observability", ["eventbus.metrics"]),
    ("api", ["eventbus", "eventbus.testing"]),
    ("cli", ["eventbus.cli"]),
]


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The package's modules that `name` imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            # `from eventbus import tracing` imports the module eventbus.tracing; `from
            # eventbus import Event` imports the package's __init__
            subs = {f"{target}.{alias.name}" for alias in node.names}
            found = subs & MODULES.keys()
            out.update(found if len(found) == len(subs) else {target, *found})
    return {target for target in out if target in MODULES and target != name}


def _with_parents(name: str, targets: set[str]) -> set[str]:
    """`targets` and the packages above each: importing ``eventbus.a.b`` runs
    ``eventbus/a/__init__.py`` first, so a package's ``__init__`` may import only what
    every module below it may. Left out: the packages `name` is itself in (they run
    before it), and the root package (``eventbus/__init__.py`` is the public face, run
    before anything else is imported, as in any library)."""
    parts = name.split(".")
    own = {".".join(parts[:n]) for n in range(1, len(parts) + 1)}
    splits = [target.split(".") for target in targets]
    parents = {".".join(steps[:n]) for steps in splits for n in range(2, len(steps))}
    return (targets | (parents - own)) - {name}


GRAPH = {name: _with_parents(name, _imports(name, path)) for name, path in MODULES.items()}


def _layer(name: str) -> int:
    best: tuple[int, int] | None = None  # (length of the matching name, layer)
    for index, (_, names) in enumerate(LAYERS):
        for prefix in names:
            if (name == prefix or name.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[0]
            ):
                best = (len(prefix), index)
    if best is None:
        pytest.fail(f"{name} is in no layer: add it to LAYERS in {Path(__file__).name}")
    return best[1]


def test_every_module_has_a_layer() -> None:
    assert MODULES, "no modules found"
    for name in MODULES:
        _layer(name)


def test_imports_point_to_the_same_layer_or_below() -> None:
    upward = [
        f"{name} ({LAYERS[_layer(name)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
        for name, targets in sorted(GRAPH.items())
        for target in sorted(targets)
        if _layer(target) > _layer(name)
    ]
    assert not upward, "imports pointing up a layer:\n" + "\n".join(upward)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (its modules, the first repeated last), or None."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        return list(exc.args[1])
    return None


def test_no_import_cycle() -> None:
    cycle = _cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles() -> None:
    cycle = _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert cycle is not None
    assert sorted(set(cycle)) == ["a", "b", "c"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_importing_a_module_counts_the_packages_above_it() -> None:
    # eventbus/a/__init__.py runs first; the importer's own packages and the root do not count
    assert _with_parents("eventbus.x", {"eventbus.a.b.c"}) == {
        "eventbus.a.b.c",
        "eventbus.a.b",
        "eventbus.a",
    }
    assert _with_parents("eventbus.a.y", {"eventbus.a.b"}) == {"eventbus.a.b"}
    assert _with_parents("eventbus.a.y", {"eventbus"}) == {"eventbus"}
