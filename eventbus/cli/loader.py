"""Load an app (``module:attribute`` or ``module``) for the CLI."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from types import ModuleType

from eventbus.errors import ConfigurationError
from eventbus.router import Router, default_router


def load_app(spec: str) -> Router:
    """The Router named by `spec`: ``pkg.module:router``, or ``pkg.module`` (its ``router``
    attribute, its only Router, or the default router its handlers used)."""
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise ConfigurationError(f"app {spec!r}: expected 'module:router' or 'module'")
    module = _import(spec, module_name)
    if attr:
        return _named_router(spec, module, attr)
    return _find_router(spec, module)


def _import(spec: str, module_name: str) -> ModuleType:
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigurationError(
                f"app {spec!r}: no module named {exc.name!r} (run from the directory that "
                "contains it, or install its package)"
            ) from None
        raise _import_failed(spec, exc) from exc
    except ConfigurationError as exc:  # a handler or schedule declared wrong
        raise ConfigurationError(f"app {spec!r}: {exc}") from exc
    except Exception as exc:  # the app's own code failed: one line, not a traceback
        raise _import_failed(spec, exc) from exc


def _import_failed(spec: str, exc: Exception) -> ConfigurationError:
    """`exc` raised while importing the app, as one line naming it and where it happened."""
    where = _where(exc)
    message = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    return ConfigurationError(
        f"app {spec!r}: importing it raised {type(exc).__name__}: {message}"
        + (f" ({where})" if where else "")
    )


def _where(exc: Exception) -> str | None:
    """``path:line`` of a SyntaxError, else of the innermost frame outside the import
    machinery; paths relative to the working directory when under it."""
    if isinstance(exc, SyntaxError) and exc.filename:
        filename, line = exc.filename, exc.lineno
    else:
        frames = [
            f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")
        ]
        if not frames:
            return None
        filename, line = frames[-1].filename, frames[-1].lineno
    path = os.path.relpath(filename) if filename.startswith(os.getcwd() + os.sep) else filename
    return f"{path}:{line}" if line else path


def _named_router(spec: str, module: ModuleType, attr: str) -> Router:
    obj = getattr(module, attr, None)
    if obj is None:
        raise ConfigurationError(f"app {spec!r}: module {module.__name__!r} has no {attr!r}")
    if not isinstance(obj, Router):
        raise ConfigurationError(
            f"app {spec!r}: {attr!r} is a {type(obj).__name__}, not an eventbus Router"
        )
    return obj


def _find_router(spec: str, module: ModuleType) -> Router:
    module_name = module.__name__
    candidate = getattr(module, "router", None)
    if isinstance(candidate, Router):
        return candidate
    routers = [v for v in vars(module).values() if isinstance(v, Router)]
    if len(routers) == 1:
        return routers[0]
    if len(routers) > 1:
        raise ConfigurationError(
            f"app {spec!r}: module has several Routers; name one as '{module_name}:<name>'"
        )
    if default_router.handlers:
        return default_router
    raise ConfigurationError(
        f"app {spec!r}: module {module_name!r} declares no handlers (no Router, and nothing "
        "used @eventbus.subscribe)"
    )


def service_name(spec: str) -> str:
    """Default service name for an app: its top-level package name."""
    return spec.partition(":")[0].split(".")[0] or "eventbus"
